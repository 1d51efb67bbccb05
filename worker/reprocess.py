"""Re-processing a bucket after a pipeline change or an outage (`mediaworker reprocess`).

The bucket is listed page by page and each key flows through: is it a source at all (not one of
our renditions, not a file inside a MIRAX slide's data folder, a media extension) -> does it pass
the filters (`--under`, `--type`, `--since`) -> is it already up to date (its `metadata.json`
names the same source ETag and pipeline version) -> into the current batch, enqueued when full.
Memory stays flat whatever the bucket's size: one page, one batch and a bounded window of marker
reads are held at a time (plus the names of MIRAX slides seen, to recognise their folders).
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from worker import PIPELINE_VERSION
from worker.config import Integration
from worker.errors import NotFound
from worker.identifiers import key_problem, printable
from worker.items import Item, ItemType, default_item_id
from worker.layout import SlotLayout
from worker.payloads import Metadata
from worker.storage.base import ObjectInfo, ReadableStorage

log = logging.getLogger(__name__)

EnqueueFn = Callable[[list[Item]], list[str]]
ProgressFn = Callable[["ReprocessSummary"], None]

DEFAULT_BATCH = 500
MARKER_WINDOW = 32
"""Marker reads in flight at once: enough to hide request latency, bounded for memory."""
MAX_INDEXED_ITEMS = 200_000
"""Item folders remembered to skip marker reads for never-processed keys (about 20 MB); a
prefix holding more falls back to one marker read per key."""

EXTENSIONS: dict[str, ItemType] = {
    **dict.fromkeys(
        ("jpg", "jpeg", "png", "gif", "webp", "bmp", "tif", "tiff", "heic", "heif", "avif"),
        ItemType.IMAGE,
    ),
    **dict.fromkeys(
        ("mp4", "mov", "m4v", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "wmv", "flv", "3gp"),
        ItemType.VIDEO,
    ),
    **dict.fromkeys(
        ("mrxs", "svs", "ndpi", "scn", "vms", "vmu", "bif", "svslide", "qptiff"), ItemType.SLIDE
    ),
}
"""Listing cannot sniff content (a read per key), so sources are recognised by extension.
Generic TIFFs count as images; a pyramidal TIFF slide is reprocessed with `--type slide`."""


def type_of_key(key: str) -> ItemType | None:
    ext = posixpath.splitext(key)[1].lower().lstrip(".")
    return EXTENSIONS.get(ext)


@dataclass
class ReprocessSummary:
    listed: int = 0
    """Every key the listing returned under `--under`."""
    not_sources: int = 0
    """Our own renditions, MIRAX data files, keys with no media extension and keys SPEC 3
    refuses (logged)."""
    filtered_out: int = 0
    """Sources left out by `--type` or `--since`."""
    up_to_date: int = 0
    enqueued: int = 0
    """Sent to the queue (with `--dry-run`: would have been)."""
    by_type: Counter[str] = field(default_factory=Counter)
    """Enqueued items by type."""
    task_ids: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "listed": self.listed,
            "not_sources": self.not_sources,
            "filtered_out": self.filtered_out,
            "skipped_up_to_date": self.up_to_date,
            "enqueued": self.enqueued,
            "by_type": dict(sorted(self.by_type.items())),
            "dry_run": self.dry_run,
        }


@dataclass(frozen=True)
class ReprocessOptions:
    under: str = ""
    item_type: ItemType | None = None
    since: datetime | None = None
    force: bool = False
    dry_run: bool = False
    batch_size: int = DEFAULT_BATCH


class _SourceFilter:
    """Decides, key by key in listing order, whether a listed key is a source item."""

    def __init__(self, integration: Integration) -> None:
        prefix = re.escape(integration.prefix.strip("/"))
        # `<prefix>/<item_id>/files/<slot>/...` and `<prefix>/registration.jsonl` are ours.
        self._ours = re.compile(rf"^{prefix}/(?:[^/]+/files/[^/]+/|registration\.jsonl$)")
        self._mirax_dirs: set[str] = set()

    def source_type(self, key: str) -> ItemType | None:
        if self._ours.match(key):
            return None
        folder = posixpath.dirname(key)
        if folder and folder in self._mirax_dirs:
            return None
        item_type = type_of_key(key)
        if key.lower().endswith(".mrxs"):
            # `NAME.mrxs` lists before `NAME/...` ('.' < '/'), so its folder is known in time.
            self._mirax_dirs.add(key[: -len(".mrxs")])
        return item_type


def _passes(info: ObjectInfo, item_type: ItemType, options: ReprocessOptions) -> bool:
    if options.item_type is not None and item_type != options.item_type:
        return False
    if options.since is not None:
        modified = info.last_modified
        if modified is None:
            return True  # unknown age: redo rather than silently skip
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=UTC)
        return modified >= options.since
    return True


def item_folder_index(storage: ReadableStorage, prefix: str) -> set[str] | None:
    """The item ids that have a folder under `prefix`, from a delimited listing (one entry per
    item, however many renditions it has), so keys never processed cost no request at all.
    None when the backend cannot list folders cheaply or there are too many to hold."""
    inner = getattr(storage, "_inner", storage)
    from worker.storage.s3 import S3Storage

    if not isinstance(inner, S3Storage):
        return None
    folders: set[str] = set()
    pages = inner.client.get_paginator("list_objects_v2").paginate(
        Bucket=inner.bucket, Prefix=f"{prefix}/", Delimiter="/"
    )
    for page in pages:
        for entry in page.get("CommonPrefixes", []):
            folders.add(entry["Prefix"][len(prefix) + 1 :].rstrip("/"))
        if len(folders) > MAX_INDEXED_ITEMS:
            log.info("more than %d item folders: reading each marker instead", MAX_INDEXED_ITEMS)
            return None
    return folders


def is_up_to_date(
    storage: ReadableStorage, prefix: str, info: ObjectInfo, folders: set[str] | None = None
) -> bool:
    """Whether the key's commit marker names this very source (ETag) and pipeline version."""
    item_id = default_item_id(info.key)
    if folders is not None and item_id not in folders:
        return False
    marker = SlotLayout(prefix, item_id).metadata_key
    try:
        metadata = Metadata.model_validate_json(storage.read_bytes(marker))
    except NotFound:
        return False
    except (ValidationError, ValueError):
        log.warning("%s: unreadable commit marker %s; the item is redone", info.key, marker)
        return False
    return (
        metadata.pipeline_version == PIPELINE_VERSION
        and metadata.source.key == info.key
        and bool(info.etag)
        and _same_etag(metadata.source.etag, info.etag)
    )


