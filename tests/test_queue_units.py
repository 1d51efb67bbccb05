"""The queue's configuration, routing, message shape, delivery counts and retry delays.

Real brokers only: the embedded (folder) broker for routing and message shape, a private
redis-server for the Redis counter. Worker processes are exercised in test_queue_e2e.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fixtures.images import generate_images
from fixtures.slides import generate_slides
from fixtures.videos import CLIPS, write_clip
from tasks import backoff_seconds
from worker.celery_app import (
    TASK_NAMES,
    celery_config,
    queue_name,
    time_limits,
    visibility_timeout,
)
from worker.cli import cli
from worker.config import Settings, settings_from_dict
from worker.queue import RedisCounter, SqliteCounter, delivery_store, send_items
from worker.rabbitmq import consumer_timeout_problem, hold_seconds


def _settings(tmp: Path, **sections: Any) -> Settings:
    data: dict[str, Any] = {
        "broker": {"state_dir": str(tmp / "state")},
        "integrations": {"demo": {"provider": "local", "root": str(tmp / "bucket")}},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return settings_from_dict(data)


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local bucket with one image, one video and one slide, under plain keys."""
    root = tmp_path_factory.mktemp("units")
    images = generate_images(root / "gen-images")
    slides = generate_slides(root / "gen-slides")
    bucket = root / "bucket"
    (bucket / "in").mkdir(parents=True)
    shutil.copy(images["jpeg_baseline"], bucket / "in" / "photo.jpg")
    shutil.copy(slides["tiled_tiff"], bucket / "in" / "slide.tiff")
    write_clip(bucket / "in" / "clip.mp4", CLIPS["h264_mp4"])
    # No extension and an image's bytes: only sniffing can route it.
    shutil.copy(images["png_rgb"], bucket / "in" / "noext")
    return root


def test_reliability_settings_are_the_safe_ones(tmp_path: Path) -> None:
    config = celery_config(_settings(tmp_path))
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["worker_cancel_long_running_tasks_on_connection_loss"] is True
    assert config["accept_content"] == ["json"]


def test_time_limits_per_queue_and_visibility_outlasts_them(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        broker={"url": "redis://127.0.0.1:6379/0"},
        limits={"item_timeout_seconds": 1000, "queue_timeout_seconds": {"images": 100}},
    )
    assert time_limits(settings, "images") == (90.0, 100.0)
    assert time_limits(settings, "videos") == (900.0, 1000.0)
    config = celery_config(settings)
    assert config["task_annotations"][TASK_NAMES["slides"]] == {
        "soft_time_limit": 900.0,
        "time_limit": 1000.0,
    }
    assert config["broker_transport_options"]["visibility_timeout"] > 1000
    assert visibility_timeout(settings) == config["broker_transport_options"]["visibility_timeout"]
    # Celery's Redis backend, storing each result in one round trip (test_results.py).
    assert config["result_backend"] == "worker.results:RedisResultBackend+redis://127.0.0.1:6379/0"


def test_queue_prefix_names_queues_and_routes(tmp_path: Path) -> None:
    settings = _settings(tmp_path, broker={"queue_prefix": "staging-"})
    config = celery_config(settings)
    assert [q.name for q in config["task_queues"]] == [
        "staging-images",
        "staging-videos",
        "staging-slides",
    ]
    assert config["task_routes"][TASK_NAMES["videos"]] == {"queue": "staging-videos"}
    assert queue_name(settings, "slides") == "staging-slides"
    with pytest.raises(ValueError, match="unknown queue 'audio'"):
        queue_name(settings, "audio")


def test_embedded_default_needs_no_server(tmp_path: Path) -> None:
    config = celery_config(_settings(tmp_path))
    assert config["broker_url"].startswith("mediaworker://")
    assert config["result_backend"].startswith("file://")
    assert Path(config["broker_transport_options"]["data_folder_in"]).is_dir()


def _queued(state: Path) -> list[tuple[str, dict[str, Any]]]:
    """(queue, message) for each message file the embedded broker holds, oldest first."""
    found = []
    for path in sorted((state / "queue").glob("*.msg")):
        queue = path.name.rsplit(".", 2)[-2]
        found.append((queue, json.loads(path.read_text())))
    return found


def test_enqueue_routes_by_sniffed_type_and_sends_the_documented_shape(bucket: Path) -> None:
    settings = _settings(bucket)
    keys = ["in/photo.jpg", "in/clip.mp4", "in/slide.tiff", "in/noext", "in/missing.jpg"]
    sent = send_items([{"integration": "demo", "key": k} for k in keys], settings)
    assert [s.queue for s in sent] == ["images", "videos", "slides", "images", "images"]
    assert [s.item.type.value for s in sent] == ["image", "video", "slide", "image", "auto"]
    queued = {m["headers"]["id"]: (q, m) for q, m in _queued(bucket / "state")}
    assert [queued[s.task_id][0] for s in sent] == [s.queue for s in sent]
    message = queued[sent[1].task_id][1]
    headers = message["headers"]
    assert headers["task"] == "mediaworker.process_video"
    assert headers["id"] == sent[1].task_id
    args, kwargs, _embed = json.loads(_body(message))
    assert kwargs == {}
    assert args == [
        {
            "integration": "demo",
            "key": "in/clip.mp4",
            "item_id": sent[1].item.item_id,
            "slot": "0",
            "type": "video",
            "fps": 0.0,
        }
    ]


