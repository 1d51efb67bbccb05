"""Queue cost per item against Celery's own floor, and two workers against one (SPEC 8, 10).

    .venv/bin/python bench/bench_queue.py [--brokers redis,rabbitmq] [--tiny 300] [--large 40]
        [--rounds 3] [--prefetch 4] [--scaling-items 200] [--no-scaling] [--root DIR] [--pin]

Overhead, per broker (a private redis-server; a fresh vhost on the machine's RabbitMQ, results
in the private Redis), for 64x64 PNGs and 12 MP (4000x3000) JPEGs in a local bucket:
- in-process: `process_item` in this process, storage opened once (what `mediaworker process`
  does per item);
- worker: `mediaworker worker --queues images --concurrency 1`, default settings, timed from the
  first send to the last result;
- worker, prefetch N: the same with `worker.images_prefetch = N` (the documented option);
- floor: a bare Celery app (`queue_floor.py`) with the same reliability settings (late ack,
  prefetch 1, reject_on_worker_lost, JSON, Redis result backend) running a task that returns its
  argument (the item), same client loop.
All workers run at once, idle but for their own batch, and the runs are interleaved round by
round, so the machine's load hits every run alike; each figure is the median over the rounds.
overhead = worker - in-process, per item; ratio = overhead / floor (target: at most 1.5). Each
run reports wall time and CPU time per item (this process, the client, plus the worker's
processes; the broker's CPU is left out): on a shared machine the wall time of a chain of
processes waiting on each other is mostly scheduling delay, and CPU time shows the work.

`--pin` gives the pool processes (the floor's too) and the in-process runs CPU 1, and this process
(the sender), the private redis-server and the workers' main processes CPU 0: an item's
processing then never shares its CPU with the sender and the broker, as on a worker machine
whose platform and broker run elsewhere. Unpinned, on two CPUs, the scheduler at times runs the
sender or Redis beside a 12 MP decode on the same CPU, which slows the decode in the worker but
not in process, and shows as overhead.

Scaling: `--scaling-items` 12 MP JPEGs through one worker process and through two (Redis, all
queues), timed from the first send to the last result, in `--rounds` alternating rounds; the
median of the rounds' ratios (SPEC 10: at least 1.8x).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from queue_support import (
    OTHER_CPU,
    POOL_CPU,
    Run,
    floor_argv,
    in_process,
    mediaworker_argv,
    on_cpu,
    pin_pools,
    rabbitmq_vhost,
    redis_server,
    started,
    through_floor,
    through_worker,
    timed_rounds,
    write_config,
)

from fixtures.images import marked
from worker.config import load_settings

SIZES = {"tiny": ((64, 64), "png"), "12mp": ((4000, 3000), "jpg")}


def write_bucket(root: Path, name: str, count: int) -> list[str]:
    (size, ext) = SIZES[name]
    source = root / "bucket" / f"{name}-src.{ext}"
    source.parent.mkdir(parents=True, exist_ok=True)
    marked(size).save(source, **({"quality": 90} if ext == "jpg" else {}))
    keys = [f"{name}/{i:05d}.{ext}" for i in range(count)]
    (root / "bucket" / name).mkdir(exist_ok=True)
    for key in keys:
        shutil.copy(source, root / "bucket" / key)
    return keys


def floor_client(broker: str, backend: str) -> object:
    from celery import Celery

    app = Celery("floor-client", broker=broker, backend=backend)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    return app


def overhead(
    broker_name: str,
    broker: str,
    backend: str,
    root: Path,
    keys: dict[str, list[str]],
    args: argparse.Namespace,
) -> list[str]:
    """Per-item figures for one broker, as markdown table rows."""
    base = write_config(root, broker, backend, f"{broker_name}-p1")
    fetching = write_config(root, broker, backend, f"{broker_name}-pn",
                            images_prefetch=args.prefetch)  # fmt: skip
    settings, prefetch_settings = load_settings(base), load_settings(fetching)
    client = floor_client(broker, backend)
    env = {"FLOOR_BROKER_URL": broker, "FLOOR_RESULT_BACKEND": backend}
    logs = root / "logs"
    with contextlib.ExitStack() as stack:
        floor = stack.enter_context(started(floor_argv(), logs / f"{broker_name}-floor.log", env))
        one = stack.enter_context(started(mediaworker_argv(base), logs / f"{broker_name}-p1.log"))
        many = stack.enter_context(
            started(mediaworker_argv(fetching), logs / f"{broker_name}-pn.log")
        )
        if args.pin:
            pin_pools([floor, one, many])
        warm = keys["tiny"][:10]
        through_floor(client, warm, "warm")
        through_worker(settings, warm, "warm")
        through_worker(prefetch_settings, warm, "warm")
        in_process(settings, warm, "warm")
        tiny = keys["tiny"]
        runs: dict[str, Run] = {
            "floor": (lambda tag: through_floor(client, tiny, tag), len(tiny), [floor])
        }
        local = _pinned(in_process, POOL_CPU if args.pin else None)
        for size, batch in keys.items():
            runs[f"{size} in-process"] = (_batch(local, settings, batch), len(batch), [])
            runs[f"{size} worker"] = (_batch(through_worker, settings, batch), len(batch), [one])
            runs[f"{size} worker prefetch"] = (
                _batch(through_worker, prefetch_settings, batch), len(batch), [many]
            )  # fmt: skip
        measured = timed_rounds(args.rounds, runs)
    wall = {name: statistics.median(w for w, _ in m) * 1000 for name, m in measured.items()}
    cpu = {name: statistics.median(c for _, c in m) * 1000 for name, m in measured.items()}
    for name, values in measured.items():
        print(f"  {broker_name} {name}: wall " + ", ".join(f"{w * 1000:.2f}" for w, _ in values)
              + " ms; CPU " + ", ".join(f"{c * 1000:.2f}" for _, c in values) + " ms")  # fmt: skip
    for size in keys:
        paired = _paired_ratios(measured, size)
        print(f"  {broker_name} {size}: overhead / floor round by round (wall) "
              + ", ".join(f"{r:.2f}" for r in paired))  # fmt: skip
        SUMMARY.append(
            f"{broker_name} {size}: {_ratio(wall, size):.2f}x wall, {_ratio(cpu, size):.2f}x CPU"
            f" (round by round: median {statistics.median(paired):.2f}x)"
        )
    return [_row(broker_name, size, figures, args.prefetch)
            for size in keys for figures in (("wall", wall), ("CPU", cpu))]  # fmt: skip


SUMMARY: list[str] = []
"""One entry per broker and image size: overhead / floor, the figure the target is about."""


def _ratio(ms: dict[str, float], size: str) -> float:
    return (ms[f"{size} worker"] - ms[f"{size} in-process"]) / ms["floor"]


def _paired_ratios(measured: dict[str, list[tuple[float, float]]], size: str) -> list[float]:
    """Each round's own ratio, from the three runs made seconds apart in that round: the
    machine's speed drifts between rounds (a 12 MP decode by up to 30% here), and a ratio of
    medians taken from different rounds mixes that drift into the overhead."""
    worker, local = measured[f"{size} worker"], measured[f"{size} in-process"]
    rounds = zip(worker, local, measured["floor"], strict=True)
    return [(w - i) / f for (w, _), (i, _), (f, _) in rounds]


def _pinned(run: Callable[..., float], cpu: int | None) -> Callable[..., float]:
    def on(*args: object) -> float:
        with on_cpu(cpu):
            return run(*args)

    return on


def _batch(run: Callable[..., float], settings: object, batch: list[str]) -> Callable[[str], float]:
    return lambda tag: run(settings, batch, tag)


def _row(broker: str, size: str, figures: tuple[str, dict[str, float]], prefetch: int) -> str:
    kind, ms = figures
    floor, local = ms["floor"], ms[f"{size} in-process"]
    worker, fetching = ms[f"{size} worker"], ms[f"{size} worker prefetch"]
    return (
        f"| {broker} | {size} | {kind} | {local:.2f} | {worker:.2f} | {worker - local:.2f}"
        f" | {floor:.2f} | **{_ratio(ms, size):.2f}** | {fetching:.2f}"
        f" | {(fetching - local) / floor:.2f} |"
    )


def scaling(url: str, root: Path, keys: list[str], rounds: int) -> float:
    """Items per second through one worker process and through two, each set on its own queue
    prefix and all started at once (an idle set takes nothing), measured in alternating rounds:
    the machine's speed drifts over seconds, and one run of each would catch it at different
    speeds. Returns the median of each round's ratio."""
    settings, ratios = {}, []
    with contextlib.ExitStack() as stack:
        for count in (1, 2):
            config = write_config(root, url, url, f"scale{count}")
            settings[count] = load_settings(config)
            for n in range(count):
                log = root / "logs" / f"scale{count}-{n}.log"
                stack.enter_context(started(mediaworker_argv(config, "images,videos,slides"), log))
            through_worker(settings[count], keys[:4], f"scale{count}-warm")
        for number in range(rounds):
            rates = {}
            for count in (1, 2):
                seconds = through_worker(settings[count], keys, f"scale{count}-r{number}")
                rates[count] = len(keys) / seconds
            ratios.append(rates[2] / rates[1])
            print(f"round {number}: {len(keys)} 12 MP JPEGs, one worker process"
                  f" {rates[1]:.1f}/s, two {rates[2]:.1f}/s: {ratios[-1]:.2f}x")  # fmt: skip
    ratio = statistics.median(ratios)
    print(f"ratio 2 workers / 1 worker: {ratio:.2f}x, median of the rounds (target >= 1.8x)")
    return ratio


