"""What a pre-extracted asset or a payload claims, checked before verification believes it.

A read-only bucket's `metadata.json`, `.dzi` and `audio_peaks.gz` are written by someone else:
a payload may claim 30 million frames, a descriptor 10^14 pixels, a gzip member gigabytes. Each
count or size is checked against the limits and against the source's own facts (the payload's
size, the source object's bytes) before any list is built or any byte inflated; a claim that
fails is reported as the invalid asset it is, with why (`missing_assets`).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass

from worker.config import Limits
from worker.payloads import ImagePayload, Payload, SlidePayload, VideoPayload

MAX_DZI_LEVELS = 40
"""2^40 pixels a side: no slide comes near."""
MIN_TILE_SIZE = 16
GZIP_SLACK = 64 * 1024
INFLATE_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Claim:
    key: str
    problem: str


def payload_claims(payload: Payload, limits: Limits) -> list[Claim]:
    """The claims of a payload that are over the limits or contradict each other, as its
    kind's registry entry checks them."""
    from worker.kinds.registry import kind_of_payload

    return kind_of_payload(payload).claims(payload, limits)


def image_claims(payload: ImagePayload, limits: Limits) -> list[Claim]:
    if _area(payload.width, payload.height) > limits.max_image_pixels:
        return [Claim(payload.storage_key, _over("pixels", payload, limits.max_image_pixels))]
    return []


def _area(width: int, height: int) -> int:
    return max(width, 0) * max(height, 0)


def _over(what: str, payload: Payload, limit: int) -> str:
    return (
        f"invalid: the payload claims {payload.width}x{payload.height} {what}, over the limit"
        f" of {limit:,}; extract the item again"
    )


def video_claims(payload: VideoPayload, limits: Limits) -> list[Claim]:
    manifest = payload.storage_frames_manifest_key
    if not 0 <= payload.visible_frames <= payload.total_frames:
        return [Claim(manifest, "invalid: visible_frames must be between 0 and total_frames")]
    if payload.total_frames > limits.max_video_frames:
        return [
            Claim(
                manifest,
                f"invalid: the payload claims {payload.total_frames:,} frames, over"
                f" limits.max_video_frames ({limits.max_video_frames:,}); extract it again",
            )
        ]
    if payload.width > limits.max_video_width or payload.height > limits.max_video_height:
        return [
            Claim(
                payload.storage_thumbnail_key,
                f"invalid: the payload claims {payload.width}x{payload.height}, over the limit"
                f" of {limits.max_video_width}x{limits.max_video_height}; extract it again",
            )
        ]
    if payload.total_frames > max(payload.total_size_bytes, 0):
        return [
            Claim(
                manifest,
                f"invalid: the payload claims {payload.total_frames:,} frames in"
                f" {payload.total_size_bytes:,} bytes, which cannot hold them",
            )
        ]
    return []


def slide_claims(payload: SlidePayload, limits: Limits) -> list[Claim]:
    if _area(payload.width, payload.height) > limits.max_slide_pixels:
        return [Claim(payload.storage_dzi_key, _over("pixels", payload, limits.max_slide_pixels))]
    most = max_tiles(payload.width, payload.height)
    if not 0 <= payload.tile_count <= most:
        return [
            Claim(
                payload.storage_dzi_key,
                f"invalid: the payload claims {payload.tile_count:,} tiles; a"
                f" {payload.width}x{payload.height} slide has at most {most:,}",
            )
        ]
    return []


def max_tiles(width: int, height: int, tile: int = 254) -> int:
    """Tiles of a Deep Zoom pyramid of `tile` px over a `width` x `height` slide."""
    return sum(cols * rows for cols, rows in pyramid(width, height, tile))


def pyramid(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    """Columns and rows of each Deep Zoom level, smallest first, as OpenSlide's generator makes
    them: halve (rounding up) down to 1x1, then count tiles of `tile` px."""
    dims = [(max(width, 1), max(height, 1))]
    while dims[-1] != (1, 1) and len(dims) <= MAX_DZI_LEVELS:
        w, h = dims[-1]
        dims.append((max(1, math.ceil(w / 2)), max(1, math.ceil(h / 2))))
    return [(math.ceil(w / tile), math.ceil(h / tile)) for w, h in reversed(dims)]


def dzi_levels(dzi: bytes, payload: SlidePayload) -> list[tuple[int, int]]:
    """The levels a `.dzi` describes, once its size and tile size agree with the payload;
    ValueError saying why not."""
    root = ET.fromstring(dzi)
    size = next(el for el in root.iter() if el.tag.endswith("Size"))
    tile = int(root.attrib["TileSize"])
    width, height = int(size.attrib["Width"]), int(size.attrib["Height"])
    if (width, height) != (payload.width, payload.height):
        raise ValueError(
            f"it describes {width}x{height} pixels, the payload {payload.width}x{payload.height}"
        )
    if tile < MIN_TILE_SIZE:
        raise ValueError(f"its TileSize {tile} is below {MIN_TILE_SIZE}")
    return pyramid(width, height, tile)


def inflate_capped(data: bytes, cap: int) -> int:
    """The decompressed size of gzip `data` (every member), inflating at most `cap` bytes, one
    buffer's worth at a time; ValueError past `cap`, zlib.error when it is not gzip."""
    total, pending = 0, data
    while pending:
        inflater = zlib.decompressobj(wbits=31)
        while pending and not inflater.eof:
            total += len(inflater.decompress(pending, INFLATE_CHUNK))
            if total > cap:
                raise ValueError(f"it inflates to more than {cap:,} bytes, more than it can hold")
            pending = inflater.unconsumed_tail
        if not inflater.eof:
            raise zlib.error("the gzip stream is truncated")
        pending = inflater.unused_data
    return total


def peaks_cap(payload: VideoPayload, limits: Limits) -> int:
    """Audio peaks are 1 byte per millisecond: the video's own duration (frames / rate), never
    more than the longest video allowed, plus slack."""
    seconds = limits.max_video_seconds
    if payload.native_fps > 0:
        seconds = min(seconds, payload.total_frames / payload.native_fps + 60)
    return int(seconds * 1000) + GZIP_SLACK


MANIFEST_LINE_BYTES = 64
"""`FRAME_IN_SEGMENT:SEGMENT:VISIBLE:TIMESTAMP` takes about 25 bytes; 64 is generous."""


def manifest_cap(payload: VideoPayload) -> int:
    """The most bytes a manifest of `total_frames` lines can take: read no more than that."""
    return max(payload.total_frames, 1) * MANIFEST_LINE_BYTES + 4096