def _body(message: dict[str, Any]) -> str:
    import base64

    body = message["body"]
    if message["properties"].get("body_encoding") == "base64":
        return base64.b64decode(body).decode()
    return str(body)


def test_enqueue_cli_json_lines_and_from_file(bucket: Path, tmp_path: Path) -> None:
    config = tmp_path / "mw.toml"
    config.write_text(
        f'[broker]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[integrations.demo]\nprovider = "local"\nroot = "{bucket / "bucket"}"\n'
    )
    items = tmp_path / "items.jsonl"
    items.write_text(
        json.dumps({"key": "in/clip.mp4", "item_id": "abc", "fps": 4}) + "\n\n"
        + json.dumps({"key": "in/photo.jpg", "type": "image", "slot": "1"}) + "\n"
    )  # fmt: skip
    result = CliRunner().invoke(
        cli, ["enqueue", "demo", "--from-file", str(items), "--config", str(config), "--json"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(x["queue"], x["item_id"], x["type"], x["slot"]) for x in lines] == [
        ("videos", "abc", "video", "0"),
        ("images", lines[1]["item_id"], "image", "1"),
    ]
    assert lines[0]["fps"] == 4
    assert len(_queued(tmp_path / "state")) == 2


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "mw.toml"
    config.write_text(f'[broker]\nstate_dir = "{tmp_path / "state"}"\n')
    run = [sys.executable, "-m", "worker"]
    bad_queue = subprocess.run(
        [*run, "worker", "--config", str(config), "--queues", "images,audio"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_queue.returncode == 2
    assert "audio" in bad_queue.stderr
    nothing = subprocess.run(
        [*run, "enqueue", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert nothing.returncode == 2
    assert "--from-file" in nothing.stderr


def _count_in_child(path: str, key: str) -> int:
    return SqliteCounter(Path(path)).incr(key)


def test_sqlite_counter_survives_the_process_that_counted(tmp_path: Path) -> None:
    path = tmp_path / "deliveries.sqlite3"
    with get_context("spawn").Pool(2) as pool:
        counts = pool.starmap(_count_in_child, [(str(path), "task-1:0")] * 3)
    assert sorted(counts) == [1, 2, 3]
    counter = SqliteCounter(path)
    assert counter.incr("task-1:0") == 4
    assert counter.incr("task-1:1") == 1
    counter.clear("task-1:0")
    assert counter.incr("task-1:0") == 1


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from servers import redis_server

    with redis_server(tmp_path_factory.mktemp("redis-units")) as url:
        yield url


def test_redis_counter_counts_with_a_ttl(redis_url: str) -> None:
    import redis

    counter = RedisCounter(redis_url, "mw-test:")
    assert [counter.incr("t:0") for _ in range(3)] == [1, 2, 3]
    client = redis.Redis.from_url(redis_url)
    assert 0 < client.ttl("mw-test:t:0") <= 14 * 24 * 3600
    counter.clear("t:0")
    assert client.exists("mw-test:t:0") == 0


def test_delivery_store_prefers_a_shared_redis(tmp_path: Path) -> None:
    redis_broker = _settings(tmp_path, broker={"url": "redis://127.0.0.1:6379/3"})
    assert delivery_store(redis_broker) == "redis://127.0.0.1:6379/3"
    rabbit = _settings(
        tmp_path,
        broker={"url": "amqp://guest:guest@127.0.0.1//", "result_backend": "redis://h:1/2"},
    )
    assert delivery_store(rabbit) == "redis://h:1/2"
    embedded = _settings(tmp_path)
    assert delivery_store(embedded) == str(tmp_path / "state" / "deliveries.sqlite3")


def test_backoff_is_exponential_bounded_and_jittered() -> None:
    for retries, ceiling in [(0, 2.0), (1, 4.0), (3, 16.0), (10, 300.0)]:
        delays = [backoff_seconds(retries, 2.0, 300.0) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # spread over the whole window: jitter
        assert len({round(d, 6) for d in delays}) > 150


def test_rabbitmq_consumer_timeout_must_outlast_what_a_worker_holds(tmp_path: Path) -> None:
    amqp = {"url": "amqp://guest:guest@127.0.0.1:5672/x"}
    settings = _settings(tmp_path, broker=amqp)
    # videos: 7200 s hard limit + 300 s longest retry countdown + 60 s margin
    assert hold_seconds(settings, "videos") == 7560
    problem = consumer_timeout_problem(settings, ["images", "videos"])
    assert problem is not None and "\n" not in problem
    assert "consumer_timeout (1800 s, RabbitMQ's default)" in problem
    assert "consumer_timeout = 7560000 (ms)" in problem
    assert "broker.consumer_timeout_seconds = 7560" in problem
    # images alone (600 s hard limit) fit in RabbitMQ's default 30 minutes
    assert consumer_timeout_problem(settings, ["images"]) is None
    told = _settings(tmp_path, broker={**amqp, "consumer_timeout_seconds": 7560})
    assert consumer_timeout_problem(told, ["videos", "slides"]) is None
    off = _settings(tmp_path, broker={**amqp, "consumer_timeout_seconds": 0})
    assert consumer_timeout_problem(off, ["videos"]) is None
    short = _settings(tmp_path, broker={**amqp, "consumer_timeout_seconds": 900})
    assert "900 s, broker.consumer_timeout_seconds" in str(
        consumer_timeout_problem(short, ["images"])
    )
    redis = _settings(tmp_path, broker={"url": "redis://127.0.0.1:6379/0"})
    assert consumer_timeout_problem(redis, ["videos"]) is None
