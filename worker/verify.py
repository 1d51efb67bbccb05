"""Verification of pre-extracted assets for read-only integrations (SPEC section 6).

Nothing here can write: everything takes a `ReadableStorage`, and the pipeline hands a read-only
integration a `ReadOnlyView`, which has no write method at all.

The expected keys come from a registration payload (given, or read from the slot's
`metadata.json`, whose asset list is checked too). They are kept in the compact form of
`worker.assets` and expanded lazily: each is checked with a HEAD (exists, non-zero size), a
bounded window at a time, never with a listing, so a reader holding only `s3:GetObject` can
verify and memory stays flat however long the video or large the slide. Then the contents that
a viewer depends on are checked: the thumbnail decodes and fits, the manifest has `total_frames`
lines, the sections stop at `visible_frames`, every HLS segment an index names exists, the Deep
Zoom tiles match the DZI.
"""

from __future__ import annotations

import io
import logging
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from worker import claims
from worker.assets import Asset, Series, compact, iter_keys
from worker.bounded import bounded_map
from worker.config import Integration, Limits
from worker.errors import NotFound, PermissionDenied
from worker.items import Item, default_item_id
from worker.kinds import registry
from worker.layout import TILE_NAME, Rel, SlotLayout, section_key, section_pattern
from worker.media import THUMBNAIL_BOX
from worker.payloads import (
    AssetProblem,
    ImagePayload,
    ItemResult,
    Metadata,
    Payload,
    SlidePayload,
    Status,
    VideoPayload,
    segment_keys,
)
from worker.storage.base import ObjectInfo, ReadableStorage

log = logging.getLogger(__name__)

HEAD_CONCURRENCY = 16
"""HEAD requests in flight per item: a long video has thousands of sections to check."""
HEAD_WINDOW = 4 * HEAD_CONCURRENCY
"""Keys submitted ahead of the oldest unanswered HEAD."""
THUMBNAIL_FORMATS = ("JPEG", "PNG", "WEBP")
"""A thumbnail is a JPEG; only decoders that never run other programs are offered others."""
_BOX = "{}x{}".format(*THUMBNAIL_BOX)
MAX_READ_BYTES = 64 * 1024**2
"""Largest object read whole for a content check (manifest, DZI, thumbnail)."""
DENIED_HINT = (
    "not readable: access denied (S3 also answers 403 for a missing key when the reader may not"
    " s3:ListBucket); check that it exists and that the integration may read it"
)


@dataclass
class Report:
    """What one verification found: the assets checked and each problem, in order."""

    checked: int = 0
    """Keys checked."""
    assets: list[Asset] = field(default_factory=list)
    """What was checked, in the compact form."""
    problems: list[AssetProblem] = field(default_factory=list)
    bad: set[str] = field(default_factory=set)
    """Keys already reported: each is named once, with the first thing found wrong."""

    def add(self, key: str, problem: str) -> None:
        if key not in self.bad:
            self.bad.add(key)
            self.problems.append(AssetProblem(key=key, problem=problem))


def verify_item(
    item: Item,
    integration: Integration,
    storage: ReadableStorage,
    payload: Payload | None = None,
    limits: Limits | None = None,
) -> ItemResult:
    """Check one item's pre-extracted assets: `ok`, or `missing_assets` naming each bad key.

    Without `payload`, the slot's `metadata.json` supplies it; when that is missing, only the
    source and the thumbnail can be checked and the marker itself is reported missing."""
    layout = SlotLayout(integration.prefix, item.item_id, item.slot)
    report = Report()
    metadata = _metadata(layout, storage, report) if payload is None else None
    payload = metadata.payload if metadata is not None else payload
    if payload is None:
        _check_objects(storage, [item.key, layout.key(Rel.THUMBNAIL)], report)
        _check_thumbnail(storage, layout.key(Rel.THUMBNAIL), report)
        return _result(item, item.type.value, None, report)
    verify_payload(payload, storage, report, limits)
    if metadata is not None and not report.problems:
        # Anything else the marker vouches for (it lists what the payload implies, and more).
        # Only once the payload's own claims passed: the marker's counts are claims too.
        checked = set(report.assets)
        _check_objects(storage, [a for a in metadata.assets if a not in checked], report)
    return _result(item, payload_type(payload), payload, report)