def _same_etag(a: str | None, b: str | None) -> bool:
    return bool(a and b) and str(a).strip('"') == str(b).strip('"')


def _windowed(
    pool: ThreadPoolExecutor,
    items: Iterable[tuple[ObjectInfo, ItemType]],
    check: Callable[[ObjectInfo], bool],
    window: int,
) -> Iterator[tuple[ObjectInfo, ItemType, bool]]:
    """`check` on each item in a thread pool, at most `window` in flight, results in order
    (`Executor.map` would submit the whole listing at once)."""
    pending: deque[tuple[ObjectInfo, ItemType, Future[bool]]] = deque()
    for info, item_type in items:
        pending.append((info, item_type, pool.submit(check, info)))
        if len(pending) >= window:
            first = pending.popleft()
            yield first[0], first[1], first[2].result()
    while pending:
        first = pending.popleft()
        yield first[0], first[1], first[2].result()


def reprocess(
    storage: ReadableStorage,
    integration: Integration,
    options: ReprocessOptions,
    enqueue: EnqueueFn,
    progress: ProgressFn | None = None,
) -> ReprocessSummary:
    """List, filter, skip what is up to date (unless `force`), enqueue the rest in batches."""
    summary = ReprocessSummary(dry_run=options.dry_run)
    candidates = _candidates(storage, integration, options, summary)
    batch: list[Item] = []

    def flush() -> None:
        if batch and not options.dry_run:
            summary.task_ids += len(enqueue(list(batch)))
        batch.clear()

    def take(info: ObjectInfo, item_type: ItemType) -> None:
        batch.append(Item(integration=integration.name, key=info.key, type=item_type))
        summary.enqueued += 1
        summary.by_type[item_type.value] += 1
        if len(batch) >= options.batch_size:
            flush()

    if options.force:
        for info, item_type in candidates:
            take(info, item_type)
            _tick(progress, summary)
    else:
        folders = _folder_index(storage, integration.prefix)
        with ThreadPoolExecutor(8, thread_name_prefix="reprocess") as pool:

            def check(info: ObjectInfo) -> bool:
                return is_up_to_date(storage, integration.prefix, info, folders)

            for info, item_type, done in _windowed(pool, candidates, check, MARKER_WINDOW):
                if done:
                    summary.up_to_date += 1
                else:
                    take(info, item_type)
                _tick(progress, summary)
    flush()
    log.info("reprocess %s: %s", integration.name, summary.as_dict())
    return summary


def _folder_index(storage: ReadableStorage, prefix: str) -> set[str] | None:
    try:
        return item_folder_index(storage, prefix)
    except Exception as exc:  # an optimisation only: without it every marker is read
        log.info("could not list item folders under %s/ (%s); reading each marker", prefix, exc)
        return None


def _candidates(
    storage: ReadableStorage,
    integration: Integration,
    options: ReprocessOptions,
    summary: ReprocessSummary,
) -> Iterator[tuple[ObjectInfo, ItemType]]:
    sources = _SourceFilter(integration)
    for info in storage.list(options.under):
        summary.listed += 1
        item_type = sources.source_type(info.key)
        problem = key_problem(info.key)
        if problem is not None:
            # Never enqueued: SPEC 3 refuses it (a worker would report `invalid_item`).
            log.warning("key %s is left out: it %s", printable(info.key), problem)
            summary.not_sources += 1
        elif item_type is None:
            summary.not_sources += 1
        elif not _passes(info, item_type, options):
            summary.filtered_out += 1
        else:
            yield info, item_type


def _tick(progress: ProgressFn | None, summary: ReprocessSummary) -> None:
    if progress is not None:
        progress(summary)


def parse_since(text: str) -> datetime:
    """`2024-05-01` or an ISO 8601 time; naive times are UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        from worker.errors import ConfigError

        raise ConfigError(
            f"--since {text!r} is not a date; use YYYY-MM-DD or an ISO 8601 time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
