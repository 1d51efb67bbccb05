"""RabbitMQ's consumer timeout against our time limits: refuse to start rather than loop.

RabbitMQ closes the channel of a consumer that holds an unacknowledged message longer than its
`consumer_timeout` (30 minutes by default) and hands the message out again. With late
acknowledgement a worker holds each message for as long as its item runs, and a retry waits its
countdown in the worker too, so a video longer than the timeout would run again and again.

Before 3.12 the timeout is one setting for the whole broker (`consumer_timeout` in
`rabbitmq.conf`) that no client can read or change; 3.12 adds a per-queue `consumer-timeout`
policy. Either way only the operator can set it, so the worker is told the value
(`broker.consumer_timeout_seconds`, default RabbitMQ's 1800 s) and refuses to start, with one
line naming the setting, when a queue it consumes could hold an item longer than that.
"""

from __future__ import annotations

import math

from worker.celery_app import time_limits
from worker.config import Settings

RABBITMQ_DEFAULT_CONSUMER_TIMEOUT_SECONDS = 1800
MARGIN_SECONDS = 60
"""Between the hard limit stopping an item and its message being acknowledged."""


def is_amqp(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("amqp://", "amqps://", "pyamqp://"))


def hold_seconds(settings: Settings, queue: str) -> int:
    """The longest a worker holds one unacknowledged message of `queue`: the hard time limit,
    the longest retry countdown (the retried message waits in the worker) and a margin."""
    _, hard = time_limits(settings, queue)
    backoff = settings.worker.retry_backoff_max_seconds
    return math.ceil(hard + backoff + MARGIN_SECONDS)


def consumer_timeout_problem(settings: Settings, queues: list[str]) -> str | None:
    """One line naming the setting to change, when RabbitMQ would redeliver a running item."""
    if not is_amqp(settings.broker.url):
        return None
    timeout = settings.broker.consumer_timeout_seconds
    if timeout is None:
        timeout = RABBITMQ_DEFAULT_CONSUMER_TIMEOUT_SECONDS
    if timeout == 0:
        return None  # the operator turned the timeout off
    need, queue = max((hold_seconds(settings, q), q) for q in queues)
    if timeout >= need:
        return None
    told = "RabbitMQ's default"
    if settings.broker.consumer_timeout_seconds:
        told = "broker.consumer_timeout_seconds"
    return (
        f"RabbitMQ's consumer_timeout ({timeout} s, {told}) is shorter than a worker may hold a"
        f" {queue} item ({need} s: hard time limit + retry backoff + margin), so long items would"
        f" be delivered again and again: set consumer_timeout = {need * 1000} (ms) or more in"
        f" rabbitmq.conf (or a consumer-timeout policy on the queue, RabbitMQ 3.12+) and"
        f" broker.consumer_timeout_seconds = {need}, or lower limits.queue_timeout_seconds"
        f" for {queue!r}"
    )
