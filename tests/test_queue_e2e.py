"""The queue end to end: real brokers, real `mediaworker worker` processes, real storage.

- Redis: a private redis-server on a free port, started here. RabbitMQ: the machine's service
  (127.0.0.1:5672, guest), in a fresh vhost made with rabbitmqctl and deleted afterwards.
- Workers are subprocesses in their own process groups, so a test can SIGKILL one whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from faultproxy import FaultPlan, fault_proxy
from servers import rabbitmq_vhost, redis_server

from fixtures.hostile import tiled_tiff
from fixtures.images import generate_images
from fixtures.slides import generate_slides
from fixtures.videos import CLIPS, Clip, write_clip
from worker.assets import iter_keys
from worker.cli.queue import result_of
from worker.config import Settings, load_settings
from worker.items import Item
from worker.layout import SlotLayout
from worker.payloads import ItemResult, Metadata
from worker.queue import producer_app, send_items

pytestmark = pytest.mark.slow

READY_TIMEOUT = 60.0
GOOD_IMAGES = ("jpeg_baseline", "jpeg_progressive", "png_rgb", "png_alpha", "webp", "bmp", "tiff")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="module")
def rabbitmq_url() -> Iterator[str]:
    """A fresh vhost on the machine's RabbitMQ, deleted afterwards."""
    with rabbitmq_vhost("mw-test") as url:
        yield url


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("queue-media")
    images = generate_images(root / "images")
    slides = generate_slides(root / "slides")
    found = {name: images[name] for name in GOOD_IMAGES}
    found["video"] = write_clip(root / "clip.mp4", CLIPS["h264_mp4"])
    # Big enough that a worker can be killed while it is still writing frames.
    found["long_video"] = write_clip(root / "long.mp4", Clip("mp4", "libx264", size=(1280, 720)))
    found["slide"] = slides["tiled_tiff"]
    return found


@dataclass
class Deployment:
    """One broker, one local bucket, a config file, and the workers started on it."""

    root: Path
    config: Path
    settings: Settings
    procs: list[tuple[subprocess.Popen[bytes], Path]]

    @property
    def bucket(self) -> Path:
        return self.root / "bucket"

    def put(self, key: str, source: Path) -> str:
        (self.bucket / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, self.bucket / key)
        return key

    def start_worker(self, *extra: str, argv: list[str] | None = None) -> Path:
        log_path = self.root / f"worker-{len(self.procs)}.log"
        base = argv or [sys.executable, "-m", "worker"]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [*base, "worker", "--config", str(self.config), "--concurrency", "1", *extra],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.procs.append((proc, log_path))
        text = lambda: log_path.read_text(errors="replace")  # noqa: E731
        _wait_for(lambda: " ready." in text(), READY_TIMEOUT, "worker did not start")
        return log_path

    def logs(self) -> str:
        return "".join(path.read_text(errors="replace") for _, path in self.procs)

    def stop(self) -> None:
        for proc, _ in self.procs:
            _stop_group(proc)

    def layout(self, item: Item) -> SlotLayout:
        return SlotLayout(self.settings.integration("demo").prefix, item.item_id, item.slot)

    def results(self, items: list[tuple[str, Item]], timeout: float) -> list[ItemResult]:
        app = producer_app(self.settings)
        deadline = time.monotonic() + timeout
        return [
            result_of(app.AsyncResult(task_id), item, max(1.0, deadline - time.monotonic()))
            for task_id, item in items
        ]