def verify_payload(
    payload: Payload,
    storage: ReadableStorage,
    report: Report | None = None,
    limits: Limits | None = None,
) -> Report:
    """Every check SPEC 6 names, for the keys one registration payload lists. Counts and sizes
    the payload claims are checked first (`worker.claims`): none is expanded into keys unless
    it is within the limits."""
    report = report if report is not None else Report()
    limits = limits or Limits()
    refused = claims.payload_claims(payload, limits)
    for claim in refused:
        report.add(claim.key, claim.problem)
    if refused:
        return report
    slot = SlotLayout.containing(payload.storage_thumbnail_key)
    kind = registry.kind_of_payload(payload)
    keys: list[Asset] = [payload.storage_key, payload.storage_thumbnail_key]
    keys += kind.assets(payload, slot)
    infos = _check_objects(storage, keys, report)
    _check_thumbnail(storage, payload.storage_thumbnail_key, report)
    if kind.check is not None:
        kind.check(payload, storage, report, limits)
    _check_source_size(payload, infos.get(payload.storage_key), report)
    return report


def payload_type(payload: Payload) -> str:
    return registry.kind_of_payload(payload).name


def item_for_payload(payload: Payload, integration: str) -> Item:
    """The item a payload registers: its slot folder names the item id and slot."""
    slot = SlotLayout.containing(payload.storage_thumbnail_key)
    item_id = slot.item_id if slot else default_item_id(payload.storage_key)
    return Item(
        integration=integration,
        key=payload.storage_key,
        item_id=item_id,
        slot=slot.slot if slot else "0",
        type=payload_type(payload),
    )


def _metadata(layout: SlotLayout, storage: ReadableStorage, report: Report) -> Metadata | None:
    key = layout.metadata_key
    try:
        data = _read_small(storage, key)
    except NotFound:
        report.add(key, "missing: the item was not pre-extracted, or its extraction did not finish")
        return None
    except PermissionDenied:
        report.add(key, DENIED_HINT)
        return None
    except _TooBig as exc:
        report.add(key, str(exc))
        return None
    try:
        return Metadata.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the document"
        report.add(
            key,
            f"invalid: not a mediaworker commit marker ({where}: {first['msg']});"
            " extract the item again",
        )
        return None


def image_assets(payload: ImagePayload, slot: SlotLayout | None) -> list[Asset]:
    return [payload.storage_display_key] if payload.storage_display_key else []


def slide_assets(payload: SlidePayload, slot: SlotLayout | None) -> list[Asset]:
    return [payload.storage_dzi_key, *payload.storage_associated_keys.values()]


def video_assets(payload: VideoPayload, slot: SlotLayout | None) -> list[Asset]:
    assets: list[Asset] = [payload.storage_frames_manifest_key]
    if payload.storage_audio_peaks_key:
        assets.append(payload.storage_audio_peaks_key)
    ext = payload.storage_sections_key_extension
    for prefix, pattern in (
        (payload.storage_sections_key_prefix, section_pattern(ext)),
        (payload.storage_low_quality_sections_key_prefix, section_pattern("jpg")),
    ):
        folder = prefix.rstrip("/") + "/"
        assets.append(Series(prefix=folder, pattern=pattern, first=0, count=payload.visible_frames))
    for quality in ("high", "low"):
        assets += _hls_assets(payload, quality, slot)
    return assets


def _hls_assets(
    payload: VideoPayload, quality: Literal["high", "low"], slot: SlotLayout | None
) -> list[Asset]:
    rendition = getattr(payload.hls_segments, f"{quality}_quality")
    assets = compact(segment_keys(rendition.index))
    if slot is not None:
        # The stored index serves players that read the bucket directly, not via the payload.
        assets.append(slot.key(Rel.hls_index(quality)))
    return assets


