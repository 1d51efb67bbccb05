"""Where a worker's time per item goes, against Celery's no-op floor (SPEC 10).

    .venv/bin/python bench/profile_queue.py [--items 300] [--size tiny|12mp] [--top 25]

One batch through `mediaworker worker --concurrency 1` and one through the bare Celery app of
`queue_floor.py` (private redis-server, the queue bench's bucket and config), then the same
items in process. Prints the CPU time per item of each process (the sender, the worker's main
process, its pool process; `psutil`; the pool processes run profiled, so theirs are inflated),
then the pool processes' profiles (cProfile, CPU clock,
`profiled_worker.py`) side by side: the functions whose own time per item differs most from the
floor's pool process. CPU time, not wall time, so a shared machine blurs the figures less.
"""

from __future__ import annotations

import argparse
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
from bench_queue import _memory_folder, floor_client, write_bucket
from queue_support import (
    floor_argv,
    in_process,
    mediaworker_argv,
    redis_server,
    started,
    through_floor,
    through_worker,
    write_config,
)

from worker.config import load_settings

BENCH = Path(__file__).resolve().parent


def cpu_split(pid: int | None, run: Callable[[], float], count: int) -> str:
    """Run one batch; its wall time and the CPU time of each process involved, per item."""

    def sample() -> dict[str, float]:
        times = {"sender": time.process_time()}
        if pid is not None:
            main = psutil.Process(pid)
            times["main"] = sum(main.cpu_times()[:2])
            times["pool"] = sum(sum(c.cpu_times()[:2]) for c in main.children(recursive=True))
        return times

    before = sample()
    wall = run()
    after = sample()
    parts = ", ".join(f"{k} {(after[k] - before[k]) / count * 1000:.2f}" for k in before)
    return f"wall {wall / count * 1000:.2f} ms; CPU per item (ms): {parts}"


def own_times(path: Path, count: int) -> dict[str, float]:
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    return {f"{Path(f).name}:{line}({name})": v[2] / count for (f, line, name), v in stats.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--size", choices=("tiny", "12mp"), default="tiny")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mw-profile-", dir=_memory_folder()))
    (root / "logs").mkdir()
    keys = write_bucket(root, args.size, args.items)
    warm, out = keys[:10], root / "profile"
    wrap = [sys.executable, str(BENCH / "profiled_worker.py")]
    with redis_server(root) as url:
        settings = load_settings(write_config(root, url, url, "profile"))
        client = floor_client(url, url)
        env = {"FLOOR_BROKER_URL": url, "FLOOR_RESULT_BACKEND": url}
        config = root / "profile.toml"
        worker = [*wrap, f"{out}-worker", "mediaworker", *mediaworker_argv(config)[3:]]
        with started(worker, root / "logs" / "worker.log") as pid:
            through_worker(settings, warm, "warm")
            run = lambda: through_worker(settings, keys, "worker")  # noqa: E731
            print(f"worker:     {cpu_split(pid, run, len(keys))}")
        floor = [*wrap, f"{out}-floor", "celery", *floor_argv()[3:]]
        with started(floor, root / "logs" / "floor.log", env) as pid:
            through_floor(client, warm, "warm")
            run = lambda: through_floor(client, keys, "floor")  # noqa: E731
            print(f"floor:      {cpu_split(pid, run, len(keys))}")
        in_process(settings, warm, "warm")
        run = lambda: in_process(settings, keys, "in-process")  # noqa: E731
        print(f"in-process: {cpu_split(None, run, len(keys))}")
    count = len(keys) + len(warm)
    worker_own = own_times(next(root.glob("profile-worker.*.prof")), count)
    floor_own = own_times(next(root.glob("profile-floor.*.prof")), count)
    print(
        f"\npool process, own CPU time per item (us; profiled, so inflated): worker"
        f" {sum(worker_own.values()) * 1e6:.0f}, floor {sum(floor_own.values()) * 1e6:.0f}"
    )
    rows = sorted(set(worker_own) | set(floor_own),
                  key=lambda k: floor_own.get(k, 0) - worker_own.get(k, 0))  # fmt: skip
    for name in rows[: args.top]:
        w, f = worker_own.get(name, 0) * 1e6, floor_own.get(name, 0) * 1e6
        print(f"{w - f:8.0f} {w:8.0f} {f:8.0f}  {name}")
    print(f"(columns: worker - floor, worker, floor; profiles in {root})")


if __name__ == "__main__":
    main()
