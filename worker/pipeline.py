"""The item pipeline: every media type and every entry point goes through here.

plan (layout, type) -> fetch the source -> run the processor, outputs streaming to storage through
a bounded sink -> write `metadata.json` last, as the commit marker (SPEC 4.4) -> remove what the
earlier marker listed and the new one does not.

A read-only integration never reaches the write path: `process_item` hands it to verification,
and its storage is a `ReadOnlyView` that has no write method in the first place.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from worker import PIPELINE_VERSION
from worker.config import Integration, Limits, Settings
from worker.errors import (
    MediaWorkerError,
    PermanentError,
    TooLarge,
    TransientError,
    UnsupportedFormat,
    reason_of,
)
from worker.fetch import fetch_source, source_key
from worker.items import Item, ItemType
from worker.layout import SlotLayout
from worker.limits import budget_bytes
from worker.media import MediaResult, ProgressCallback, Sink, no_progress
from worker.observability import observe_bytes, observe_stage, observed_item
from worker.payloads import ItemResult, Metadata, SourceInfo, Status, build_payload
from worker.safety import host_paths, internal_error, scrub_host
from worker.sink import StorageSink
from worker.stale import earlier_assets, remove_stale
from worker.storage import ReadableStorage, ReadOnlyView, Storage, open_storage
from worker.storage.base import ObjectInfo, scratch_dir

log = logging.getLogger(__name__)

SNIFF_BYTES = 8192


@observed_item
def process_item(
    item: Item,
    settings: Settings,
    storage: Storage | ReadOnlyView | None = None,
    progress: ProgressCallback = no_progress,
    raise_transient: bool = False,
    source: ReadableStorage | None = None,
) -> ItemResult:
    """Process (or, for a read-only integration, verify) one item and report how it went.

    Permanent failures come back as a `failed` result with their reason code. Transient ones are
    raised when `raise_transient` (so a queue can retry them), else reported the same way.
    `source` is where the item's key is read from when that is not the integration's own storage
    (`preextract` reads a local copy of the bucket and writes to another folder or bucket)."""
    integration = settings.integration(item.integration)
    storage = storage if storage is not None else open_storage(integration, settings)
    try:
        if isinstance(storage, ReadOnlyView):
            from worker.verify import verify_item

            return verify_item(item, integration, storage, limits=settings.limits)
        return _process(item, integration, settings, storage, progress, source or storage)
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


def detect_type(item: Item, storage: ReadableStorage) -> ItemType:
    """The item's type as given, else sniffed from its first bytes (one ranged read)."""
    if item.type != ItemType.AUTO:
        return item.type
    from worker.media.sniff import sniff

    folder = item.key.endswith("/")  # a folder item has no bytes of its own (a DICOM series)
    detected = sniff(b"" if folder else storage.read_head(item.key, SNIFF_BYTES), item.key)
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


def _process(
    item: Item,
    integration: Integration,
    settings: Settings,
    storage: Storage,
    progress: ProgressCallback,
    source_storage: ReadableStorage,
) -> ItemResult:
    layout = SlotLayout(integration.prefix, item.item_id, item.slot)
    timings = _Timings()
    with timings.stage("plan"):
        # A folder key (a DICOM series) stands for one object: sized, sniffed and registered.
        given, item = item, item.model_copy(update={"key": source_key(source_storage, item.key)})
        source = source_storage.head(item.key)
        _check_source_size(item, source, settings)
        item_type = detect_type(item, source_storage)
        # A stale marker would vouch for outputs this run is about to replace.
        earlier = earlier_assets(storage, layout)
        storage.delete(layout.metadata_key)
    work_dir = scratch_dir(settings.worker.work_dir, f"mw-{item.item_id[:8]}-")
    try:
        with timings.stage("fetch"):
            local, source = fetch_source(
                source_storage,
                item.key,
                work_dir,
                concurrency=settings.worker.download_concurrency,
                max_bytes=settings.limits.max_source_bytes,
            )
        sink = StorageSink(
            storage,
            layout,
            concurrency=settings.worker.write_concurrency,
            max_pending=settings.worker.write_queue_size,
        )
        with timings.stage("process"), sink:
            result = _run_processor(item, item_type, local, sink, settings, work_dir, progress)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    observe_bytes(item_type.value, source.size, sink.total_bytes)
    payload = build_payload(item, layout, source, result, sink.total_bytes)
    metadata = Metadata(
        item_id=item.item_id,
        slot=item.slot,
        pipeline_version=PIPELINE_VERSION,
        source=SourceInfo(key=item.key, size=source.size, etag=source.etag),
        payload=payload,
        assets=sink.assets(),
        timings=timings.seconds,
        warnings=result.warnings,
    )
    storage.write(
        layout.metadata_key,
        metadata.model_dump_json(indent=2, exclude_none=True).encode(),
        "application/json",
    )
    remove_stale(storage, layout, metadata.assets, earlier)
    log.info(
        "item %s (%s) done as %s: %d assets, timings %s",
        item.item_id,
        item.key,
        item_type,
        sink.count,
        timings.seconds,
    )
    return ItemResult.of(
        given,
        Status.OK,
        item_type.value,
        payload,
        message="; ".join(result.warnings),
        assets=metadata.assets,
    )


