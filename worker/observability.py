"""Logs and metrics for operators: JSON log lines with no secrets, and Prometheus metrics.

Logs: `setup_logging(json_lines=True)` puts one JSON object per line on stderr, each carrying the
item id, integration and key of the item being processed (from `item_context`), and the stage and
duration where a stage ends. `SecretFilter` scrubs every record on the way out: signed-URL query
strings (S3 `X-Amz-Signature`/`X-Amz-Credential`, Azure SAS `sig`), connection strings, account
keys and AWS access key ids never reach a log line, whoever logged them.

Metrics: counters and histograms in one registry (`REGISTRY`), served by
`start_metrics_server(port)`. With Celery's prefork pool each child process counts for itself:
set `PROMETHEUS_MULTIPROC_DIR` to a shared empty folder and the server aggregates all of them
(prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from prometheus_client import (
    REGISTRY as DEFAULT_REGISTRY,
)
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
)

from worker.identifiers import escape_controls
from worker.storage.registry import sdk_loggers

log = logging.getLogger(__name__)

# --- secrets -------------------------------------------------------------------------------

REDACTED = "<redacted>"

_SIGNED_PARAMS = ("x-amz-signature=", "x-amz-credential=", "x-amz-security-token=", "signature=",
                  "sig=", "awsaccesskeyid=")  # fmt: skip
_NAMED_SECRETS = ("aws_secret_access_key", "secret_access_key", "aws_session_token",
                  "account_key", "azure_storage_key", "password")  # fmt: skip

# Each pattern, its replacement, and the texts (casefolded) of which a line must hold one for
# the pattern to match at all, or () to always run it. Testing for a few substrings costs a
# hundredth of these case-insensitive alternations, and a worker formats lines for every item.
_SECRET_PATTERNS: list[tuple[re.Pattern[str], str, tuple[str, ...]]] = [
    # The whole query of a signed URL: S3 presign (v4 and v2) or an Azure SAS. Everything after
    # `?` is a credential in such a URL, so it goes as one piece.
    (
        re.compile(
            r"\?(?=[^\s\"'<>]*\b(?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token"
            r"|Signature|AWSAccessKeyId|sig)=)[^\s\"'<>]*",
            re.IGNORECASE,
        ),
        "?" + REDACTED,
        (),
    ),
    # Loose signature parameters (a URL cut in two, a header echoed by an SDK).
    (
        re.compile(
            r"((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|sig|"
            r"AWSAccessKeyId|SharedAccessSignature|AccountKey|skoid|sktid)=)[^&\s\"';,]+",
            re.IGNORECASE,
        ),
        r"\1" + REDACTED,
        (*_SIGNED_PARAMS, "sharedaccesssignature=", "accountkey=", "skoid=", "sktid="),
    ),
    # Authorization headers: SigV4 `Credential=AKIA.../...`, Azure `SharedKey account:sig`.
    (
        re.compile(r"(Authorization['\"]?\s*[:=]\s*['\"]?)[^'\"\n]+", re.IGNORECASE),
        r"\1" + REDACTED,
        ("authorization",),
    ),
    # AWS access key ids (long-term and temporary).
    (
        re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{12,}\b"),
        REDACTED,
        ("akia", "asia", "aroa", "aida"),
    ),
    # Named secrets as they appear in reprs and dicts.
    (
        re.compile(
            r"((?:aws_secret_access_key|secret_access_key|aws_session_token|account_key|"
            r"AZURE_STORAGE_KEY|password)['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+",
            re.IGNORECASE,
        ),
        r"\1" + REDACTED,
        _NAMED_SECRETS,
    ),
]
# Case-insensitive matching also pairs `i` with the dotted and dotless capital/small I, which
# casefold() leaves apart; the long s and the Kelvin sign it already folds to s and k.
_FOLD_I = str.maketrans({"\u0130": "i", "\u0131": "i"})

_EXTRA_SECRETS: set[str] = set()


def add_secret(value: str | None) -> None:
    """Scrub this exact value from every log line (credentials the process was handed)."""
    if value and len(value) >= 8:
        _EXTRA_SECRETS.add(value)


def _known_secrets_from_env() -> None:
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY"):
        add_secret(os.environ.get(name))


# Any needle of any pattern: one search tells an ordinary line from one worth a closer look.
_ANY_NEEDLE = re.compile("|".join(re.escape(n) for _, _, needles in _SECRET_PATTERNS
                                  for n in needles))  # fmt: skip


def _fold(text: str) -> str:
    # casefold() is lower() on ASCII text, at a fortieth of the cost of translate + casefold.
    return text.lower() if text.isascii() else text.translate(_FOLD_I).casefold()


def scrub(text: str) -> str:
    """The text with every signature, credential and key it holds replaced by `<redacted>`."""
    folded = _fold(text)
    suspect = _ANY_NEEDLE.search(folded) is not None
    for pattern, replacement, needles in _SECRET_PATTERNS:
        if needles and not (suspect and any(needle in folded for needle in needles)):
            continue
        cleaned = pattern.sub(replacement, text)
        if cleaned != text:
            text, folded = cleaned, _fold(cleaned)
    for secret in _EXTRA_SECRETS:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class SecretFilter(logging.Filter):
    """Scrubs the formatted message and any exception text of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


