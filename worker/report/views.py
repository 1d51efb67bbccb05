"""What the report page needs of each result: its payload plus the URLs of its files.

Only URLs the page uses are made, and how many is bounded per item: the scrubber samples at most
`SCRUB_POSITIONS` sections, and a bucket's slide is signed tile by tile only up to the level
where the count passes `MAX_SIGNED_TILES` (deeper levels would make the page grow with the
slide; the viewer stops zooming there and says so). The models here are the page's data, read by
`report.js` under the same names.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel

from worker.layout import Rel, SlotLayout, section_key
from worker.media.deepzoom import TILE_SIZE
from worker.payloads import (
    AssetProblem,
    ItemResult,
    SlidePayload,
    Status,
    VideoPayload,
    parse_payload,
    segment_keys,
)
from worker.report.urls import RelativeUrls, Urls

SCRUB_POSITIONS = 120
MAX_SIGNED_TILES = 2000
LOW_SECTIONS_EXT = "jpg"


class Section(BaseModel):
    frame: int
    low: str
    high: str


class VideoView(BaseModel):
    hls: dict[str, str]
    """Quality (`high`, `low`) -> the HLS index with each segment's URL in place of its key."""
    fps: float
    sections: list[Section]
    peaks: str | None


class SlideView(BaseModel):
    dzi: str
    tiles: dict[str, str] | None = None
    """A bucket's signed tiles, `level/col_row` -> URL, for the levels up to `max_level`."""
    max_level: int | None = None
    levels: int | None = None
    width: int | None = None
    height: int | None = None


class ImageView(BaseModel):
    src: str


class ItemView(BaseModel):
    id: str
    key: str
    type: str
    status: str
    reason: str | None
    message: str
    payload: dict[str, Any] | None
    problems: list[AssetProblem]
    thumb: str | None = None
    video: VideoView | None = None
    slide: SlideView | None = None
    image: ImageView | None = None


def item_view(result: ItemResult, urls: Urls) -> ItemView:
    view = ItemView(
        id=f"{result.item_id}/{result.slot}",
        key=result.key,
        type=result.type,
        status=result.status.value,
        reason=result.reason.value if result.reason else _status_reason(result.status),
        message=result.message,
        payload=result.payload,
        problems=result.problems,
    )
    if not result.payload:
        return view
    payload = parse_payload(result.payload)
    view.thumb = urls.url(payload.storage_thumbnail_key)
    if isinstance(payload, VideoPayload):
        view.video = _video(payload, urls)
    elif isinstance(payload, SlidePayload):
        view.slide = _slide(payload, urls)
    else:
        view.image = ImageView(src=urls.url(payload.storage_display_key or payload.storage_key))
    return view


def _status_reason(status: Status) -> str | None:
    """Missing assets are grouped with the failures, under their status."""
    return status.value if status == Status.MISSING_ASSETS else None


def _video(payload: VideoPayload, urls: Urls) -> VideoView:
    frames = payload.visible_frames
    count = min(frames, SCRUB_POSITIONS)
    positions = sorted({round(i * (frames - 1) / max(count - 1, 1)) for i in range(count)})
    low, high = payload.storage_low_quality_sections_key_prefix, payload.storage_sections_key_prefix
    ext = payload.storage_sections_key_extension
    sections = [
        Section(
            frame=n,
            low=urls.url(section_key(low, n, LOW_SECTIONS_EXT)),
            high=urls.url(section_key(high, n, ext)),
        )
        for n in positions
    ]
    hls = payload.hls_segments
    peaks = payload.storage_audio_peaks_key
    return VideoView(
        hls={
            "high": _playlist(hls.high_quality.index, urls),
            "low": _playlist(hls.low_quality.index, urls),
        },
        fps=payload.fps,
        sections=sections,
        peaks=urls.url(peaks) if peaks else None,
    )


def _playlist(index_text: str, urls: Urls) -> str:
    """The payload's HLS index with each segment key turned into a URL the page can fetch."""
    wanted = set(segment_keys(index_text))
    lines = [
        urls.url(line.strip()) if line.strip() in wanted else line
        for line in index_text.splitlines()
    ]
    return "\n".join(lines) + "\n"


def _slide(payload: SlidePayload, urls: Urls) -> SlideView:
    view = SlideView(dzi=urls.url(payload.storage_dzi_key))
    if isinstance(urls, RelativeUrls):
        return view  # OpenSeadragon finds the tiles beside the descriptor
    # A bucket: no relative tile paths, so each tile the viewer may ask for is signed.
    slot = SlotLayout.containing(payload.storage_dzi_key)
    if slot is None:
        return view
    levels = dzi_grid(payload.width, payload.height)
    tiles: dict[str, str] = {}
    max_level = -1
    for level, (cols, rows) in enumerate(levels):
        if len(tiles) + cols * rows > MAX_SIGNED_TILES:
            break
        for col in range(cols):
            for row in range(rows):
                tiles[f"{level}/{col}_{row}"] = urls.url(slot.key(Rel.tile(level, col, row)))
        max_level = level
    view.tiles, view.max_level, view.levels = tiles, max_level, len(levels)
    view.width, view.height = payload.width, payload.height
    return view


def dzi_grid(width: int, height: int) -> list[tuple[int, int]]:
    """Tile columns and rows of each Deep Zoom level, level 0 being 1x1 pixel."""
    count = math.ceil(math.log2(max(width, height, 1))) + 1
    grid = []
    for level in range(count):
        scale = 2 ** (count - 1 - level)
        w, h = max(1, math.ceil(width / scale)), max(1, math.ceil(height / scale))
        grid.append((math.ceil(w / TILE_SIZE), math.ceil(h / TILE_SIZE)))
    return grid