def _check_source_size(item: Item, source: ObjectInfo, settings: Settings) -> None:
    limit = settings.limits.max_source_bytes
    if source.size > limit:
        raise TooLarge(
            f"{item.key} is {source.size} bytes, over the limit of {limit} bytes"
            " (raise limits.max_source_bytes to process it)"
        )


Processor = Callable[[Path, Sink, Settings, float, Path, ProgressCallback], MediaResult]


def _run_processor(
    item: Item,
    item_type: ItemType,
    local: Path,
    sink: Sink,
    settings: Settings,
    work_dir: Path,
    progress: ProgressCallback,
) -> MediaResult:
    if local.stat().st_size == 0:
        from worker.errors import CorruptMedia

        raise CorruptMedia(f"{item.key} is empty (0 bytes); upload the file again")
    try:
        processor = PROCESSORS[item_type]
    except KeyError:
        raise UnsupportedFormat(f"{item.key}: type {item_type!r} has no processor") from None
    try:
        return processor(local, sink, settings, item.fps, work_dir, progress)
    except MediaWorkerError:
        raise
    except MemoryError:
        raise TooLarge(f"{item.key} needs more memory than this worker has") from None


def _image(
    path: Path, sink: Sink, s: Settings, fps: float, work: Path, progress: ProgressCallback
) -> MediaResult:
    from worker.media.image import process_image

    return process_image(path, sink, s.limits, progress, work_dir=work)


def _video(
    path: Path, sink: Sink, s: Settings, fps: float, work: Path, progress: ProgressCallback
) -> MediaResult:
    from worker.media.video import process_video

    return process_video(path, sink, s.limits, s.video, fps=fps, work_dir=work, progress=progress)


def _slide(
    path: Path, sink: Sink, s: Settings, fps: float, work: Path, progress: ProgressCallback
) -> MediaResult:
    from worker.media.slide import process_slide

    guard_slide(path, s.limits)
    return process_slide(path, sink, s.limits, progress)


def guard_slide(path: Path, limits: Limits) -> None:
    """Before this process decodes a slide: its parts stay in its folder (MIRAX), its series is
    complete (DICOM), its header's claims fit the limits (TIFF), and a sandboxed first decode
    did not crash."""
    from worker.media import dicom
    from worker.media.mirax import check_mirax_complete
    from worker.media.sandbox import probe_slide
    from worker.media.tiffheader import check_tiff_claims

    if path.suffix.lower() == ".mrxs":
        check_mirax_complete(path)
    elif path.suffix.lower() == dicom.SUFFIX:
        dicom.check_dicom_complete(path, limits)
    else:
        check_tiff_claims(path, limits)
    probe_slide(path, budget_bytes(limits), limits.item_timeout_seconds)


PROCESSORS: dict[ItemType, Processor] = {
    ItemType.IMAGE: _image,
    ItemType.VIDEO: _video,
    ItemType.SLIDE: _slide,
}