# --- item context and JSON lines -------------------------------------------------------------

_CONTEXT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "mw_item", default=None
)
CONTEXT_FIELDS = ("item_id", "integration", "key", "slot", "type")
RECORD_FIELDS = ("stage", "duration_ms", "reason", "status", "bytes")


@contextmanager
def item_context(**fields: str) -> Iterator[None]:
    """Every log line inside names this item (item_id, integration, key...)."""
    token = _CONTEXT.set({**(_CONTEXT.get() or {}), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the item context and any of
    `RECORD_FIELDS` passed through `extra=`. Scrubbed again as a whole, so nothing a field
    carries can leak either."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_CONTEXT.get() or {})
        for name in (*CONTEXT_FIELDS, *RECORD_FIELDS):
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return scrub(json.dumps(line, ensure_ascii=False, default=str))


class PlainFormatter(logging.Formatter):
    """Plain text, one line per message: control characters a key may hold are escaped, so a
    key cannot forge a log line (tracebacks, added after the message, keep their lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def setup_logging(
    json_lines: bool = True, level: int = logging.INFO, stream: Any = None
) -> logging.Handler:
    """Replace the root logger's handlers with one scrubbed handler (JSON or plain text)."""
    _known_secrets_from_env()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(SecretFilter())
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(PlainFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # SDKs log request details (with signatures) at DEBUG; keep them at WARNING or above.
    for noisy in ("urllib3", *sdk_loggers()):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return handler


# --- metrics -------------------------------------------------------------------------------

STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
WAIT_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)


class Metrics:
    """The worker's metrics, registered once per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.items = Counter(
            "mediaworker_items",
            "Items finished, by media type and outcome (ok, failed, missing_assets, retry).",
            ["type", "outcome"],
            registry=registry,
        )
        self.failures = Counter(
            "mediaworker_item_failures",
            "Failed items by reason code (SPEC section 9).",
            ["reason"],
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "mediaworker_stage_seconds",
            "Time spent in each pipeline stage (plan, fetch, process, ...).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.item_seconds = Histogram(
            "mediaworker_item_seconds",
            "Wall time per item, by media type.",
            ["type"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.bytes_read = Counter(
            "mediaworker_bytes_read", "Source bytes read from storage.", ["type"], registry=registry
        )
        self.bytes_written = Counter(
            "mediaworker_bytes_written",
            "Rendition bytes written to storage.",
            ["type"],
            registry=registry,
        )
        self.queue_wait = Histogram(
            "mediaworker_queue_wait_seconds",
            "Time from enqueueing an item to a worker starting it, by queue.",
            ["queue"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )


METRICS = Metrics(DEFAULT_REGISTRY)
REGISTRY = DEFAULT_REGISTRY


@functools.cache
def _labelled(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, looked up once: the same child every time, without the lock
    and the label checks `labels()` goes through on every sample (several per item)."""
    return metric.labels(*values)


def observe_stage(stage: str, seconds: float) -> None:
    """A pipeline stage ended: one histogram sample, and a DEBUG line with its duration (at
    INFO a worker logs its items, not their stages: a formatted, scrubbed line costs a small
    image's worker a noticeable share of its time)."""
    _labelled(METRICS.stage_seconds, stage).observe(seconds)
    log.debug(
        "stage %s took %.1f ms",
        stage,
        seconds * 1000,
        extra={"stage": stage, "duration_ms": round(seconds * 1000, 1)},
    )


def observe_bytes(item_type: str, read: int, written: int) -> None:
    _labelled(METRICS.bytes_read, item_type).inc(max(0, read))
    _labelled(METRICS.bytes_written, item_type).inc(max(0, written))


def observe_queue_wait(queue: str, enqueued_at: float | None, now: float | None = None) -> None:
    """Record how long an item waited in `queue`; `enqueued_at` is a Unix time (or None)."""
    if enqueued_at is None:
        return
    wait = max(0.0, (now if now is not None else time.time()) - float(enqueued_at))
    _labelled(METRICS.queue_wait, queue or "default").observe(wait)


def observe_result(item_type: str, status: str, reason: str | None, seconds: float) -> None:
    _labelled(METRICS.items, item_type, status).inc()
    _labelled(METRICS.item_seconds, item_type).observe(seconds)
    if reason:
        _labelled(METRICS.failures, reason).inc()


P = ParamSpec("P")
R = TypeVar("R")


def observed_item(func: Callable[P, R]) -> Callable[P, R]:
    """Wraps `process_item(item, ...) -> ItemResult`: every log line inside names the item, and
    the outcome, reason and duration are counted and logged once at the end. A transient error
    that escapes (for the queue to retry) counts as outcome `retry`."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        item: Any = args[0] if args else kwargs["item"]
        start = time.perf_counter()
        with item_context(
            item_id=item.item_id, integration=item.integration, key=item.key, slot=item.slot
        ):
            try:
                result: Any = func(*args, **kwargs)
            except Exception:
                seconds = time.perf_counter() - start
                observe_result(item.type.value, "retry", None, seconds)
                raise
            seconds = time.perf_counter() - start
            status, reason = str(result.status.value), result.reason
            observe_result(result.type, status, reason.value if reason else None, seconds)
            log.info(
                "item finished: %s%s",
                status,
                f" ({reason.value})" if reason else "",
                extra={
                    "status": status,
                    "reason": reason.value if reason else None,
                    "type": result.type,
                    "duration_ms": round(seconds * 1000, 1),
                },
            )
            return result  # type: ignore[no-any-return]

    return wrapper


# --- serving -------------------------------------------------------------------------------


def metrics_registry() -> CollectorRegistry:
    """The registry to serve: this process's, or every process's in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> tuple[Any, Any]:
    """Serve `/metrics` on `addr:port` from a background thread; returns (server, thread) so a
    caller (a test) can `server.shutdown()`. Port 0 picks a free port: `server.server_port`."""
    server, thread = start_http_server(port, addr=addr, registry=metrics_registry())
    log.info("metrics on http://%s:%d/metrics", addr, server.server_port)
    return server, thread


# Celery: events (so Flower sees tasks; off unless `worker.task_events`, as each costs a broker
# message per task state) and the queue-wait clock. Applied by the Celery app.
CELERY_EVENT_SETTINGS: dict[str, Any] = {
    "worker_send_task_events": True,
    "task_send_sent_event": True,
}
ENQUEUED_AT_HEADER = "mw_enqueued_at"
CELERY_TRACE_LOGGER = "celery.app.trace"


CELERY_RECEIVED_LOGGER = "celery.worker.strategy"


def quiet_task_trace(level: int) -> None:
    """Above DEBUG, Celery does not build its per-task INFO lines at all, so that an item gets
    one line at INFO, `item finished` (status, reason, duration, task id): Celery's
    `Task ... received` line in the main process, `Task ... succeeded in ...: <result>` and
    `Task ... retry: ...` in the pool process say nothing that line and the task's own retry
    warning do not, and each costs a small image a noticeable share of its time. Its failure
    lines (ERROR) still show."""
    if level > logging.DEBUG:
        for name in (CELERY_TRACE_LOGGER, CELERY_RECEIVED_LOGGER):
            logging.getLogger(name).setLevel(logging.WARNING)


def task_trace_shown() -> bool:
    """Whether Celery's `succeeded` line is logged (the worker runs at DEBUG)."""
    return logging.getLogger(CELERY_TRACE_LOGGER).isEnabledFor(logging.INFO)


def install_celery_hooks() -> None:
    """Stamp each published task with its enqueue time, and observe the wait when a worker
    starts it. Safe to call more than once."""
    from celery import signals

    signals.before_task_publish.connect(_stamp_enqueued_at, weak=False, dispatch_uid="mw-stamp")
    signals.task_prerun.connect(_observe_wait, weak=False, dispatch_uid="mw-wait")


def _stamp_enqueued_at(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers.setdefault(ENQUEUED_AT_HEADER, time.time())


def _observe_wait(task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    if request is None:
        return
    stamp = getattr(request, ENQUEUED_AT_HEADER, None)
    if stamp is None:
        stamp = (getattr(request, "headers", None) or {}).get(ENQUEUED_AT_HEADER)
    info = getattr(request, "delivery_info", None) or {}
    observe_queue_wait(str(info.get("routing_key") or "default"), stamp)


def enable_for_worker(app: Any, metrics_port: int | None, events: bool = False) -> None:
    """One call from the Celery app: task events (Flower) when `events`, the queue-wait hooks,
    and the metrics server started once in the worker's main process when `metrics_port` is
    set."""
    from celery import signals

    if events:
        app.conf.update(CELERY_EVENT_SETTINGS)
    install_celery_hooks()
    if metrics_port is None:
        return

    def _serve(**_: Any) -> None:
        start_metrics_server(metrics_port)

    signals.worker_init.connect(_serve, weak=False, dispatch_uid="mw-metrics")