def _wait_for(check: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def _stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[Any]:
    """`deploy(broker_url, **sections)`: a config with a local integration `demo` and a
    private queue prefix; workers started on it are stopped at the end of the test."""
    made: list[Deployment] = []

    def make(broker_url: str | None, integration: dict[str, Any] | None = None,
             **sections: dict[str, Any]) -> Deployment:  # fmt: skip
        broker = {"state_dir": str(tmp_path / "state"), "queue_prefix": f"t{uuid.uuid4().hex[:6]}-"}
        if broker_url:
            broker["url"] = broker_url
        table = integration or {"provider": "local", "root": str(tmp_path / "bucket")}
        lines = [f"[broker]\n{_lines({**broker, **sections.pop('broker', {})})}"]
        worker = {"work_dir": str(tmp_path / "work"), **sections.pop("worker", {})}
        lines.append(f"[worker]\n{_lines(worker)}")
        lines += [f"[{name}]\n{_lines(values)}" for name, values in sections.items()]
        lines.append(f"[integrations.demo]\n{_lines(table)}")
        config = tmp_path / "mediaworker.toml"
        config.write_text("\n".join(lines))
        (tmp_path / "bucket").mkdir(exist_ok=True)
        made.append(Deployment(tmp_path, config, load_settings(config), []))
        return made[-1]

    yield make
    for deployment in made:
        deployment.stop()


def _lines(values: dict[str, Any]) -> str:
    return "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())


def _assert_done_once(dep: Deployment, items: list[Item]) -> None:
    """Each item has its commit marker, every asset it lists exists, and exactly one worker
    process finished it exactly once."""
    finished = Counter(
        record.get("item_id")
        for record in map(
            json.loads, (line for line in dep.logs().splitlines() if line.startswith("{"))
        )
        if record["message"].startswith("item finished: ok")
    )
    for item in items:
        layout = dep.layout(item)
        marker = dep.bucket / layout.metadata_key
        assert marker.is_file(), f"{item.key}: no metadata.json"
        metadata = Metadata.model_validate_json(marker.read_text())
        assert metadata.assets, item.key
        missing = [a for a in iter_keys(metadata.assets) if not (dep.bucket / a).is_file()]
        assert not missing, f"{item.key}: missing assets {missing[:3]}"
        assert finished[item.item_id] == 1, item.key


def _mixed_batch(dep: Deployment, media: dict[str, Path], count: int) -> list[Item]:
    keys = []
    for i in range(count):
        if i % 40 == 7:
            name, ext = "video", "mp4"
        elif i % 50 == 13:
            name, ext = "slide", "tiff"
        else:
            name = GOOD_IMAGES[i % len(GOOD_IMAGES)]
            ext = media[name].suffix.lstrip(".")
        keys.append(dep.put(f"batch/{i:04d}.{ext}", media[name]))
    return [Item(integration="demo", key=k) for k in keys]


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_200_mixed_items_two_workers_each_done_exactly_once(
    broker: str, request: pytest.FixtureRequest, deploy: Any, media: dict[str, Path]
) -> None:
    url = request.getfixturevalue(f"{broker}_url")
    # Hard limits a worker can hold within RabbitMQ's default 30-minute consumer timeout.
    dep = deploy(url, limits={"item_timeout_seconds": 1200})
    items = _mixed_batch(dep, media, 200)
    # Both consume before the batch is sent: started one after the other on a busy queue, the
    # first could take nearly all of it while the second boots.
    first, second = dep.start_worker(), dep.start_worker()
    sent = send_items(items, dep.settings)
    assert {s.queue for s in sent} == {"images", "videos", "slides"}
    results = dep.results([(s.task_id, s.item) for s in sent], timeout=150)
    assert [r.status.value for r in results] == ["ok"] * 200, [
        (r.key, r.reason, r.message) for r in results if r.status.value != "ok"
    ][:5]
    assert {r.type for r in results} == {"image", "video", "slide"}
    _assert_done_once(dep, items)
    # Both workers took a share: the queue feeds whoever is free.
    for log in (first, second):
        assert log.read_text().count("item finished: ok") >= 20


def test_embedded_default_worker_and_enqueue_need_no_server(
    deploy: Any, media: dict[str, Path]
) -> None:
    dep = deploy(None)
    keys = [dep.put(f"e/{n}{media[n].suffix}", media[n]) for n in ("jpeg_baseline", "png_rgb")]
    keys.append(dep.put("e/clip.mp4", media["video"]))
    dep.start_worker()
    done = subprocess.run(
        [sys.executable, "-m", "worker", "enqueue", "demo", *keys, "--config", str(dep.config),
         "--wait", "--timeout", "60", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(x["key"], x["status"], x["type"]) for x in lines] == [
        (keys[0], "ok", "image"),
        (keys[1], "ok", "image"),
        (keys[2], "ok", "video"),
    ]
    _assert_done_once(dep, [Item(integration="demo", key=k) for k in keys])


def _slot_files(bucket: Path, layout: SlotLayout) -> dict[str, bytes]:
    folder = bucket / layout.key("")
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "metadata.json"
    }


@pytest.mark.parametrize("broker", ["redis", "embedded"])
def test_worker_killed_mid_video_is_redelivered_and_completes_identically(
    broker: str, request: pytest.FixtureRequest, deploy: Any, media: dict[str, Path]
) -> None:
    if broker == "redis":
        # A visibility timeout short enough that the orphaned message comes back within the
        # test, long enough that the redelivered run (slower on a loaded machine) is not
        # handed out once more while it runs.
        dep = deploy(request.getfixturevalue("redis_url"),
                     broker={"visibility_timeout_seconds": 30})  # fmt: skip
    else:
        dep = deploy(None)
    item = Item(integration="demo", key=dep.put("v/long.mp4", media["long_video"]), type="video")
    clean = Item(integration="demo", key=dep.put("v/clean.mp4", media["long_video"]),
                 type="video", item_id="clean-run")  # fmt: skip
    behind = [Item(integration="demo", key=dep.put(f"v/{n}.png", media["png_rgb"]))
              for n in range(2)]  # fmt: skip
    sent = send_items([item, *behind], dep.settings)
    dep.start_worker()
    victim = dep.procs[0][0]
    sections = dep.bucket / dep.layout(item).key("sections/high")
    _wait_for(lambda: sections.is_dir() and any(sections.iterdir()), 60, "no frame was written")
    # The whole worker, main process and pool alike, as the OOM killer or a power cut would.
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    assert not (dep.bucket / dep.layout(item).metadata_key).exists()

    dep.start_worker()
    results = dep.results([(s.task_id, s.item) for s in sent], timeout=150)
    assert [r.status.value for r in results] == ["ok"] * 3, [r.message for r in results]
    assert "delivery 2 of at most" in dep.logs()
    _assert_done_once(dep, [item, *behind])
    [clean_sent] = send_items([clean], dep.settings)
    [clean_result] = dep.results([(clean_sent.task_id, clean)], timeout=60)
    assert clean_result.status.value == "ok"
    redone, reference = (
        _slot_files(dep.bucket, dep.layout(item)),
        _slot_files(dep.bucket, dep.layout(clean)),
    )
    assert sorted(redone) == sorted(reference)
    different = [name for name in reference if redone[name] != reference[name]]
    assert not different, different[:5]
    assert json.loads((dep.bucket / dep.layout(item).metadata_key).read_text())["assets"]


CRASHING_WORKER = """
import os, signal, sys
from worker.kinds import image as kind

image = kind.KIND.process

def crashing(context):
    # Stands for a decoder that segfaults on this one file: the pool process dies at once.
    if "crash" in context.path.name:
        os.kill(os.getpid(), signal.SIGKILL)
    return image(context)

object.__setattr__(kind.KIND, "process", crashing)
from worker.cli import main
main(sys.argv[1:])
"""


def test_item_that_kills_its_worker_ends_as_poison_and_the_queue_moves_on(
    deploy: Any, redis_url: str, media: dict[str, Path]
) -> None:
    dep = deploy(redis_url, worker={"max_deliveries": 2})
    crash = Item(integration="demo", key=dep.put("p/crash.jpg", media["jpeg_baseline"]))
    fine = [Item(integration="demo", key=dep.put(f"p/fine{i}.png", media["png_rgb"]))
            for i in range(2)]  # fmt: skip
    sent = send_items([crash, *fine], dep.settings)
    dep.start_worker(argv=[sys.executable, "-c", CRASHING_WORKER])
    results = dep.results([(s.task_id, s.item) for s in sent], timeout=90)
    assert results[0].status.value == "failed"
    assert results[0].reason is not None and results[0].reason.value == "poison"
    assert "delivered 3 times" in results[0].message
    assert [r.status.value for r in results[1:]] == ["ok", "ok"]
    assert not (dep.bucket / dep.layout(crash).metadata_key).exists()
    assert dep.logs().count("WorkerLostError") >= 2


def test_s3_faults_are_retried_and_403_fails_at_once(
    deploy: Any, redis_url: str, moto_endpoint: str, media: dict[str, Path]
) -> None:
    bucket = f"mw-faults-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    keys = [f"in/{i:02d}{media[n].suffix}" for i, n in enumerate(GOOD_IMAGES * 2)]
    keys += ["in/flaky.jpg", "in/forbidden.jpg"]
    for key, name in zip(keys, [*GOOD_IMAGES * 2, "jpeg_baseline", "jpeg_baseline"], strict=True):
        s3.upload_file(str(media[name]), bucket, key)
    plan = FaultPlan(share_503=0.15, share_reset=0.1, seed=7, flaky={"flaky": 6},
                     forbidden=("forbidden",))  # fmt: skip
    with fault_proxy(moto_endpoint, plan) as (proxy_url, stats):
        table = {"provider": "s3", "bucket": bucket, "region": "us-east-1",
                 "endpoint_url": proxy_url}  # fmt: skip
        dep = deploy(redis_url, integration=table,
                     worker={"retry_backoff_seconds": 0.2, "max_retries": 5})  # fmt: skip
        items = [Item(integration="demo", key=k, type="image") for k in keys]
        sent = send_items(items, dep.settings)
        dep.start_worker()
        dep.start_worker()
        results = dep.results([(s.task_id, s.item) for s in sent], timeout=150)
    by_key = {r.key: r for r in results}
    denied = by_key.pop("in/forbidden.jpg")
    assert denied.status.value == "failed"
    assert denied.reason is not None and denied.reason.value == "permission_denied"
    assert {r.status.value for r in by_key.values()} == {"ok"}, [
        (r.key, r.message) for r in by_key.values() if r.status.value != "ok"
    ]
    logs = dep.logs()
    flaky_id = items[-2].item_id
    assert f"item {flaky_id} (in/flaky.jpg): transient fault, retry 1 of 5" in logs
    assert f"item {items[-1].item_id} (in/forbidden.jpg): transient fault" not in logs
    assert stats["503"] >= 6 and stats["reset"] > 0 and stats["403"] >= 1
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="data/")
    markers = [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith("metadata.json")]
    assert len(markers) == len(keys) - 1


