"""Media processors: a local file in, renditions out through a `Sink`.

Processors know nothing of buckets, keys or Celery. They name each output with `worker.layout.Rel`
and hand it to the sink, which the pipeline backs with a bounded, concurrent storage writer (or a
local folder in tests). Each processor returns a typed result that `worker.payloads` turns into a
registration payload.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

THUMBNAIL_BOX = (356, 200)
"""Every thumbnail (image, video, slide) fits within this box, aspect kept."""
THUMBNAIL_QUALITY = 85
"""JPEG quality of every `thumbnail.jpg`: small previews, where 85 is visually lossless."""
DISPLAY_QUALITY = 90
"""JPEG quality of full-resolution renditions people look at closely (`display.jpg`, a slide's
associated images)."""


def fit_thumbnail(size: tuple[int, int], box: tuple[int, int] = THUMBNAIL_BOX) -> tuple[int, int]:
    """The size that fits `size` within `box`, aspect kept; small images are not enlarged."""
    width, height = size
    if width <= box[0] and height <= box[1]:
        return size
    scale = min(box[0] / width, box[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


ProgressCallback = Callable[[str, int, int | None], None]
"""Called as progress(stage, done, total); total is None when unknown."""


def no_progress(stage: str, done: int, total: int | None) -> None:
    return None


class Sink(Protocol):
    """Where a processor puts its outputs. Writes may happen in the background; the pipeline
    waits for all of them (and surfaces their errors) before it commits the item."""

    def put_bytes(
        self, rel: str, data: bytes, content_type: str, content_encoding: str | None = None
    ) -> None: ...

    def put_file(
        self,
        rel: str,
        path: Path,
        content_type: str,
        content_encoding: str | None = None,
        delete_after: bool = False,
    ) -> None: ...


@dataclass
class ImageResult:
    width: int
    height: int
    display_rel: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class HlsRendition:
    index_text: str
    """The index as written, segment lines as relative file names (`000000000.ts`)."""
    bitrate: int
    """Average bits per second over the whole rendition."""
    segment_count: int


@dataclass
class VideoResult:
    width: int
    height: int
    native_fps: float
    fps: float
    visible_frames: int
    total_frames: int
    sections_ext: str
    hls_high: HlsRendition
    hls_low: HlsRendition
    has_audio: bool
    warnings: list[str] = field(default_factory=list)


@dataclass
class SlideResult:
    width: int
    height: int
    level_count: int
    dzi_levels: int
    tile_count: int
    mpp_x: float | None
    mpp_y: float | None
    objective_power: float | None
    vendor: str | None
    associated: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


MediaResult = ImageResult | VideoResult | SlideResult
