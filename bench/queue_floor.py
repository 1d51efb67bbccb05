"""Celery's own per-task floor: a bare app with mediaworker's reliability settings and a task
that returns its argument. `bench_queue.py` runs it as

    celery -A queue_floor worker --pool=prefork --concurrency=1 --queues=floor

with `FLOOR_BROKER_URL` and `FLOOR_RESULT_BACKEND` in the environment, next to a mediaworker
worker on the same broker, so the two are measured under the same load.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

QUEUE = "floor"
TASK = "floor.noop"

app = Celery(
    "floor",
    broker=os.environ.get("FLOOR_BROKER_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("FLOOR_RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
)


@app.task(name=TASK)
def noop(item: dict[str, Any]) -> dict[str, Any]:
    return item