def _memory_folder() -> str | None:
    """A folder in memory: on disk, the writeback and discards of the runs' files (each 12 MP
    item copies 3.6 MB to its work folder and deletes it) stall every process at times, the
    floor's too, and the rounds drift apart by 2x. Both sides of every ratio use the same
    folders, so where they live changes the noise, not what is compared."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="redis,rabbitmq")
    parser.add_argument("--tiny", type=int, default=300, help="64x64 PNGs per batch")
    parser.add_argument("--large", type=int, default=40, help="12 MP JPEGs per batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=4, help="worker.images_prefetch to try")
    parser.add_argument("--scaling-items", type=int, default=200)
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--pin", action="store_true",
                        help="pool processes and in-process runs on CPU 1; this process, the"
                        " brokers' Redis and the workers' main processes on CPU 0 (implies"
                        " --no-scaling)")  # fmt: skip
    parser.add_argument("--root", default=_memory_folder(),
                        help="where the bucket and work folders go (default: /dev/shm when"
                        " writable, else the temporary folder)")  # fmt: skip
    args = parser.parse_args()
    if args.pin:
        args.no_scaling = True
        os.sched_setaffinity(0, {OTHER_CPU})  # the private redis-server starts here too
    root = Path(tempfile.mkdtemp(prefix="bench-queue-", dir=args.root))
    print(f"bucket and work folders under {root}")
    (root / "logs").mkdir()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    try:
        large = max(args.large, args.scaling_items)
        keys = {
            "tiny": write_bucket(root, "tiny", args.tiny),
            "12mp": write_bucket(root, "12mp", large),
        }
        overhead_keys = {"tiny": keys["tiny"], "12mp": keys["12mp"][: args.large]}
        rows = []
        with redis_server(root) as redis_url:
            for broker in args.brokers.split(","):
                url = redis_url
                with contextlib.ExitStack() as stack:
                    if broker == "rabbitmq":
                        url = stack.enter_context(rabbitmq_vhost("mw-bench"))
                    rows += overhead(broker, url, redis_url, root, overhead_keys, args)
            print(f"\n| broker | images | per item | in-process ms | worker ms | overhead ms"
                  f" | floor ms | overhead / floor | worker, prefetch {args.prefetch}, ms"
                  f" | its overhead / floor |")  # fmt: skip
            print("| --- " * 10 + "|")
            print("\n".join(rows))
            if not args.no_scaling:
                start = time.perf_counter()
                two = scaling(redis_url, root, keys["12mp"][: args.scaling_items], args.rounds)
                print(f"(scaling took {time.perf_counter() - start:.0f} s)")
                SUMMARY.append(f"two workers {two:.2f}x one (target >= 1.8x)")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
        print("SUMMARY overhead / floor (target <= 1.5x on redis, defaults): " + "; ".join(SUMMARY))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
