"""Results on Redis: stored in one round trip (Celery's backend takes two), still never
overwriting a stored success, and still delivered to the sender that waits on them. Against a
private redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, states
from redis.connection import Connection
from servers import redis_server

from worker.celery_app import make_app
from worker.config import settings_from_dict
from worker.results import RedisResultBackend


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis-results")) as url:
        yield url


@pytest.fixture
def app(redis_url: str, tmp_path: Path) -> Celery:
    settings = settings_from_dict({
        "broker": {"url": redis_url},
        "integrations": {"demo": {"provider": "local", "root": str(tmp_path)}},
    })  # fmt: skip
    return make_app(settings)


def requests_sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts what the Redis client sends to the server (one entry per request: a pipeline or a
    script is one)."""
    sent: list[int] = []
    original = Connection.send_packed_command

    def counting(self: Connection, command: Any, check_health: bool = True) -> None:
        sent.append(1)
        original(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", counting)
    return sent


def test_a_result_is_stored_in_one_round_trip(
    app: Celery, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = app.backend
    assert isinstance(backend, RedisResultBackend)
    backend.store_result("warm", {"n": 0}, states.SUCCESS)  # loads the script once
    celery_own = Celery("plain", backend=redis_url).backend
    celery_own.store_result("warm-plain", {"n": 0}, states.SUCCESS)  # connects
    sent = requests_sent(monkeypatch)
    backend.store_result("task-1", {"n": 1}, states.SUCCESS)
    assert len(sent) == 1
    celery_own.store_result("task-2", {"n": 2}, states.SUCCESS)
    assert len(sent) == 3, "Celery's own backend: a GET, then SET and PUBLISH"
    assert backend.get_task_meta("task-1")["result"] == {"n": 1}
    assert 0 < backend.client.ttl(backend.get_key_for_task("task-1")) <= backend.expires


def test_a_stored_success_is_never_overwritten(app: Celery) -> None:
    backend = app.backend
    backend.store_result("task-3", None, states.STARTED)
    backend.store_result("task-3", {"done": True}, states.SUCCESS)
    assert backend.get_task_meta("task-3")["status"] == states.SUCCESS
    # A late duplicate (a redelivery after its worker was lost) fails: the success stays.
    backend.store_result("task-3", ValueError("late"), states.FAILURE)
    meta = backend.get_task_meta("task-3")
    assert (meta["status"], meta["result"]) == (states.SUCCESS, {"done": True})


def test_the_sender_waiting_on_a_result_receives_it(app: Celery) -> None:
    waiting = app.AsyncResult("task-4")
    app.backend.on_task_call(None, "task-4")  # what sending does: subscribe to its result
    app.backend.store_result("task-4", {"status": "ok"}, states.SUCCESS)
    assert waiting.get(timeout=10) == {"status": "ok"}


def test_other_result_backends_are_celerys_own(tmp_path: Path) -> None:
    root = {"demo": {"provider": "local", "root": str(tmp_path)}}
    rabbit = make_app(settings_from_dict({"broker": {"url": "amqp://guest:guest@127.0.0.1//"},
                                          "integrations": root}))  # fmt: skip
    assert rabbit.conf.result_backend == "rpc://"
    embedded = make_app(settings_from_dict({"broker": {"state_dir": str(tmp_path / "state")},
                                            "integrations": root}))  # fmt: skip
    assert embedded.conf.result_backend.startswith("file://")
