"""The producer side of the queue and the delivery count behind the `poison` cap.

`enqueue(items, settings)` routes each item to its queue by type: an `auto` item is sniffed from
a ranged read of its first bytes (one small request, no download), and is sent with the type it
was found to have, so the worker does not sniff it again. An item that cannot be sniffed here
(missing, unreadable, unknown format, storage down) still gets a task, on the fallback queue:
the worker then reports what is wrong in the task's result, and nothing is dropped silently.

Deliveries are counted outside the worker, so that a count survives the worker it killed: in
Redis (`INCR` with a TTL) when one is at hand, else in a SQLite file on this machine. On Redis
and RabbitMQ only redeliveries are counted (the broker marks them); a count costs one round
trip, as the clear of the item before rides with it.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from worker.celery_app import MediaWorkerApp, is_redis, make_app, queue_name, state_dir
from worker.config import Settings
from worker.errors import MediaWorkerError
from worker.items import Item, ItemType
from worker.kinds.registry import TASK_NAMES, queue_of
from worker.storage import ReadableStorage, open_storage

log = logging.getLogger(__name__)

DELIVERY_TTL_SECONDS = 14 * 24 * 3600
"""A delivery count outlives any redelivery (the visibility timeout, retries' countdowns)."""


@dataclass(frozen=True)
class Enqueued:
    task_id: str
    queue: str
    task_name: str
    item: Item
    result: Any = field(default=None, compare=False, repr=False)
    """The sender's `AsyncResult`: already subscribed to the result, so reading it through this
    handle costs no second subscription (a new `AsyncResult(task_id)` subscribes again, and the
    sender's handle, once dropped, unsubscribes)."""


class _Router:
    """Resolves `auto` items by sniffing, opening each integration's storage once."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._storages: dict[str, ReadableStorage] = {}

    def item_type(self, item: Item) -> ItemType:
        if item.type != ItemType.AUTO:
            return item.type
        from worker.pipeline import detect_type

        try:
            return detect_type(item, self._storage(item.integration))
        except MediaWorkerError as exc:
            log.warning(
                "item %s (%s): could not tell its type before sending (%s); the worker will"
                " report it",
                item.item_id,
                item.key,
                exc,
            )
            return ItemType.AUTO

    def _storage(self, name: str) -> ReadableStorage:
        if name not in self._storages:
            integration = self._settings.integration(name)
            self._storages[name] = open_storage(integration, self._settings)
        return self._storages[name]


def as_item(raw: Item | Mapping[str, Any]) -> Item:
    return raw if isinstance(raw, Item) else Item.model_validate(dict(raw))


def send_items(
    items: Iterable[Item | Mapping[str, Any]],
    settings: Settings,
    app: MediaWorkerApp | None = None,
) -> list[Enqueued]:
    """Route and send every item; returns what was sent where, in order."""
    app = app or producer_app(settings)
    router = _Router(settings)
    sent: list[Enqueued] = []
    with app.producer_or_acquire() as producer:
        for raw in items:
            item = as_item(raw)
            settings.integration(item.integration)  # an unknown name is a config error, now
            item_type = router.item_type(item)
            if item_type != item.type:
                item = item.model_copy(update={"type": item_type})
            queue = queue_of(item_type)
            name = TASK_NAMES[queue]
            result = app.send_task(
                name,
                args=[item.model_dump(mode="json")],
                queue=queue_name(settings, queue),
                producer=producer,
            )
            sent.append(Enqueued(result.id, queue, name, item, result))
    log.info("sent %d items", len(sent))
    return sent


def enqueue(
    items: Iterable[Item | Mapping[str, Any]],
    settings: Settings,
    app: MediaWorkerApp | None = None,
) -> list[str]:
    """The producer API for the registering backend: sends each item (an `Item` or a SPEC 3
    mapping) to the queue of its type and returns the task ids, in order. Read a task's result,
    a SPEC 7 result object, with `producer_app(settings).AsyncResult(task_id).get()`."""
    return [sent.task_id for sent in send_items(items, settings, app)]


_producer_apps: dict[str, MediaWorkerApp] = {}


def producer_app(settings: Settings) -> MediaWorkerApp:
    """One producer app per broker configuration, so connections are pooled across calls."""
    key = settings.broker.model_dump_json() + settings.limits.model_dump_json()
    if key not in _producer_apps:
        _producer_apps[key] = make_app(settings)
    return _producer_apps[key]


class DeliveryCounter(Protocol):
    def incr(self, key: str) -> int:
        """Count one more delivery of `key`; returns the count so far, this one included."""

    def clear(self, key: str) -> None:
        """Forget `key` once its delivery ended in a result."""

    def clear_later(self, key: str) -> None:
        """Forget `key` with the next `incr` or `flush`, in the same round trip: a key left
        behind by a process that died first only expires (it counts a delivery that did end)."""

    def flush(self) -> None:
        """Send the clears still waiting (the process is about to exit)."""


class RedisCounter:
    """Counts in Redis, which survives every worker and is shared by all machines."""

    # One command, atomic: drop the cleared KEYS[2:] first (KEYS[1] may be among them, when a
    # finished delivery's message comes again), then count KEYS[1], never without its TTL.
    _INCR = """
    if #KEYS > 1 then redis.call('DEL', unpack(KEYS, 2)) end
    local count = redis.call('INCR', KEYS[1])
    redis.call('EXPIRE', KEYS[1], ARGV[1])
    return count
    """

    def __init__(self, url: str, namespace: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url)
        self._namespace = namespace
        self._cleared: list[str] = []
        self._incr = self._client.register_script(self._INCR)

    def incr(self, key: str) -> int:
        cleared, self._cleared = self._cleared, []
        keys = [self._namespace + key, *cleared]
        return int(self._incr(keys=keys, args=[DELIVERY_TTL_SECONDS]))

    def clear(self, key: str) -> None:
        self._client.delete(self._namespace + key)

    def clear_later(self, key: str) -> None:
        self._cleared.append(self._namespace + key)

    def flush(self) -> None:
        cleared, self._cleared = self._cleared, []
        if cleared:
            self._client.delete(*cleared)


class SqliteCounter:
    """Counts in a SQLite file: survives a killed worker on this machine (the embedded broker's
    case); every process opens it for each count, so forks share nothing."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._cleared: list[str] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS deliveries"
                " (key TEXT PRIMARY KEY, count INTEGER NOT NULL, at REAL NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self._path, timeout=30, isolation_level="IMMEDIATE")

    def incr(self, key: str) -> int:
        now = time.time()
        cleared, self._cleared = self._cleared, []
        with self._connect() as db:
            db.executemany("DELETE FROM deliveries WHERE key = ?", [(k,) for k in cleared])
            db.execute("DELETE FROM deliveries WHERE at < ?", (now - DELIVERY_TTL_SECONDS,))
            db.execute(
                "INSERT INTO deliveries (key, count, at) VALUES (?, 1, ?)"
                " ON CONFLICT(key) DO UPDATE SET count = count + 1, at = excluded.at",
                (key, now),
            )
            row = db.execute("SELECT count FROM deliveries WHERE key = ?", (key,)).fetchone()
        return int(row[0])

    def clear(self, key: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM deliveries WHERE key = ?", (key,))

    def clear_later(self, key: str) -> None:
        self._cleared.append(key)

    def flush(self) -> None:
        cleared, self._cleared = self._cleared, []
        if cleared:
            with self._connect() as db:
                db.executemany("DELETE FROM deliveries WHERE key = ?", [(k,) for k in cleared])


def broker_marks_redeliveries(settings: Settings) -> bool:
    """Whether every message the broker hands out again carries `redelivered`: RabbitMQ sets it
    on each requeue, kombu's Redis transport on each restore (a rejected message, an expired
    visibility timeout). Then a first delivery needs no count: see `tasks.ItemTask`."""
    url = str(settings.broker.url or "")
    return is_redis(url) or url.startswith(("amqp://", "amqps://", "pyamqp://"))


def delivery_store(settings: Settings) -> str:
    """`broker.delivery_store`, else the broker's or result backend's Redis, else a file."""
    broker = settings.broker
    for candidate in (broker.delivery_store, broker.url, broker.result_backend):
        if candidate and (is_redis(candidate) or candidate is broker.delivery_store):
            return str(candidate)
    return str(state_dir(settings) / "deliveries.sqlite3")


def delivery_counter(settings: Settings) -> DeliveryCounter:
    store = delivery_store(settings)
    if is_redis(store):
        return RedisCounter(store, f"mediaworker:deliveries:{settings.broker.queue_prefix}")
    return SqliteCounter(Path(store))
