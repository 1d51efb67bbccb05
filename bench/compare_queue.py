"""Two checkouts of mediaworker against one Celery floor, interleaved in one run: did a change
lower the queue's cost per item? (`bench_queue.py` measures one checkout.)

    .venv/bin/python bench/compare_queue.py BEFORE_DIR AFTER_DIR [--size tiny|12mp]
        [--items 300] [--rounds 6]

Each checkout gets its own `mediaworker worker --queues images --concurrency 1` (started in
that checkout, importing its code) and its own in-process runs (a subprocess in that checkout,
`process_item` per item, storage opened once); the floor is `queue_floor.py`. All share one
private redis-server and a bucket in memory (/dev/shm when writable). Every round runs the
floor, then each checkout's worker batch and in-process batch, so drift hits both checkouts
alike. Printed: per round and as medians, overhead / floor = (worker - in-process) / floor.
A checkout made with `git worktree add DIR COMMIT` has no `worker/report/static` (nothing here
needs it).

Internal: `compare_queue.py --in-process CONFIG SIZE COUNT TAG` is what each round runs in a
checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def in_process_here(config: str, size: str, count: int, tag: str) -> None:
    """Run in a checkout: one batch through `process_item` (`queue_support.in_process`, with
    this checkout's mediaworker); prints wall and CPU seconds per item."""
    sys.path.insert(0, str(BENCH))
    from bench_queue import SIZES
    from queue_support import in_process

    from worker.config import load_settings

    settings = load_settings(Path(config))
    keys = [f"{size}/{n:05d}.{SIZES[size][1]}" for n in range(count)]
    in_process(settings, keys[:10], f"{tag}-warm")
    cpu = time.process_time()
    wall = in_process(settings, keys, tag)
    print(json.dumps([wall / count, (time.process_time() - cpu) / count]))


def compare(checkouts: list[Path], args: argparse.Namespace) -> None:
    sys.path.insert(0, str(BENCH))
    from bench_queue import _memory_folder, floor_client, write_bucket
    from queue_support import (
        floor_argv,
        mediaworker_argv,
        redis_server,
        started,
        through_floor,
        through_worker,
        write_config,
    )

    from worker.config import load_settings

    root = Path(tempfile.mkdtemp(prefix="compare-queue-", dir=_memory_folder()))
    (root / "logs").mkdir()
    keys = write_bucket(root, args.size, args.items)
    per_item: dict[str, list[tuple[float, float]]] = {}
    with redis_server(root) as url, contextlib.ExitStack() as stack:
        client = floor_client(url, url)
        env = {"FLOOR_BROKER_URL": url, "FLOOR_RESULT_BACKEND": url}
        stack.enter_context(started(floor_argv(), root / "logs" / "floor.log", env))
        configs = [write_config(root, url, url, f"c{n}") for n in range(len(checkouts))]
        for n, (checkout, config) in enumerate(zip(checkouts, configs, strict=True)):
            log = root / "logs" / f"c{n}.log"
            stack.enter_context(started(mediaworker_argv(config), log, checkout=checkout))
        through_floor(client, keys[:10], "warm")
        for config in configs:
            through_worker(load_settings(config), keys[:10], f"warm-{config.stem}")
        for number in range(args.rounds):
            seconds = through_floor(client, keys, f"floor-r{number}")
            per_item.setdefault("floor", []).append((seconds / len(keys), 0.0))
            for n, (checkout, config) in enumerate(zip(checkouts, configs, strict=True)):
                seconds = through_worker(load_settings(config), keys, f"c{n}-r{number}")
                per_item.setdefault(f"{n} worker", []).append((seconds / len(keys), 0.0))
                run = subprocess.run(
                    [sys.executable, __file__, "--in-process", str(config), args.size,
                     str(len(keys)), f"c{n}-in-r{number}"],
                    cwd=checkout, env={**os.environ, "PYTHONPATH": str(checkout)},
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                wall, _ = json.loads(run.stdout.splitlines()[-1])
                per_item.setdefault(f"{n} in-process", []).append((wall, 0.0))
    report(checkouts, per_item)


def report(checkouts: list[Path], per_item: dict[str, list[tuple[float, float]]]) -> None:
    floor = [wall for wall, _ in per_item["floor"]]
    print(f"floor: {statistics.median(floor) * 1000:.2f} ms per item (median of "
          + ", ".join(f"{f * 1000:.2f}" for f in floor) + ")")  # fmt: skip
    for n, checkout in enumerate(checkouts):
        worker = [wall for wall, _ in per_item[f"{n} worker"]]
        local = [wall for wall, _ in per_item[f"{n} in-process"]]
        rounds = [(w - i) / f for w, i, f in zip(worker, local, floor, strict=True)]
        medians = (statistics.median(worker) - statistics.median(local)) / statistics.median(floor)
        print(f"{checkout}: worker {statistics.median(worker) * 1000:.2f} ms, in-process"
              f" {statistics.median(local) * 1000:.2f} ms; overhead / floor {medians:.2f}x"
              f" (round by round: median {statistics.median(rounds):.2f}x; "
              + ", ".join(f"{r:.2f}" for r in rounds) + ")")  # fmt: skip


def main() -> None:
    if sys.argv[1:2] == ["--in-process"]:
        in_process_here(*sys.argv[2:4], int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--size", choices=("tiny", "12mp"), default="tiny")
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    compare([c.resolve() for c in args.checkouts], args)


if __name__ == "__main__":
    main()
