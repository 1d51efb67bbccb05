"""The Deep Zoom pyramid of a slide, produced and written tile by tile.

Tiles are 254 px with 1 px overlap (SPEC 4.3), so most are 256 px square, the size viewers fetch
best. Each tile is read from the slide level closest to its scale, composited on the slide's
background colour (OpenSlide returns unscanned areas transparent), encoded and handed to the
sink at once: memory holds one tile plus what the sink's bounded queue holds, however large the
slide.
"""

from __future__ import annotations

import io
import logging

from openslide import OpenSlide
from openslide.deepzoom import DeepZoomGenerator
from PIL import ImageCms

from worker.layout import Rel
from worker.media import ProgressCallback, Sink

log = logging.getLogger(__name__)

TILE_SIZE = 254
OVERLAP = 1
TILE_FORMAT = "jpeg"
TILE_JPEG_QUALITY = 80
PROGRESS_EVERY = 64
"""Report progress every this many tiles: a callback per tile would cost more than it tells."""


def deep_zoom(slide: OpenSlide, limit_bounds: bool = False) -> DeepZoomGenerator:
    """The generator for SPEC 4.3's pyramid.

    `limit_bounds` is off by default so that Deep Zoom pixel coordinates are the slide's level-0
    coordinates: annotations drawn in the viewer then map to the slide without an offset."""
    return DeepZoomGenerator(slide, tile_size=TILE_SIZE, overlap=OVERLAP, limit_bounds=limit_bounds)


def write_pyramid(
    generator: DeepZoomGenerator,
    sink: Sink,
    progress: ProgressCallback,
    to_srgb: ImageCms.ImageCmsTransform | None = None,
) -> int:
    """Write `Rel.DZI` and every tile, smallest level first; returns the tile count."""
    sink.put_bytes(Rel.DZI, generator.get_dzi(TILE_FORMAT).encode(), "application/xml")
    total = generator.tile_count
    done = 0
    progress("tiles", 0, total)
    for level in range(generator.level_count):
        cols, rows = generator.level_tiles[level]
        for row in range(rows):
            for col in range(cols):
                sink.put_bytes(
                    Rel.tile(level, col, row),
                    _encode(generator, level, col, row, to_srgb),
                    "image/jpeg",
                )
                done += 1
                if done % PROGRESS_EVERY == 0:
                    progress("tiles", done, total)
    progress("tiles", done, total)
    log.debug("wrote %d Deep Zoom tiles in %d levels", done, generator.level_count)
    return done


def _encode(
    generator: DeepZoomGenerator,
    level: int,
    col: int,
    row: int,
    to_srgb: ImageCms.ImageCmsTransform | None,
) -> bytes:
    tile = generator.get_tile(level, (col, row))
    if to_srgb is not None:
        tile = ImageCms.applyTransform(tile, to_srgb)
    out = io.BytesIO()
    tile.save(out, "JPEG", quality=TILE_JPEG_QUALITY)
    return out.getvalue()
