"""The item pipeline: every media type and every entry point goes through here.

Four named steps (`_Run`): plan (resolve the source once, check its size, tell its kind) ->
fetch it -> render (the kind's processor, outputs streaming to storage through a bounded sink) ->
commit (`metadata.json` last, the commit marker of SPEC 4.4, then remove what the earlier marker
listed and the new one does not). Nothing here knows a media kind or a source format: both come
from the registry (`worker.kinds.registry`).

A read-only integration (its `readonly` setting) never reaches the write path: `process_item`
hands it to verification, and its storage is a `ReadOnlyView` that has no write method at all.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from worker import PIPELINE_VERSION
from worker.assets import Asset
from worker.config import Integration, Settings
from worker.errors import (
    MediaWorkerError,
    PermanentError,
    TooLarge,
    TransientError,
    UnsupportedFormat,
    reason_of,
)
from worker.fetch import fetch, resolve
from worker.items import Item, ItemType
from worker.kinds import SNIFF_BYTES, MediaKind, PayloadInput, ProcessContext, Resolved, registry
from worker.layout import SlotLayout, source_folder, source_name
from worker.markers import is_current, marked_of, read_metadata
from worker.media import MediaResult, ProgressCallback, no_progress
from worker.observability import observe_bytes, observe_stage, observed_item
from worker.payloads import ItemResult, Metadata, Payload, SourceInfo, Status
from worker.safety import host_paths, internal_error, scrub_host
from worker.sink import StorageSink
from worker.stale import earlier_assets, remove_stale
from worker.storage import ReadableStorage, ReadOnlyView, Storage, open_storage
from worker.storage.base import ObjectInfo, scratch_dir

log = logging.getLogger(__name__)


@observed_item
def process_item(
    item: Item,
    settings: Settings,
    storage: Storage | ReadOnlyView | None = None,
    progress: ProgressCallback = no_progress,
    raise_transient: bool = False,
    source: ReadableStorage | None = None,
    redelivered: bool = False,
) -> ItemResult:
    """Process (or, for a read-only integration, verify) one item and report how it went.

    Permanent failures come back as a `failed` result with their reason code. Transient ones are
    raised when `raise_transient` (so a queue can retry them), else reported the same way.
    `source` is where the item's key is read from when that is not the integration's own storage
    (`preextract` reads a local copy of the bucket and writes to another folder or bucket).
    `redelivered`: an earlier delivery of this item died (its worker was killed), perhaps after
    its commit; the item is then not redone when its marker is current (`markers.is_current`)."""
    integration = settings.integration(item.integration)
    storage = storage if storage is not None else open_storage(integration, settings)
    try:
        if integration.readonly:
            from worker.verify import verify_item

            return verify_item(item, integration, storage, limits=settings.limits)
        assert isinstance(storage, Storage), "a writable integration opens writable storage"
        run = _Run(item, integration, settings, storage, source or storage, progress)
        return run.process(redelivered)
    except TransientError as exc:
        if raise_transient:
            raise
        return _failed(item, exc, f"{exc} (storage kept failing after retries; try again later)")
    except PermanentError as exc:
        message = scrub_host(str(exc), host_paths(settings.worker.work_dir))
        log.warning("item %s (%s) failed: %s: %s", item.item_id, item.key, exc.reason, message)
        return _failed(item, exc, message)
    except Exception:
        # Decoders' errors are mapped where they are called: anything else is our own fault.
        # This item fails; the worker and the batch go on.
        error = internal_error(log, f"processing item {item.item_id}")
        return _failed(item, error, str(error))


def _failed(item: Item, exc: BaseException, message: str) -> ItemResult:
    return ItemResult.failure(item, reason_of(exc), message)


def detect_type(item: Item, storage: ReadableStorage, key: str | None = None) -> ItemType:
    """The item's type as given, else sniffed from the first bytes of `key` (the object it
    registers; the item's key by default) in one ranged read. A folder key has no bytes of its
    own: its name alone tells."""
    if item.type != ItemType.AUTO:
        return item.type
    from worker.media.sniff import sniff

    key = key or item.key
    detected = sniff(b"" if key.endswith("/") else storage.read_head(key, SNIFF_BYTES), item.key)
    if detected is None:
        raise UnsupportedFormat(
            f"{item.key}: not an image, video or slide format mediaworker reads"
            " (checked its first bytes and its extension); pass --type if it is one"
        )
    return detected


class _Timings:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 4)
            observe_stage(name, self.seconds[name])


@dataclass
class _Rendered:
    """What the render step leaves for the commit: the processor's result and the outputs."""

    result: MediaResult
    assets: list[Asset]
    written_bytes: int
    count: int


