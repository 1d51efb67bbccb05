"""Queue throughput: items per second for a batch of images, one worker process vs two, through
Redis, in one run (SPEC section 10: two workers on two cores give at least 1.8x).

    .venv/bin/python bench/bench_queue.py [--items 200] [--size 4000x3000]

Starts a private redis-server on a free port, writes a local bucket of JPEGs (deterministic,
from fixtures.images.marked), then for 1 and 2 workers (`mediaworker worker --concurrency 1`
each): starts them, waits until they are ready, enqueues the batch and times from the first
send to the last result. Worker start-up is not timed. Prints one line per run and the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from fixtures.images import marked
from worker.config import Settings, load_settings
from worker.items import Item
from worker.queue import enqueue, producer_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def write_config(root: Path, redis_url: str, prefix: str) -> Path:
    config = root / f"{prefix}.toml"
    config.write_text(
        f'[broker]\nurl = "{redis_url}"\nqueue_prefix = "{prefix}-"\n'
        f'state_dir = "{root / "state"}"\n'
        f'[worker]\nwork_dir = "{root / "work"}"\n'
        f'[integrations.bench]\nprovider = "local"\nroot = "{root / "bucket"}"\n'
    )
    return config


@contextlib.contextmanager
def workers(config: Path, count: int, logs: Path) -> Iterator[None]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(count):
            log = logs / f"{config.stem}-worker{n}.log"
            argv = [sys.executable, "-m", "worker", "worker", "--config", str(config),
                    "--concurrency", "1", "--loglevel", "INFO"]  # fmt: skip
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
            wait_ready(log)
        yield
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


def wait_ready(log: Path) -> None:
    deadline = time.monotonic() + 60
    while " ready." not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def run_batch(settings: Settings, keys: list[str], tag: str) -> float:
    """Seconds from the first send to the last result; every item must come back ok."""
    items = [Item(integration="bench", key=k, item_id=f"{tag}-{i}", type="image")
             for i, k in enumerate(keys)]  # fmt: skip
    start = time.perf_counter()
    ids = enqueue(items, settings)
    app = producer_app(settings)
    results = [app.AsyncResult(task_id).get(timeout=600) for task_id in ids]
    elapsed = time.perf_counter() - start
    failed = [r for r in results if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)} items failed, e.g. {json.dumps(failed[0])[:300]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--size", default="4000x3000", help="image size, WxH")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    root = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    try:
        source = root / "bucket" / "src.jpg"
        source.parent.mkdir(parents=True)
        marked((width, height)).save(source, quality=90)
        keys = []
        for i in range(args.items):
            shutil.copy(source, root / "bucket" / f"img{i:05d}.jpg")
            keys.append(f"img{i:05d}.jpg")
        with redis_server(root) as url:
            rates = {}
            for count in (1, 2):
                config = write_config(root, url, f"w{count}")
                with workers(config, count, root):
                    seconds = run_batch(load_settings(config), keys, f"w{count}")
                rates[count] = args.items / seconds
                print(f"{count} worker process(es): {args.items} images ({width}x{height} JPEG)"
                      f" in {seconds:.2f} s = {rates[count]:.1f} items/s")  # fmt: skip
        print(f"ratio 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x (target >= 1.8x);"
              f" {os.cpu_count()} CPUs")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
