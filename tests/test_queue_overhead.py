"""What keeps the per-item cost of the queue down without giving up a reliability promise: the
delivery count's clear rides with the next count, prefetch above one only where it is safe,
task events only when asked for, and the log scrubber's shortcut never lets a secret through.

The Redis counter runs against a private redis-server; worker processes are exercised in
test_queue_e2e.py (redelivery, poison), unchanged by these shortcuts, and here for what a worker
logs per item and what reading its results costs the sender."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from test_queue_e2e import deploy  # noqa: F401  (the fixture)

from fixtures.images import marked
from worker.celery_app import prefetch_multiplier
from worker.config import settings_from_dict
from worker.items import Item
from worker.observability import (
    CELERY_RECEIVED_LOGGER,
    CELERY_TRACE_LOGGER,
    REDACTED,
    enable_for_worker,
    quiet_task_trace,
    scrub,
)
from worker.queue import DeliveryCounter, RedisCounter, SqliteCounter, send_items


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from servers import redis_server

    with redis_server(tmp_path_factory.mktemp("redis-overhead")) as url:
        yield url


def _clears_ride_with_the_next_count(
    counter: DeliveryCounter, present: Callable[[str], bool]
) -> None:
    assert counter.incr("a:0") == 1
    counter.clear_later("a:0")
    assert present("a:0"), "a deferred clear waits for the next count"
    assert counter.incr("b:0") == 1
    assert not present("a:0")
    assert counter.incr("a:0") == 1, "a cleared key starts again from one"
    counter.clear_later("a:0")
    assert counter.incr("a:0") == 1, "the clear goes first when the same message comes again"
    assert counter.incr("a:0") == 2
    counter.clear_later("a:0")
    counter.clear_later("b:0")
    counter.flush()
    assert not present("a:0") and not present("b:0")


def test_redis_counter_clears_with_the_next_count(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    counter = RedisCounter(redis_url, "mw-overhead:")
    _clears_ride_with_the_next_count(counter, lambda k: client.exists(f"mw-overhead:{k}") == 1)
    assert counter.incr("c:0") == 1 and counter.incr("c:0") == 2
    assert 0 < client.ttl("mw-overhead:c:0") <= 14 * 24 * 3600


def test_sqlite_counter_clears_with_the_next_count(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "deliveries.sqlite3"

    def present(key: str) -> bool:
        with sqlite3.connect(path) as db:
            return (
                db.execute("SELECT 1 FROM deliveries WHERE key = ?", (key,)).fetchone() is not None
            )

    _clears_ride_with_the_next_count(SqliteCounter(path), present)


def _settings(tmp_path: Path, url: str | None, prefetch: int):  # type: ignore[no-untyped-def]
    return settings_from_dict(
        {
            "broker": {"url": url, "state_dir": str(tmp_path)},
            "worker": {"images_prefetch": prefetch},
        }
    )


def test_prefetch_above_one_only_for_an_images_only_worker_on_a_server_broker(
    tmp_path: Path,
) -> None:
    redis = "redis://127.0.0.1:6379/0"
    assert prefetch_multiplier(_settings(tmp_path, redis, 4), ["images"]) == 4
    assert prefetch_multiplier(_settings(tmp_path, redis, 4), ["images", "videos"]) == 1
    assert prefetch_multiplier(_settings(tmp_path, redis, 1), ["images"]) == 1
    # The embedded broker deletes a message file when it hands it out.
    assert prefetch_multiplier(_settings(tmp_path, None, 4), ["images"]) == 1


@pytest.mark.parametrize("events", [False, True])
def test_task_events_only_when_enabled(events: bool) -> None:
    app = Celery("events-test", set_as_current=False)
    enable_for_worker(app, None, events=events)
    assert bool(app.conf.worker_send_task_events) is events
    assert bool(app.conf.task_send_sent_event) is events


@pytest.mark.parametrize(
    "line",
    [
        "GET https://b.s3.amazonaws.com/k.jpg?X-AMZ-SIGNATURE=deadbeef00 failed",
        "retry with SIG=deadbeef00&se=2024",
        "header s\u0131g=deadbeef00 echoed",  # dotless i: case-insensitive regexes pair it with i
        "header S\u0130G=deadbeef00 echoed",  # dotted capital I
        "header \u017fig=deadbeef00 echoed",  # long s
        "{'PassWord': 'deadbeef00'}",
        "AUTHORIZATION: SharedKey acct:deadbeef00",
        "DefaultEndpointsProtocol=https;ACCOUNTKEY=deadbeef00;",
    ],
)
def test_scrubber_shortcut_misses_no_spelling_the_patterns_match(line: str) -> None:
    cleaned = scrub(line)
    assert "deadbeef00" not in cleaned
    assert REDACTED in cleaned


@pytest.mark.parametrize("name", [CELERY_TRACE_LOGGER, CELERY_RECEIVED_LOGGER])
def test_celery_per_task_lines_only_at_debug(name: str) -> None:
    celery_logger = logging.getLogger(name)
    saved = celery_logger.level
    try:
        quiet_task_trace(logging.DEBUG)
        assert celery_logger.level == saved
        quiet_task_trace(logging.INFO)
        assert not celery_logger.isEnabledFor(logging.INFO)
        assert celery_logger.isEnabledFor(logging.ERROR), "failures still show"
    finally:
        celery_logger.setLevel(saved)


def test_worker_logs_items_with_their_task_and_sender_subscribes_once(
    redis_url: str,
    deploy: Any,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    import redis

    dep = deploy(redis_url)
    source = tmp_path / "tiny.png"
    marked((64, 64)).save(source)
    keys = [dep.put(f"in/{n}.png", source) for n in range(4)]
    log = dep.start_worker("--queues", "images")
    client = redis.Redis.from_url(redis_url)

    def subscribes() -> int:
        return int(client.info("commandstats").get("cmdstat_subscribe", {}).get("calls", 0))

    before = subscribes()
    sent = send_items([Item(integration="demo", key=k, type="image") for k in keys], dep.settings)
    results = [entry.result.get(timeout=120) for entry in sent]
    assert [r["status"] for r in results] == ["ok"] * len(keys)
    assert subscribes() - before == len(keys), "one subscription per result, not two"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    finished = [line for line in lines if line["message"].startswith("item finished")]
    assert sorted(line["task_id"] for line in finished) == sorted(e.task_id for e in sent)
    # One line per item at INFO: Celery's `received` and `succeeded` lines only at DEBUG.
    assert not [line for line in lines if re.match(r"Task \S+\[\S+\] (received|succeeded)",
                                                    line["message"])]  # fmt: skip
    per_item = [line for line in lines if line["level"] == "info" and line.get("item_id")]
    assert len(per_item) == len(keys), per_item