def _check_objects(
    storage: ReadableStorage, assets: Iterable[Asset], report: Report
) -> dict[str, ObjectInfo]:
    """HEAD every key the assets name, a window at a time: each must exist and hold at least
    one byte. Returns what the single keys' HEADs said."""
    entries = list(dict.fromkeys(assets))
    report.assets.extend(entries)
    singles = {entry for entry in entries if isinstance(entry, str)}
    infos: dict[str, ObjectInfo] = {}
    with ThreadPoolExecutor(HEAD_CONCURRENCY, thread_name_prefix="verify") as pool:
        heads = bounded_map(pool, lambda key: _head(storage, key), iter_keys(entries), HEAD_WINDOW)
        for key, outcome in heads:
            report.checked += 1
            if isinstance(outcome, str):
                report.add(key, outcome)
            elif outcome.size == 0:
                report.add(key, "invalid: empty (0 bytes); extract and upload it again")
            elif key in singles:
                infos[key] = outcome
    return infos


def _head(storage: ReadableStorage, key: str) -> ObjectInfo | str:
    try:
        return storage.head(key)
    except NotFound:
        return "missing"
    except PermissionDenied:
        return DENIED_HINT


class _TooBig(ValueError):
    pass


def _read_small(storage: ReadableStorage, key: str) -> bytes:
    data = storage.read_range(key, 0, MAX_READ_BYTES + 1)
    if len(data) > MAX_READ_BYTES:
        raise _TooBig(f"invalid: over {MAX_READ_BYTES} bytes, far more than this file ever holds")
    return data


def _read_for_check(storage: ReadableStorage, key: str, report: Report) -> bytes | None:
    """The object's bytes, or None when it is already reported (missing, empty, unreadable)."""
    if key in report.bad:
        return None
    try:
        return _read_small(storage, key)
    except NotFound:
        report.add(key, "missing")
    except PermissionDenied:
        report.add(key, DENIED_HINT)
    except _TooBig as exc:
        report.add(key, str(exc))
    return None


def _check_thumbnail(storage: ReadableStorage, key: str, report: Report) -> None:
    data = _read_for_check(storage, key, report)
    if data is None:
        return
    try:
        with Image.open(io.BytesIO(data), formats=THUMBNAIL_FORMATS) as image:
            size = image.size  # from the header: nothing over the box is ever decoded
            if size[0] <= THUMBNAIL_BOX[0] and size[1] <= THUMBNAIL_BOX[1]:
                image.load()
    except Image.DecompressionBombError:
        report.add(key, f"invalid: the thumbnail's header claims a bomb's size, over {_BOX}")
        return
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        report.add(key, f"invalid: the thumbnail does not decode ({exc}); extract it again")
        return
    if size[0] > THUMBNAIL_BOX[0] or size[1] > THUMBNAIL_BOX[1]:
        report.add(key, f"invalid: the thumbnail is {size[0]}x{size[1]}, over {_BOX}")


def check_video(
    payload: VideoPayload, storage: ReadableStorage, report: Report, limits: Limits
) -> None:
    _check_manifest(payload, storage, report)
    # A section past `visible_frames` means the sections and the payload disagree on the count.
    for prefix, ext in (
        (payload.storage_sections_key_prefix, payload.storage_sections_key_extension),
        (payload.storage_low_quality_sections_key_prefix, "jpg"),
    ):
        extra = section_key(prefix, payload.visible_frames, ext)
        if isinstance(_head(storage, extra), ObjectInfo):
            report.add(
                extra,
                f"unexpected: sections go past visible_frames={payload.visible_frames}; the"
                " payload and the sections come from different extractions",
            )
    for quality in ("high", "low"):
        rendition = getattr(payload.hls_segments, f"{quality}_quality")
        if not segment_keys(rendition.index):
            report.add(f"hls_segments.{quality}_quality.index", "invalid: names no segment")
    if payload.storage_audio_peaks_key:
        _check_gzip(
            storage, payload.storage_audio_peaks_key, report, claims.peaks_cap(payload, limits)
        )


