"""Re-processing a bucket after a pipeline change or an outage (`mediaworker reprocess`).

First every commit marker under the prefix is indexed by the source key it names (see
`worker.markers`), so items are found whatever their item id and slot. Then the bucket is listed
page by page and each key flows through: which item is it (none for our renditions and for keys
of no registered extension; a multi-file source is one item: a MIRAX slide its `.mrxs`, a DICOM
series its folder, see `worker.kinds.registry.ItemGrouper`; `.tif` and `.tiff` are typed by their
first bytes, one ranged read, since a pyramidal TIFF is a slide) -> does it pass the filters
(`--under`, `--type`, `--since`) -> is each item made from it up to date (`markers.is_current`)
-> into the current batch, enqueued when full.
Memory stays flat in the bucket's size but for the marker index (a few fields per item, capped):
one page, one batch and a bounded window of reads are held at a time (plus the folders of the
multi-file items seen, to recognise their files).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from worker.bounded import bounded_map
from worker.config import Integration
from worker.errors import MediaWorkerError
from worker.fetch import resolve
from worker.identifiers import key_problem, printable
from worker.items import Item, ItemType, default_item_id
from worker.kinds import SNIFF_BYTES, registry
from worker.layout import SlotLayout
from worker.markers import Marked, MarkerIndex, build_marker_index, is_current, read_marker
from worker.storage.base import ObjectInfo, ReadableStorage

log = logging.getLogger(__name__)

EnqueueFn = Callable[[list[Item]], list[str]]
ProgressFn = Callable[["ReprocessSummary"], None]

DEFAULT_BATCH = 500
MARKER_WINDOW = 32
"""Keys being typed and checked at once: enough to hide request latency, bounded for memory."""


def type_of_key(key: str) -> ItemType | None:
    """The type a key's extension says (the registry's one table); for formats typed by their
    content (`.tif`, `.tiff`), what they usually are."""
    found = registry.kind_of_key(key)
    return ItemType(found) if found is not None else None


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
    """Decides, key by key in listing order, which item a listed key stands for, if any."""

    def __init__(self, integration: Integration) -> None:
        prefix = re.escape(integration.prefix.strip("/"))
        # `<prefix>/<item_id>/files/<slot>/...` and `<prefix>/registration.jsonl` are ours.
        self._ours = re.compile(rf"^{prefix}/(?:[^/]+/files/[^/]+/|registration\.jsonl$)")
        self._items = registry.ItemGrouper()

    def item_key(self, key: str) -> str | None:
        """The key itself, the item it stands for (a DICOM series' folder), or None: ours, not
        media, or a part of a multi-file item already seen (a MIRAX slide's data)."""
        if self._ours.match(key) or type_of_key(key) is None:
            return None
        return self._items.item_key(key)


def _passes(info: ObjectInfo, item_type: ItemType | None, options: ReprocessOptions) -> bool:
    """`--type` (when the type is known before reading the source) and `--since`."""
    if item_type is not None and not _type_passes(item_type, options):
        return False
    if options.since is not None:
        modified = info.last_modified
        if modified is None:
            return True  # unknown age: redo rather than silently skip
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=UTC)
        return modified >= options.since
    return True


@dataclass
class _Decision:
    """What became of one listed source: its type (None: not a source after all), the items
    to enqueue, and how many of its items are up to date."""

    item_type: ItemType | None
    items: list[Item] = field(default_factory=list)
    up_to_date: int = 0


class _Planner:
    """Types a source and decides which of its items to redo; runs in the pool."""

    def __init__(
        self,
        storage: ReadableStorage,
        integration: Integration,
        options: ReprocessOptions,
        markers: MarkerIndex | None,
    ) -> None:
        self.storage, self.integration, self.options = storage, integration, options
        self.markers = markers

    def decide(self, candidate: tuple[str, ObjectInfo]) -> _Decision:
        key, info = candidate
        item_type = self._type(key)
        if item_type is None or not _type_passes(item_type, self.options):
            return _Decision(item_type)
        decision = _Decision(item_type)
        source = self._source(key, info)
        for marked in self._marked(source.key, key) or [None]:
            if marked is not None and not self.options.force and is_current(marked, source):
                decision.up_to_date += 1
            else:
                decision.items.append(self._item(key, item_type, marked))
        return decision

    def _type(self, key: str) -> ItemType | None:
        if not registry.needs_content(key):
            return type_of_key(key)
        from worker.media.sniff import sniff

        return sniff(self.storage.read_head(key, SNIFF_BYTES), key)

    def _source(self, key: str, info: ObjectInfo) -> ObjectInfo:
        """The object an item registers: the listed one, or for a folder item (a DICOM series)
        the one its resolution names, whose marker and ETag tell whether it is up to date."""
        if key == info.key:
            return info
        try:
            return resolve(self.storage, key).main
        except MediaWorkerError as exc:
            log.info("%s: could not resolve it (%s); the worker will report it", key, exc)
            return info

    def _marked(self, source_key: str, item_key: str) -> list[Marked]:
        """The markers made from `source_key`; without an index, that of the item key's
        default id."""
        if self.markers is not None:
            return self.markers.get(source_key)
        if self.options.force:
            return []
        layout = SlotLayout(self.integration.prefix, default_item_id(item_key))
        found = read_marker(self.storage, layout)
        return [found[1]] if found is not None and found[0] == source_key else []

    def _item(self, key: str, item_type: ItemType, marked: Marked | None) -> Item:
        name = self.integration.name
        if marked is None:
            return Item(integration=name, key=key, type=item_type)
        return Item(
            integration=name,
            key=key,
            type=item_type,
            item_id=marked.item_id,
            slot=marked.slot,
            fps=marked.fps,
        )


def _type_passes(item_type: ItemType, options: ReprocessOptions) -> bool:
    return options.item_type is None or item_type == options.item_type


def reprocess(
    storage: ReadableStorage,
    integration: Integration,
    options: ReprocessOptions,
    enqueue: EnqueueFn,
    progress: ProgressFn | None = None,
) -> ReprocessSummary:
    """List, filter, skip what is up to date (unless `force`), enqueue the rest in batches."""
    summary = ReprocessSummary(dry_run=options.dry_run)
    # Even with --force: the index is what finds items under an id other than the default.
    markers = _marker_index(storage, integration.prefix)
    planner = _Planner(storage, integration, options, markers)
    batch: list[Item] = []

    def flush() -> None:
        if batch and not options.dry_run:
            summary.task_ids += len(enqueue(list(batch)))
        batch.clear()

    with ThreadPoolExecutor(8, thread_name_prefix="reprocess") as pool:
        candidates = _candidates(storage, integration, options, summary)
        for _, decision in bounded_map(pool, planner.decide, candidates, MARKER_WINDOW):
            _count(summary, decision)
            batch.extend(decision.items)
            if len(batch) >= options.batch_size:
                flush()
            _tick(progress, summary)
    flush()
    log.info("reprocess %s: %s", integration.name, summary.as_dict())
    return summary


def _count(summary: ReprocessSummary, decision: _Decision) -> None:
    if decision.item_type is None:
        summary.not_sources += 1
    elif not decision.items and not decision.up_to_date:
        summary.filtered_out += 1
    else:
        summary.up_to_date += decision.up_to_date
        summary.enqueued += len(decision.items)
        summary.by_type[decision.item_type.value] += len(decision.items)


def _marker_index(storage: ReadableStorage, prefix: str) -> MarkerIndex | None:
    try:
        return build_marker_index(storage, prefix)
    except Exception as exc:  # without the index, each key's default marker is read instead
        log.info("could not index the markers under %s/ (%s); reading each key's own", prefix, exc)
        return None


def _candidates(
    storage: ReadableStorage,
    integration: Integration,
    options: ReprocessOptions,
    summary: ReprocessSummary,
) -> Iterator[tuple[str, ObjectInfo]]:
    sources = _SourceFilter(integration)
    for info in storage.list(options.under):
        summary.listed += 1
        key = sources.item_key(info.key)
        sniffed = key is not None and registry.needs_content(key)
        problem = key_problem(info.key)
        if problem is not None:
            # Never enqueued: SPEC 3 refuses it (a worker would report `invalid_item`).
            log.warning("key %s is left out: it %s", printable(info.key), problem)
            summary.not_sources += 1
        elif key is None:
            summary.not_sources += 1
        elif not _passes(info, None if sniffed else type_of_key(key), options):
            summary.filtered_out += 1
        else:
            yield key, info


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
