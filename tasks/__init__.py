"""Celery tasks: thin wrappers around `worker.pipeline.process_item`.

Every task shares `ItemTask`, the one place that maps the error tree onto Celery:

- `TransientError` (throttling, 5xx, resets, timeouts): retried with exponential backoff and full
  jitter, at most `worker.max_retries` times; after that the item fails as `storage_unavailable`;
- `PermanentError`: the pipeline already turned it into a `failed` result with its reason code,
  returned at once, never retried;
- the soft time limit: the item fails as `timeout` (the hard limit stops the process);
- a delivery that killed its worker is counted outside the worker (`worker.queue`); once an item
  has been delivered more than `worker.max_deliveries` times it fails as `poison`, unprocessed,
  and its message is acknowledged, so the queue moves on. On Redis and RabbitMQ, which mark
  every message they hand out again, a first delivery costs no round trip to the count.

A task returns the SPEC 7 result object as a dict. Re-running an item is safe: outputs are
overwritten in place and `metadata.json` is written last (the pipeline's commit marker).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from celery import Task, signals
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError

from worker.celery_app import app
from worker.errors import InvalidItem, ItemTimeout, Reason, TransientError
from worker.items import Item
from worker.observability import item_context, task_trace_shown
from worker.payloads import ItemResult, Status
from worker.pipeline import process_item
from worker.queue import DeliveryCounter, broker_marks_redeliveries, delivery_counter
from worker.storage import ReadOnlyView, Storage, open_storage

log = logging.getLogger(__name__)


def backoff_seconds(retries: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**retries)]."""
    return random.uniform(0, min(cap, base * 2**retries))


class ItemTask(Task):
    """The base of every item task (see the module docstring)."""

    acks_late = True
    reject_on_worker_lost = True
    queue_label = ""
    """The queue this task serves (for messages)."""

    _counter: DeliveryCounter | None = None
    _broker_marks: bool | None = None
    _storages: ClassVar[dict[str, Storage | ReadOnlyView]] = {}

    @property
    def resultrepr_maxsize(self) -> int:  # type: ignore[override]
        """Celery builds a repr of every result, walking its fields, for its `succeeded` line
        and the task events: the item's names where either is shown (DEBUG, or
        `worker.task_events`), else next to nothing (read once per pool process)."""
        return 160 if app.settings.worker.task_events or task_trace_shown() else 1

    def counter(self) -> DeliveryCounter:
        # One per process: pool processes are forked, and a connection must not be shared.
        if ItemTask._counter is None:
            ItemTask._counter = delivery_counter(app.settings)
        return ItemTask._counter

    def storage(self, integration: str) -> Storage | ReadOnlyView:
        """Each integration's client is built once per pool process, not once per item (an S3,
        Azure or GCS client costs more to build than a small image costs to process)."""
        if integration not in self._storages:
            settings = app.settings
            self._storages[integration] = open_storage(settings.integration(integration), settings)
        return self._storages[integration]

    def run_item(self, raw: dict[str, Any]) -> dict[str, Any]:
        try:
            item = Item.model_validate(raw)
        except (InvalidItem, ValidationError, TypeError) as exc:
            return refused(raw, exc).model_dump(mode="json")
        request = self.request
        counted = self._counted()
        delivery = f"{request.id}:{request.retries}"
        count = self._delivery_count(delivery) if counted else 1
        with item_context(task_id=request.id):  # each of its log lines names the task
            poisoned = self._poison(item, count)
            result = poisoned if poisoned is not None else self._process(item, count > 1)
        if counted:
            self.counter().clear_later(delivery)
        # The SPEC 7 object, no more: `problems` only where verification found some.
        return result.model_dump(mode="json", exclude=None if result.problems else {"problems"})

    def _delivery_count(self, delivery: str) -> int:
        """Which delivery of this message this is, counted in a store that outlives the worker
        (asked only when `_counted`). Where the broker marks every redelivery, a first delivery
        is number one without asking the store, and only redeliveries are counted there: the
        store is touched only after a worker died."""
        uncounted_first = 1 if self._marks_redeliveries() else 0
        return uncounted_first + self.counter().incr(delivery)

    def _counted(self) -> bool:
        if not self._marks_redeliveries():
            return True
        return bool((self.request.delivery_info or {}).get("redelivered"))

    def _marks_redeliveries(self) -> bool:
        # The broker does not change under a running process: asked once, not per item.
        if ItemTask._broker_marks is None:
            ItemTask._broker_marks = broker_marks_redeliveries(app.settings)
        return ItemTask._broker_marks

    def _poison(self, item: Item, count: int) -> ItemResult | None:
        cap = app.settings.worker.max_deliveries
        if count <= cap:
            if count > 1:
                log.warning(
                    "item %s (%s): delivery %d of at most %d: an earlier one did not finish"
                    " (its worker died)",
                    item.item_id,
                    item.key,
                    count,
                    cap,
                )
            return None
        message = (
            f"{item.key}: delivered {count} times and each delivery killed its worker (crash or"
            f" out of memory); it is not retried again. Check the file, or raise"
            f" worker.max_deliveries (now {cap}) and the worker's memory, then enqueue it again"
        )
        log.error("item %s: poison: %s", item.item_id, message)
        return ItemResult.failure(item, Reason.POISON, message)

    def _process(self, item: Item, redelivered: bool) -> ItemResult:
        try:
            with _soft_limit_fails_as_timeout(item, self.queue_label, self._soft_limit()):
                storage = self.storage(item.integration)
                return process_item(
                    item, app.settings, storage, raise_transient=True, redelivered=redelivered
                )
        except TransientError as exc:
            return self._retry_or_fail(item, exc)
        except (ItemTimeout, SoftTimeLimitExceeded) as exc:
            log.warning("item %s (%s): timeout: %s", item.item_id, item.key, exc)
            return ItemResult.failure(item, Reason.TIMEOUT, str(exc) or "time limit exceeded")

    def _soft_limit(self) -> float | None:
        limits = self.request.timelimit or (None, None)
        return limits[1] if limits[1] is not None else self.soft_time_limit

    def _retry_or_fail(self, item: Item, exc: TransientError) -> ItemResult:
        settings = app.settings.worker
        retries = self.request.retries
        if retries >= settings.max_retries:
            log.error("item %s (%s): giving up after %d retries: %s", item.item_id, item.key,
                      retries, exc)  # fmt: skip
            return ItemResult.failure(
                item,
                Reason.STORAGE_UNAVAILABLE,
                f"{exc} (gave up after {retries} retries; enqueue it again once the storage"
                " service is back)",
            )
        delay = backoff_seconds(
            retries, settings.retry_backoff_seconds, settings.retry_backoff_max_seconds
        )
        log.warning(
            "item %s (%s): transient fault, retry %d of %d in %.1f s: %s",
            item.item_id,
            item.key,
            retries + 1,
            settings.max_retries,
            delay,
            exc,
        )
        if self._counted():
            self.counter().clear_later(f"{self.request.id}:{retries}")
        raise self.retry(exc=exc, countdown=delay, max_retries=settings.max_retries)