def test_rabbitmq_worker_refuses_to_start_when_its_items_outlast_the_consumer_timeout(
    deploy: Any, rabbitmq_url: str
) -> None:
    dep = deploy(rabbitmq_url, broker={"consumer_timeout_seconds": 1800})
    run = [sys.executable, "-m", "worker", "worker", "--config", str(dep.config)]
    refused = subprocess.run([*run, "--queues", "images,videos"], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert "consumer_timeout = 7560000 (ms)" in line
    assert "limits.queue_timeout_seconds for 'videos'" in line


def test_soft_time_limit_fails_each_slow_item_as_timeout_and_the_worker_goes_on(
    deploy: Any, redis_url: str, media: dict[str, Path], tmp_path: Path
) -> None:
    """The pool process's soft-limit handler is installed once: a second slow item times out
    the same way, and the items between them are unaffected."""
    slow = tmp_path / "slow.tiff"
    tile = zlib.compress(b"\xf0" * 256 * 256 * 3, 9)
    slow.write_bytes(tiled_tiff(40000, 40000, 256, tile, (-(-40000 // 256)) ** 2))
    dep = deploy(redis_url, limits={"queue_timeout_seconds": {"slides": 8, "images": 600}})
    good = media["jpeg_baseline"]
    keys = [dep.put("in/slow-1.tiff", slow), dep.put("in/good-1.jpg", good),
            dep.put("in/slow-2.tiff", slow), dep.put("in/good-2.jpg", good)]  # fmt: skip
    dep.start_worker("--queues", "images,slides")
    items = [Item(integration="demo", key=k, type="auto") for k in keys]
    sent = send_items(items, dep.settings)
    results = dep.results([(s.task_id, s.item) for s in sent], timeout=120)
    assert [(r.status.value, r.reason.value if r.reason else None) for r in results] == [
        ("failed", "timeout"), ("ok", None), ("failed", "timeout"), ("ok", None)
    ]  # fmt: skip
    for slow_item, result in ((items[0], results[0]), (items[2], results[2])):
        assert "slides queue's soft time limit of 7 s" in result.message, result.message
        assert not (dep.bucket / dep.layout(slow_item).metadata_key).exists()
    assert "WorkerLostError" not in dep.logs() and "Hard time limit" not in dep.logs()