def _check_manifest(payload: VideoPayload, storage: ReadableStorage, report: Report) -> None:
    key = payload.storage_frames_manifest_key
    data = _read_for_check(storage, key, report)
    if data is None:
        return
    if len(data) > claims.manifest_cap(payload):
        report.add(
            key, f"invalid: {len(data):,} bytes, more than {payload.total_frames} lines hold"
        )
        return
    # One line at a time: a 4-hour video's manifest has 432,000 of them.
    count = visible = malformed = 0
    for raw in io.BytesIO(data):
        parts = raw.decode("utf-8", "replace").split(":")
        if len(parts) == 1 and not parts[0].strip():
            continue
        count += 1
        if len(parts) != 4:
            malformed += 1
        elif parts[2].strip() not in ("0", "false", "False"):
            visible += 1
    if count != payload.total_frames:
        report.add(key, f"invalid: {count} lines, expected total_frames={payload.total_frames}")
    elif malformed:
        report.add(key, "invalid: lines must read FRAME_IN_SEGMENT:SEGMENT:VISIBLE:TIMESTAMP")
    elif visible != payload.visible_frames:
        report.add(key, f"invalid: {visible} visible lines, expected {payload.visible_frames}")


def _check_gzip(storage: ReadableStorage, key: str, report: Report, cap: int) -> None:
    data = _read_for_check(storage, key, report)
    if data is None:
        return
    try:
        claims.inflate_capped(data, cap)
    except zlib.error as exc:
        report.add(key, f"invalid: not gzip data ({exc})")
    except ValueError as exc:
        report.add(key, f"invalid: {exc}; extract it again")


def check_tiles(
    payload: SlidePayload, storage: ReadableStorage, report: Report, limits: Limits | None = None
) -> None:
    """The Deep Zoom descriptor describes this slide, and every tile it names exists."""
    key = payload.storage_dzi_key
    data = _read_for_check(storage, key, report)
    slot = SlotLayout.containing(key)
    if data is None or slot is None:
        return
    try:
        levels = claims.dzi_levels(data, payload)
    except (ET.ParseError, KeyError, ValueError, StopIteration) as exc:
        report.add(key, f"invalid: not the Deep Zoom descriptor of this slide ({exc})")
        return
    described = sum(cols * rows for cols, rows in levels)
    if described != payload.tile_count:
        report.add(key, f"invalid: describes {described} tiles, payload says {payload.tile_count}")
        return
    tiles = [
        Series(
            prefix=slot.key(Rel.tile_level_dir(level)),
            pattern=TILE_NAME,
            first=0,
            count=cols * rows,
            columns=cols,
        )
        for level, (cols, rows) in enumerate(levels)
    ]
    _check_objects(storage, tiles, report)


def _check_source_size(payload: Payload, info: ObjectInfo | None, report: Report) -> None:
    """A payload that records its source's size (images, slides) names a replaced source."""
    size = getattr(payload, "size_bytes", None)
    if info is not None and size is not None and info.size != size:
        report.add(
            payload.storage_key,
            f"changed: {info.size} bytes, the payload says {size};"
            " the source was replaced after extraction, extract it again",
        )


def _result(item: Item, type_: str, payload: Payload | None, report: Report) -> ItemResult:
    if not report.problems:
        log.info("item %s (%s): %d assets verified", item.item_id, item.key, report.checked)
        return ItemResult.of(item, Status.OK, type_, payload, assets=report.assets)
    shown = "; ".join(f"{p.key}: {p.problem}" for p in report.problems[:5])
    more = len(report.problems) - 5
    message = f"{len(report.problems)} assets missing or invalid: {shown}" + (
        f"; and {more} more" if more > 0 else ""
    )
    log.warning("item %s (%s): %s", item.item_id, item.key, message)
    return ItemResult.of(
        item,
        Status.MISSING_ASSETS,
        type_,
        payload,
        message=message,
        assets=[p.key for p in report.problems],
        problems=report.problems,
    )
