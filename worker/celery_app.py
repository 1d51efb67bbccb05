"""The Celery app: queues, routing and the reliability settings of SPEC section 8.

One queue per media kind, `images`, `videos` and `slides` (each optionally prefixed by
`broker.queue_prefix`), one task per queue (`mediaworker.process_image`, ...), both named in the
kind's registry entry (`worker.kinds.registry`). Everything that
makes an item impossible to lose is configured here, in one place:

- late acknowledgement (`task_acks_late`): a message is acknowledged only once its item is done;
- `task_reject_on_worker_lost`: when a pool process dies mid-task, the message is requeued;
- prefetch of one (`worker_prefetch_multiplier=1`): a worker holds only what it is running;
- Redis `visibility_timeout` longer than the longest hard time limit, so an unacknowledged
  message comes back only when its worker is really gone;
- soft and hard time limits per queue (the soft one fails the item as `timeout`);
- `worker_cancel_long_running_tasks_on_connection_loss`: a broker that lost us will redeliver,
  so finishing the task here too would only do the work twice.

The broker is `broker.url` (or `$MEDIAWORKER_BROKER_URL`): `redis://...` or `amqp://...`. With
none, the embedded default keeps messages in folders under `broker.state_dir`
(`worker.embedded_broker`, kombu's folder format with in-flight messages kept until
acknowledged) and results in `file://` there: no server, one machine.

`celery -A worker.celery_app worker` reads the settings from `$MEDIAWORKER_CONFIG` (or
`./mediaworker.toml`); `mediaworker worker --config FILE` hands them over explicitly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from worker import embedded_broker
from worker.config import Settings, load_settings
from worker.kinds.registry import FALLBACK_QUEUE, QUEUES, TASK_NAMES, kind
from worker.observability import enable_for_worker
from worker.results import backend_url

log = logging.getLogger(__name__)


IMAGE_QUEUE = kind("image").queue
"""The queue of short tasks, where `worker.images_prefetch` applies."""
SOFT_LIMIT_SHARE = 0.9
"""The soft time limit (which fails the item as `timeout`) is this share of the hard one."""
VISIBILITY_MARGIN_SECONDS = 600
RESULT_EXPIRES_SECONDS = 7 * 24 * 3600


def queue_name(settings: Settings, queue: str) -> str:
    """The broker's name for one of QUEUES under this deployment's prefix."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; the queues are {', '.join(QUEUES)}")
    return f"{settings.broker.queue_prefix}{queue}"


def time_limits(settings: Settings, queue: str) -> tuple[float, float]:
    """(soft, hard) seconds for one queue."""
    limits = settings.limits
    hard = float(limits.queue_timeout_seconds.get(queue, limits.item_timeout_seconds))
    return round(hard * SOFT_LIMIT_SHARE, 3), hard


def visibility_timeout(settings: Settings) -> int:
    """Redis hands an unacknowledged message out again after this; it must outlast every task
    (retry countdowns included), or a slow item would run twice at once."""
    longest = max(time_limits(settings, q)[1] for q in QUEUES)
    wanted = int(longest + VISIBILITY_MARGIN_SECONDS)
    configured = settings.broker.visibility_timeout_seconds
    if configured is None:
        return wanted
    if configured <= longest:
        log.warning(
            "broker.visibility_timeout_seconds (%d) is not longer than the longest hard time"
            " limit (%.0f s): a task still running then is delivered a second time",
            configured,
            longest,
        )
    return configured


def state_dir(settings: Settings) -> Path:
    if settings.broker.state_dir is not None:
        return settings.broker.state_dir
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mediaworker"


def is_embedded(settings: Settings) -> bool:
    return not settings.broker.url


def is_redis(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("redis://", "rediss://", "redis+socket://"))


def result_backend(settings: Settings) -> str:
    broker = settings.broker
    if broker.result_backend:
        return broker.result_backend
    if is_embedded(settings):
        return (state_dir(settings) / "results").resolve().as_uri()
    if is_redis(broker.url):
        return str(broker.url)
    # RabbitMQ: replies go back to the sender (`enqueue --wait`); set `result_backend` to a
    # Redis or database URL to read results from elsewhere.
    return "rpc://"