class _Run:
    """One item through the write path: plan -> fetch and render -> commit."""

    def __init__(
        self,
        item: Item,
        integration: Integration,
        settings: Settings,
        storage: Storage,
        source_storage: ReadableStorage,
        progress: ProgressCallback,
    ) -> None:
        self.item, self.settings, self.progress = item, settings, progress
        self.storage, self.source_storage = storage, source_storage
        self.layout = SlotLayout(integration.prefix, item.item_id, item.slot)
        self.timings = _Timings()

    def process(self, redelivered: bool = False) -> ItemResult:
        with self.timings.stage("plan"):
            source, kind = self.plan()
            committed = self.committed_before(source, kind) if redelivered else None
            if committed is not None:
                return committed
            earlier = self.unmark()
        work_dir = scratch_dir(self.settings.worker.work_dir, f"mw-{self.item.item_id[:8]}-")
        try:
            with self.timings.stage("fetch"):
                local, info = fetch(
                    self.source_storage, source, work_dir, self.settings.worker.download_concurrency
                )
            rendered = self.render(kind, local, work_dir)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        return self.commit(kind, source, info, rendered, earlier)

    def plan(self) -> tuple[Resolved, MediaKind]:
        """Resolve the source once (a folder source is listed here), check its size and tell
        its kind."""
        source = resolve(self.source_storage, self.item.key, self.settings.limits.max_source_bytes)
        _check_source_size(self.item, source.main, self.settings)
        kind = registry.kind(detect_type(self.item, self.source_storage, source.main.key))
        return source, kind

    def committed_before(self, source: Resolved, kind: MediaKind) -> ItemResult | None:
        """The result an earlier delivery committed, when its marker names this very source at
        this pipeline version: its worker was killed between the commit and the acknowledgement,
        and the item is not redone."""
        found = read_metadata(self.storage, self.layout)
        if found is None or found.source.key != source.main.key:
            return None
        if not is_current(marked_of(self.layout, found), source.main, self.item.fps):
            return None
        log.info(
            "item %s (%s): committed by an earlier delivery; not redone",
            self.item.item_id, self.item.key,
        )  # fmt: skip
        return ItemResult.of(
            self.item,
            Status.OK,
            kind.name,
            found.payload,
            message="; ".join(found.warnings),
            assets=found.assets,
        )

    def unmark(self) -> list[Asset]:
        """Drop the earlier marker, which would vouch for outputs about to be replaced; what it
        listed is removed after the new commit unless listed again."""
        earlier = earlier_assets(self.storage, self.layout)
        self.storage.delete(self.layout.metadata_key)
        return earlier

    def render(self, kind: MediaKind, local: Path, work_dir: Path) -> _Rendered:
        """Run the kind's processor, its outputs streaming to storage through a bounded sink."""
        worker = self.settings.worker
        sink = StorageSink(
            self.storage,
            self.layout,
            concurrency=worker.write_concurrency,
            max_pending=worker.write_queue_size,
        )
        context = ProcessContext(local, sink, self.settings, work_dir, self.item.fps, self.progress)
        with self.timings.stage("process"), sink:
            result = _run_processor(self.item, kind, context)
        return _Rendered(result, sink.assets(), sink.total_bytes, sink.count)

    def commit(
        self,
        kind: MediaKind,
        source: Resolved,
        info: ObjectInfo,
        rendered: _Rendered,
        earlier: list[Asset],
    ) -> ItemResult:
        """Write `metadata.json` last, the commit marker; then remove what the earlier marker
        listed and the new one does not."""
        observe_bytes(kind.name, info.size, rendered.written_bytes)
        payload = build_payload(kind, source, self.layout, info, rendered)
        metadata = Metadata(
            item_id=self.item.item_id,
            slot=self.item.slot,
            pipeline_version=PIPELINE_VERSION,
            source=SourceInfo(key=source.main.key, size=info.size, etag=info.etag),
            payload=payload,
            assets=rendered.assets,
            timings=self.timings.seconds,
            warnings=rendered.result.warnings,
        )
        body = metadata.model_dump_json(indent=2, exclude_none=True).encode()
        self.storage.write(self.layout.metadata_key, body, "application/json")
        remove_stale(self.storage, self.layout, metadata.assets, earlier)
        self.storage.remove_orphans(self.layout.root)
        log.debug(
            "item %s (%s) done as %s: %d assets, timings %s",
            self.item.item_id, self.item.key, kind.name, rendered.count, self.timings.seconds,
        )  # fmt: skip
        message = "; ".join(rendered.result.warnings)
        return ItemResult.of(
            self.item, Status.OK, kind.name, payload, message=message, assets=metadata.assets
        )


def build_payload(
    kind: MediaKind, source: Resolved, layout: SlotLayout, info: ObjectInfo, rendered: _Rendered
) -> Payload:
    return kind.payload(
        PayloadInput(
            key=source.main.key,
            name=source_name(source.label),
            path=source_folder(source.label),
            layout=layout,
            source=info,
            result=rendered.result,
            written_bytes=rendered.written_bytes,
        )
    )


def _check_source_size(item: Item, source: ObjectInfo, settings: Settings) -> None:
    limit = settings.limits.max_source_bytes
    if source.size > limit:
        raise TooLarge(
            f"{item.key} is {source.size} bytes, over the limit of {limit} bytes"
            " (raise limits.max_source_bytes to process it)"
        )


def _run_processor(item: Item, kind: MediaKind, context: ProcessContext) -> MediaResult:
    if context.path.stat().st_size == 0:
        from worker.errors import CorruptMedia

        raise CorruptMedia(f"{item.key} is empty (0 bytes); upload the file again")
    try:
        return kind.process(context)
    except MediaWorkerError:
        raise
    except MemoryError:
        raise TooLarge(f"{item.key} needs more memory than this worker has") from None
