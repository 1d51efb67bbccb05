"""The embedded broker's transport on its own: a message handed to a process that dies is handed
out again, an acknowledged one never is, a requeue makes no duplicate, and a live consumer's
messages are left alone. Real processes, real folders; the worker end to end is in
test_queue_e2e.py."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from worker import embedded_broker

QUEUE = "t-queue"


CONSUMER = """
import json, os, signal, sys, time
from kombu import Connection
import worker.embedded_broker
options = json.loads(sys.argv[1])
with Connection("mediaworker://localhost/", transport_options=options) as conn:
    queue = conn.SimpleQueue(sys.argv[2], no_ack=False)
    message = queue.get(timeout=10)
    print(message.payload, flush=True)
    if sys.argv[3] == "die":
        os.kill(os.getpid(), signal.SIGKILL)  # holding the message, unacknowledged
    sys.stdin.read()  # hold it while alive, until told to go
"""


def _options(root: Path) -> dict[str, str]:
    for name in ("queue", "control"):
        (root / name).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(root / "queue"),
        "data_folder_out": str(root / "queue"),
        "control_folder": str(root / "control"),
    }


@contextmanager
def _connection(root: Path) -> Iterator[Any]:
    with Connection("mediaworker://localhost/", transport_options=_options(root)) as conn:
        yield conn


def _send(root: Path, *payloads: str) -> None:
    with _connection(root) as conn:
        queue = conn.SimpleQueue(QUEUE)
        for payload in payloads:
            queue.put(payload)


def _consume_in_child(root: Path, how: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", CONSUMER, json.dumps(_options(root)), QUEUE, how]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _drain(root: Path) -> list[str]:
    """Everything the queue hands out now, each acknowledged."""
    got = []
    with _connection(root) as conn:
        queue = conn.SimpleQueue(QUEUE, no_ack=False)
        while True:
            try:
                message = queue.get(timeout=0.5)
            except queue.Empty:
                return got
            got.append(message.payload)
            message.ack()


@pytest.fixture(autouse=True)
def _fresh_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    # kombu keeps a folder transport's bindings per process, across folders: a fresh name
    # per test keeps each test's folder bound.
    monkeypatch.setattr(sys.modules[__name__], "QUEUE", f"t-{uuid.uuid4().hex[:8]}")
    monkeypatch.setattr(embedded_broker, "RECOVER_EVERY_SECONDS", 0.0)


def test_message_held_by_a_killed_consumer_is_handed_out_again(tmp_path: Path) -> None:
    _send(tmp_path, "video-1", "image-2")
    child = _consume_in_child(tmp_path, "die")
    assert child.stdout is not None and child.stdout.readline().strip() == "video-1"
    assert child.wait(timeout=30) == -9
    assert _drain(tmp_path) == ["video-1", "image-2"]
    assert _drain(tmp_path) == []  # acknowledged: gone for good
    held = [p for p in (tmp_path / "inflight").rglob("*.msg") if ".acked" not in p.parts]
    assert not held


def test_live_consumers_messages_are_not_taken(tmp_path: Path) -> None:
    _send(tmp_path, "video-1", "image-2")
    child = _consume_in_child(tmp_path, "hold")
    assert child.stdout is not None and child.stdout.readline().strip() == "video-1"
    try:
        assert _drain(tmp_path) == ["image-2"]
    finally:
        child.communicate("", timeout=30)  # exits holding it: a clean exit puts it back
    assert _drain(tmp_path) == ["video-1"]


def test_requeue_and_close_put_the_same_message_back_once(tmp_path: Path) -> None:
    _send(tmp_path, "a", "b")
    with _connection(tmp_path) as conn:
        queue = conn.SimpleQueue(QUEUE, no_ack=False)
        first = queue.get(timeout=1)
        first.requeue()  # what a lost pool process does
        again = queue.get(timeout=1)
        assert again.payload == "a"
        queue.get(timeout=1)  # "b", held when the channel closes
    assert sorted(_drain(tmp_path)) == ["a", "b"]
    assert not list((tmp_path / "queue").glob("*.msg"))
