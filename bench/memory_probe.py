"""Where memory goes during one item: the whole pipeline in this process, sampled as it runs.

    .venv/bin/python bench/memory_probe.py clips/clip_300s.mp4          # a key of the bench bucket
    .venv/bin/python bench/memory_probe.py clips/clip_60s.mp4 --trace   # + tracemalloc top growth

Every `--every` seconds it records the progress (frames or tiles done), VmRSS, the glibc heap
in use (`mallinfo2`: uordblks + hblkhd, what native code and Python hold) and the heap's free
bytes (allocator slack), and, with `--trace`, the bytes Python objects hold. The slope of each
against progress (the last sample, taken after the run, left out) tells what grows with the
length of a video or the size of a slide, and whether it is Python objects, native allocations
or allocator slack. Prints one JSON line per
sample and, at the end, the slope per 1,000 units of progress and (with `--trace`) the source
lines whose allocations grew most between the first sample after a warm-up and the end.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import threading
import time
import tracemalloc
from pathlib import Path

from bench_long import WORK, write_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.mallinfo2.restype = _Mallinfo2


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Sampler:
    def __init__(self, every: float, trace: bool) -> None:
        self.every, self.trace = every, trace
        self.done = 0
        self.rows: list[dict[str, float]] = []
        self.snapshot: tracemalloc.Snapshot | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def progress(self, stage: str, done: int, total: int | None) -> None:
        self.done = done

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def sample(self) -> None:
        info = _LIBC.mallinfo2()
        row = {
            "t": round(time.perf_counter(), 1),
            "done": self.done,
            "rss_mb": round(_status_kb("VmRSS") / 1024, 1),
            "hwm_mb": round(_status_kb("VmHWM") / 1024, 1),
            "heap_used_mb": round((info.uordblks + info.hblkhd) / 2**20, 1),
            "heap_free_mb": round(info.fordblks / 2**20, 1),
            "arena_mb": round(info.arena / 2**20, 1),
        }
        if self.trace:
            row["py_mb"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 2)
            if self.snapshot is None and len(self.rows) >= 3:
                self.snapshot = tracemalloc.take_snapshot()
        self.rows.append(row)
        print(json.dumps(row), flush=True)


def slope(rows: list[dict[str, float]], field: str) -> float | None:
    """Least-squares growth of `field` per 1,000 units of progress, past the first fifth."""
    points = [(r["done"], r[field]) for r in rows[len(rows) // 5 : -1] if field in r]
    if len(points) < 3 or points[-1][0] == points[0][0]:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    cov = sum((x - mx) * (y - my) for x, y in points)
    return round(cov / var * 1000, 4) if var else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("key", help="a key of bench/.work/long/bucket")
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    from worker.config import load_settings
    from worker.items import Item, default_item_id
    from worker.pipeline import process_item

    WORK.mkdir(parents=True, exist_ok=True)
    settings = load_settings(write_config())
    if args.trace:
        tracemalloc.start(8)
    sampler = Sampler(args.every, args.trace)
    sampler.start()
    item = Item(integration="bench", key=args.key, item_id=default_item_id(args.key))
    result = process_item(item, settings, progress=sampler.progress)
    sampler.stop()
    summary = {
        "key": args.key,
        "status": result.status,
        "done": sampler.done,
        "peak_rss_mb": sampler.rows[-1]["hwm_mb"],
        "per_1000": {
            f: slope(sampler.rows, f) for f in ("rss_mb", "heap_used_mb", "arena_mb", "py_mb")
        },
    }
    print(json.dumps(summary), flush=True)
    if args.trace and sampler.snapshot is not None:
        growth = tracemalloc.take_snapshot().compare_to(sampler.snapshot, "traceback")
        for stat in growth[:12]:
            print(f"{stat.size_diff / 1024:+.1f} KiB in {stat.count_diff:+d} blocks")
            for line in stat.traceback.format()[-8:]:
                print("   ", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
