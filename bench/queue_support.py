"""What `bench_queue.py` starts and times: a private redis-server, a RabbitMQ vhost, worker
processes (mediaworker's and the bare Celery floor of `queue_floor.py`), and batches."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))

from servers import rabbitmq_vhost, redis_server  # noqa: E402  (the tests' broker helpers)

from worker.config import Settings  # noqa: E402
from worker.items import Item  # noqa: E402
from worker.queue import send_items  # noqa: E402

__all__ = ["rabbitmq_vhost", "redis_server"]


def write_config(root: Path, broker: str, backend: str, prefix: str, **worker: Any) -> Path:
    """A mediaworker config: this broker, a Redis result backend, the local bucket."""
    extra = "".join(f"{name} = {json.dumps(value)}\n" for name, value in worker.items())
    config = root / f"{prefix}.toml"
    config.write_text(
        f'[broker]\nurl = "{broker}"\nresult_backend = "{backend}"\nqueue_prefix = "{prefix}-"\n'
        f'state_dir = "{root / "state"}"\n'
        f'[worker]\nwork_dir = "{root / "work"}"\n{extra}'
        f'[integrations.bench]\nprovider = "local"\nroot = "{root / "bucket"}"\n'
    )
    return config


def mediaworker_argv(config: Path, queues: str = "images") -> list[str]:
    return [sys.executable, "-m", "worker", "worker", "--config", str(config),
            "--queues", queues, "--concurrency", "1", "--loglevel", "INFO"]  # fmt: skip


def floor_argv() -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "queue_floor", "worker", "--pool=prefork",
            "--concurrency=1", "--loglevel=INFO", "--queues=floor",
            f"--hostname=floor-{uuid.uuid4().hex[:6]}@%h"]  # fmt: skip


@contextlib.contextmanager
def started(
    argv: list[str], log: Path, env: dict[str, str] | None = None, checkout: Path = BENCH.parent
) -> Iterator[int]:
    """One worker process group, ready to consume, as its pid; SIGTERM (warm shutdown) on the
    way out. It runs in `checkout` and imports mediaworker from there (this one by default)."""
    environment = {**os.environ, **(env or {})}
    paths = [str(BENCH), str(checkout), environment.get("PYTHONPATH", "")]
    environment["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=environment,
                                cwd=checkout, start_new_session=True)  # fmt: skip
    try:
        wait_ready(log)
        yield proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def wait_ready(log: Path) -> None:
    deadline = time.monotonic() + 90
    while " ready." not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def items_for(keys: list[str], tag: str) -> list[Item]:
    # Item ids are plain names (no spaces), and the tags name the run ("tiny in-process-r0").
    base = tag.replace(" ", "-")
    return [Item(integration="bench", key=k, item_id=f"{base}-{i}", type="image")
            for i, k in enumerate(keys)]  # fmt: skip


def through_worker(settings: Settings, keys: list[str], tag: str) -> float:
    """Seconds from the first send to the last result; every item must come back ok."""
    items = items_for(keys, tag)
    start = time.perf_counter()
    sent = send_items(items, settings)
    results = [entry.result.get(timeout=900) for entry in sent]
    elapsed = time.perf_counter() - start
    failed = [r for r in results if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)} items failed, e.g. {json.dumps(failed[0])[:300]}")
    return elapsed


def through_floor(app: Any, keys: list[str], tag: str) -> float:
    """The same batch as no-op tasks of the bare Celery app (the item as the argument)."""
    from queue_floor import QUEUE, TASK

    items = [item.model_dump(mode="json") for item in items_for(keys, tag)]
    start = time.perf_counter()
    with app.producer_or_acquire() as producer:
        sent = [app.send_task(TASK, args=[i], queue=QUEUE, producer=producer) for i in items]
    results = [r.get(timeout=900) for r in sent]
    elapsed = time.perf_counter() - start
    if results != items:
        raise RuntimeError("the no-op task did not return its arguments")
    return elapsed


def in_process(settings: Settings, keys: list[str], tag: str) -> float:
    """The same batch through `process_item` in this process, storage opened once (as the
    `process` command does)."""
    from worker.pipeline import process_item
    from worker.storage import open_storage

    storage = open_storage(settings.integration("bench"), settings)
    items = items_for(keys, tag)
    start = time.perf_counter()
    results = [process_item(item, settings, storage) for item in items]
    elapsed = time.perf_counter() - start
    if any(r.status.value != "ok" for r in results):
        raise RuntimeError(f"in-process: {next(r for r in results if r.status.value != 'ok')}")
    return elapsed


POOL_CPU, OTHER_CPU = 1, 0
"""`--pin`: the CPU given to pool processes and in-process runs, and the one for the rest."""


def pin_pools(pids: list[int]) -> None:
    """Each worker's pool processes on POOL_CPU, its main process on OTHER_CPU."""
    import psutil

    for pid in pids:
        main = psutil.Process(pid)
        main.cpu_affinity([OTHER_CPU])
        for child in main.children(recursive=True):
            child.cpu_affinity([POOL_CPU])


@contextlib.contextmanager
def on_cpu(cpu: int | None) -> Iterator[None]:
    """Run this process on `cpu` for a while (None: leave it where it is)."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def cpu_seconds(pids: list[int]) -> float:
    """CPU time used so far by this process and by each given process and its children."""
    import psutil

    total = time.process_time()
    for pid in pids:
        for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
    return total


Run = tuple[Callable[[str], float], int, list[int]]
"""A batch to time: its function (tag -> wall seconds), its size, the worker pids it uses."""


def timed_rounds(rounds: int, runs: dict[str, Run]) -> dict[str, list[tuple[float, float]]]:
    """Every run once per round, interleaved, so a change in the machine's load hits all; each
    gives (wall, CPU) seconds per item, CPU of this process and of the run's worker processes."""
    per_item: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for number in range(rounds):
        for name, (run, count, pids) in runs.items():
            cpu = cpu_seconds(pids)
            wall = run(f"{name}-r{number}")
            per_item[name].append((wall / count, (cpu_seconds(pids) - cpu) / count))
    return per_item