def refused(raw: Any, exc: Exception) -> ItemResult:
    """The `invalid_item` result of a message whose item SPEC 3 refuses; nothing was requested.
    Its fields echo what was sent, cut short."""
    fields = raw if isinstance(raw, dict) else {}

    def echo(name: str, default: str = "") -> str:
        return str(fields.get(name, default))[:1024]

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        message = f"{'.'.join(map(str, first['loc'])) or 'item'}: {first['msg']}"
    else:
        message = str(exc)
    log.warning("refused an item: %s", message)
    return ItemResult(
        item_id=echo("item_id"),
        slot=echo("slot", "0"),
        integration=echo("integration"),
        key=echo("key"),
        type=echo("type", "auto"),
        status=Status.FAILED,
        reason=Reason.INVALID_ITEM,
        message=f"invalid item: {message}; fix the registration and enqueue it again",
    )


class _SoftLimit:
    """The pool's soft-limit signal (SIGUSR1) fails the running item as `timeout`: its handler
    is installed once per pool process, and each item only names itself, as swapping signal
    handlers twice per item costs a small image more than anything else the task adds."""

    running: tuple[Item, str, float] | None = None
    """The item being processed, its queue and its soft limit in seconds."""
    installed_in: int | None = None
    """The process whose handler this is (a forked pool process inherits the flag)."""

    @classmethod
    def handle(cls, signum: int, frame: Any) -> None:
        if cls.running is None:  # between items: what the pool's own handler does
            raise SoftTimeLimitExceeded()
        item, queue, seconds = cls.running
        raise ItemTimeout(
            f"{item.key}: still processing after the {queue} queue's soft time limit of"
            f" {seconds:.0f} s; raise limits.queue_timeout_seconds for {queue!r} (or"
            " limits.item_timeout_seconds) if items this large are expected"
        )


@contextmanager
def _soft_limit_fails_as_timeout(item: Item, queue: str, seconds: float | None) -> Iterator[None]:
    """Turn the pool's soft-limit signal into `ItemTimeout`, a permanent error the pipeline
    reports as `timeout` (its catch-all would otherwise call Celery's exception corrupt media).
    """
    sig = getattr(signal, "SIGUSR1", None)
    if not seconds or sig is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    if _SoftLimit.installed_in != os.getpid():
        # After billiard's own handler, which it installs once the process initializer ran.
        signal.signal(sig, _SoftLimit.handle)
        _SoftLimit.installed_in = os.getpid()
    _SoftLimit.running = (item, queue, seconds)
    try:
        yield
    finally:
        _SoftLimit.running = None


@signals.worker_process_shutdown.connect(weak=False, dispatch_uid="mw-counter-flush")
def _flush_delivery_clears(**_: Any) -> None:
    """The last item's clear would otherwise wait for its 14-day expiry."""
    if ItemTask._counter is None:
        return
    try:
        ItemTask._counter.flush()
    except Exception as exc:  # the keys expire on their own; shutting down matters more
        log.warning("could not clear finished delivery counts: %s", exc)