def _embedded_broker(settings: Settings) -> dict[str, Any]:
    """One folder of message files shared by every process (`worker.embedded_broker`)."""
    root = state_dir(settings)
    folders = {"data_folder_in": root / "queue", "control_folder": root / "control"}
    for folder in (*folders.values(), root / "results"):
        folder.mkdir(parents=True, exist_ok=True)
    options = {name: str(path) for name, path in folders.items()}
    options["data_folder_out"] = options["data_folder_in"]
    return {
        # A host, or kombu warns of a default one.
        "broker_url": f"{embedded_broker.SCHEME}://localhost/",
        "broker_transport_options": options,
        # Broadcasts (remote control, gossip) need fanout, which a folder serves poorly.
        "worker_enable_remote_control": False,
    }


def _server_broker(settings: Settings) -> dict[str, Any]:
    url = str(settings.broker.url)
    options: dict[str, Any] = {}
    if is_redis(url):
        seconds = visibility_timeout(settings)
        # Sweep for expired unacknowledged messages a few times per timeout, not kombu's
        # default of every ~100 s, so a dead worker's item comes back soon after it expires.
        options.update(
            visibility_timeout=seconds,
            unacked_restore_interval=max(1, min(60, seconds // 4)),
            unacked_restore_throttle=1,
        )
    return {"broker_url": url, "broker_transport_options": options}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Every Celery setting, derived from the worker's settings."""
    names = {q: queue_name(settings, q) for q in QUEUES}
    results = result_backend(settings)
    config: dict[str, Any] = {
        # On Redis, results are stored in one round trip instead of Celery's two.
        "result_backend": backend_url(results) if is_redis(results) else results,
        "result_expires": RESULT_EXPIRES_SECONDS,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "broker_connection_retry_on_startup": True,
        # Queues declared the way Celery declares a queue named in `send_task(queue=...)`, so
        # producers that never import mediaworker declare exactly the same thing.
        "task_queues": [
            Queue(n, Exchange(n, type="direct"), routing_key=n) for n in names.values()
        ],
        "task_default_queue": names[FALLBACK_QUEUE],
        "task_routes": {TASK_NAMES[q]: {"queue": names[q]} for q in QUEUES},
        "task_annotations": {TASK_NAMES[q]: _limits_annotation(settings, q) for q in QUEUES},
        # The worker command installs the scrubbed JSON log handler; Celery must not replace it.
        "worker_hijack_root_logger": False,
    }
    config.update(_embedded_broker(settings) if is_embedded(settings) else _server_broker(settings))
    return config


def prefetch_multiplier(settings: Settings, queues: list[str]) -> int:
    """Messages held per pool process: one, except for a worker that consumes only `images`,
    where `worker.images_prefetch` may raise it (short tasks, so a held message waits seconds,
    far below the Redis visibility timeout; a video held behind another would wait hours)."""
    wanted = settings.worker.images_prefetch
    if wanted == 1:
        return 1
    if set(queues) != {IMAGE_QUEUE} or is_embedded(settings):
        # The embedded broker deletes a message file when it hands it out: every held message
        # would be lost with a killed worker, not only the running one.
        log.warning(
            "worker.images_prefetch = %d applies only to a worker with --queues images on Redis"
            " or RabbitMQ; this one holds one message per process",
            wanted,
        )
        return 1
    return wanted


def _limits_annotation(settings: Settings, queue: str) -> dict[str, float]:
    soft, hard = time_limits(settings, queue)
    return {"soft_time_limit": soft, "time_limit": hard}


class MediaWorkerApp(Celery):
    """A Celery app configured from `worker.config.Settings` when it is first used."""

    def __init__(self, *args: Any, settings: Settings | None = None, **kwargs: Any) -> None:
        self._mw_settings = settings
        super().__init__(*args, **kwargs)

    @property
    def settings(self) -> Settings:
        if self._mw_settings is None:
            self._mw_settings = load_settings()
        return self._mw_settings

    def use_settings(self, settings: Settings) -> None:
        """Hand the settings over before the app is first used (the `worker` command does)."""
        if self.configured:
            raise RuntimeError("the Celery app is already configured; pass settings earlier")
        self._mw_settings = settings

    def on_configure(self) -> None:
        # Celery calls this once, when its configuration is first read.
        self.config_from_object(celery_config(self.settings))
        worker = self.settings.worker
        enable_for_worker(self, worker.metrics_port, events=worker.task_events)


def make_app(settings: Settings) -> MediaWorkerApp:
    """A producer-side app for these settings (it sends tasks by name; it registers none)."""
    return MediaWorkerApp("mediaworker", settings=settings, set_as_current=False)


app = MediaWorkerApp("mediaworker", include=["tasks.items"])
"""The worker's app: `celery -A worker.celery_app worker`; the tasks of `tasks/` bind to it."""
