"""Registration payloads (SPEC section 5), the commit marker and the per-item result (SPEC 7).

Field names follow V7 Darwin's read-only registration, so `registration.jsonl` can be posted as
is. Keys are bucket-relative storage keys (including the container on Azure): exactly what the
registering platform signs URLs for.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter

from worker.assets import Asset
from worker.errors import Reason
from worker.items import Item
from worker.kinds import PayloadInput
from worker.layout import Rel, SlotLayout
from worker.media import HlsRendition, ImageResult, SlideResult, VideoResult


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    path: str
    storage_key: str
    storage_thumbnail_key: str
    width: int
    height: int


class ImagePayload(_Payload):
    type: Literal["image"] = "image"
    size_bytes: int
    storage_display_key: str | None = None


class SlidePayload(_Payload):
    """A slide registers as an image (what V7's read-only schema knows) plus its slide fields."""

    type: Literal["image"] = "image"
    size_bytes: int
    slide: Literal[True] = True
    level_count: int
    # Defaults, so payloads written without their null fields (exclude_none) parse back.
    microns_per_pixel_x: float | None = None
    microns_per_pixel_y: float | None = None
    objective_power: float | None = None
    vendor: str | None = None
    storage_dzi_key: str
    dzi_levels: int
    tile_count: int
    storage_associated_keys: dict[str, str] = {}


class HlsQuality(BaseModel):
    index: str
    bitrate: int


class HlsSegments(BaseModel):
    high_quality: HlsQuality
    low_quality: HlsQuality


class VideoPayload(_Payload):
    type: Literal["video"] = "video"
    native_fps: float
    fps: float
    visible_frames: int
    total_frames: int
    hls_segments: HlsSegments
    storage_sections_key_prefix: str
    storage_sections_key_extension: str
    storage_low_quality_sections_key_prefix: str
    storage_frames_manifest_key: str
    storage_audio_peaks_key: str | None = None
    total_size_bytes: int


Payload = ImagePayload | SlidePayload | VideoPayload


def common_fields(given: PayloadInput) -> dict[str, Any]:
    """The fields every payload has (SPEC 5)."""
    return {
        "name": given.name,
        "path": given.path,
        "storage_key": given.key,
        "storage_thumbnail_key": given.layout.key(Rel.THUMBNAIL),
        "width": given.result.width,
        "height": given.result.height,
    }


def image_payload(given: PayloadInput) -> ImagePayload:
    result = given.result
    assert isinstance(result, ImageResult)
    display = given.layout.key(result.display_rel) if result.display_rel else None
    return ImagePayload(
        **common_fields(given), size_bytes=given.source.size, storage_display_key=display
    )


def slide_payload(given: PayloadInput) -> SlidePayload:
    result, layout = given.result, given.layout
    assert isinstance(result, SlideResult)
    return SlidePayload(
        **common_fields(given),
        size_bytes=given.source.size,
        level_count=result.level_count,
        microns_per_pixel_x=result.mpp_x,
        microns_per_pixel_y=result.mpp_y,
        objective_power=result.objective_power,
        vendor=result.vendor,
        storage_dzi_key=layout.key(Rel.DZI),
        dzi_levels=result.dzi_levels,
        tile_count=result.tile_count,
        storage_associated_keys={n: layout.key(Rel.associated(n)) for n in result.associated},
    )


def video_payload(given: PayloadInput) -> VideoPayload:
    result, layout = given.result, given.layout
    assert isinstance(result, VideoResult)
    return VideoPayload(
        **common_fields(given),
        native_fps=result.native_fps,
        fps=result.fps,
        visible_frames=result.visible_frames,
        total_frames=result.total_frames,
        hls_segments=HlsSegments(
            high_quality=_hls(layout, "high", result.hls_high),
            low_quality=_hls(layout, "low", result.hls_low),
        ),
        storage_sections_key_prefix=layout.key(Rel.sections_dir("high")).rstrip("/"),
        storage_sections_key_extension=result.sections_ext,
        storage_low_quality_sections_key_prefix=layout.key(Rel.sections_dir("low")).rstrip("/"),
        storage_frames_manifest_key=layout.key(Rel.MANIFEST),
        storage_audio_peaks_key=layout.key(Rel.AUDIO_PEAKS) if result.has_audio else None,
        total_size_bytes=given.source.size + given.written_bytes,
    )


def _hls(layout: SlotLayout, quality: Literal["high", "low"], hls: HlsRendition) -> HlsQuality:
    return HlsQuality(index=rewrite_hls_index(hls.index_text, layout, quality), bitrate=hls.bitrate)


def rewrite_hls_index(text: str, layout: SlotLayout, quality: Literal["high", "low"]) -> str:
    """Each segment line of an HLS index, rewritten to the segment's full storage key."""
    folder = layout.key(Rel.segments_dir(quality))
    lines = []
    for line in text.splitlines():
        is_segment = line.strip() and not line.startswith("#")
        lines.append(folder + line.strip() if is_segment and "/" not in line else line)
    return "\n".join(lines) + "\n"


def segment_keys(index_text: str) -> list[str]:
    """The segment keys a rewritten HLS index names, in order."""
    return [ln.strip() for ln in index_text.splitlines() if ln.strip() and not ln.startswith("#")]


_PAYLOAD = TypeAdapter(Payload)


def parse_payload(data: dict[str, Any]) -> Payload:
    """A payload of any kind: each model forbids the others' fields, so exactly one fits."""
    return _PAYLOAD.validate_python(data)


class SourceInfo(BaseModel):
    key: str
    size: int
    etag: str | None


class Metadata(BaseModel):
    """The commit marker: an item with it has every asset it lists."""

    item_id: str
    slot: str
    pipeline_version: str
    source: SourceInfo
    payload: Payload
    assets: list[Asset]
    """Every output, single files by key and each numbered series as one entry."""
    timings: dict[str, float]
    warnings: list[str] = []


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"
    MISSING_ASSETS = "missing_assets"


class AssetProblem(BaseModel):
    """A key that verification found missing or invalid, and why."""

    key: str
    problem: str


class ItemResult(BaseModel):
    """One line of `--json` output and the return value of a task (SPEC 7)."""

    item_id: str
    slot: str
    integration: str
    key: str
    type: str
    status: Status
    reason: Reason | None = None
    message: str = ""
    payload: dict[str, Any] | None = None
    assets: list[Asset] = []
    problems: list[AssetProblem] = []
    """For `missing_assets`: each missing or invalid key with the reason (`assets` names them)."""

    @classmethod
    def of(
        cls,
        item: Item,
        status: Status,
        type_: str | None = None,
        payload: Payload | None = None,
        **fields: Any,
    ) -> ItemResult:
        """The result for `item`, its payload dumped as `--json` and tasks return it."""
        return cls(
            item_id=item.item_id,
            slot=item.slot,
            integration=item.integration,
            key=item.key,
            type=type_ or item.type.value,
            status=status,
            payload=payload.model_dump(mode="json", exclude_none=True) if payload else None,
            **fields,
        )

    @classmethod
    def failure(
        cls, item: Item, reason: Reason, message: str, type_: str | None = None
    ) -> ItemResult:
        return cls.of(item, Status.FAILED, type_, reason=reason, message=message)
