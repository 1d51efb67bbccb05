"""The Deep Zoom pyramid of a slide: read once at full resolution, built in memory, encoded in
parallel, written through the sink.

Tiles are 254 px with 1 px overlap (SPEC 4.3), so most are 256 px square, the size viewers fetch
best. The geometry, names and sizes are those of OpenSlide's `DeepZoomGenerator`. Instead of
reading every tile of every level from the slide, the full-resolution image is read in bands of
whole rows (several at once: OpenSlide decodes without holding the GIL; a plain JPEG TIFF or SVS
is decoded tile by tile without OpenSlide, `worker.media.jpegtiff`) and each lower level is
made from the one above by halving (`worker.media.pyramid`), as libvips' `dzsave` does. Unscanned
areas (transparent in OpenSlide) are composited on the slide's background colour; rows and
columns outside the slide's reported bounds are not read at all. Tiles of one flat colour, such
as background, are encoded once per size and colour. Memory holds a few bands, a tile row per
level and a bounded number of tiles waiting to be encoded or written, so it does not grow with
the slide's height. A slide wider than `STRIPE_WIDTH` is made in column stripes (`plan_stripes`):
each stripe makes the largest levels' tiles over its columns, down to a level small enough to
hold whole, from which the smaller levels are made; so memory does not grow with the width
either (bench/RESULTS-slides.md: 16k to 64k px wide at one pixel count).
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element, ElementTree, SubElement

import openslide
from openslide import OpenSlide
from PIL import Image, ImageCms

from worker.layout import Rel
from worker.media import ProgressCallback, Sink, jpegtiff
from worker.media.pyramid import Canvas, Region, build_levels, build_stripe, level_sizes

log = logging.getLogger(__name__)

TILE_SIZE = 254
OVERLAP = 1
TILE_FORMAT = "jpeg"
TILE_JPEG_QUALITY = 80
PROGRESS_EVERY = 64
"""Report progress every this many tiles: a callback per tile would cost more than it tells."""
BAND_PIXELS = 4 * 1024**2
"""Pixels per band of full-resolution rows (12 MB as RGB); at least one row of stored tiles."""
BANDS_AHEAD = 2
"""Bands being read while the pyramid takes in the current one (keeps the pool busy when the
main thread waits for a core)."""
STRIPE_WIDTH = 16384
"""Full-resolution columns a slide is read in at most (about: stripes are a multiple of a
tile of the smallest level they make), so that memory does not grow with the slide's width."""
WHOLE_LEVEL_BYTES = 32 * 1024**2
"""The largest level held whole (as 4-byte pixels) when a wide slide is made in stripes."""
READ_PIXELS = 1024**2
"""Pixels per read from the slide at most (4 MB as RGBA)."""
TILES_IN_FLIGHT = 128
"""Tiles being encoded or waiting for the sink (each keeps the rows it is cut from alive)."""
FLAT_TILES_KEPT = 256
"""Encoded flat tiles remembered (background is one colour; a few sizes at the edges)."""
Rgb = tuple[int, int, int]


@dataclass(frozen=True)
class DeepZoom:
    """Where the pyramid's full-resolution image lies in the slide, and its geometry."""

    origin: tuple[int, int]
    """Level-0 slide coordinates of the image's top-left pixel."""
    size: tuple[int, int]
    bounds: tuple[int, int, int, int] | None
    """The part of the image the slide reports non-empty (x0, y0, x1, y1), if it does."""

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return level_sizes(*self.size)

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def level_tiles(self) -> list[tuple[int, int]]:
        """Tiles (across, down) of each level, smallest level first."""
        return [
            (math.ceil(w / TILE_SIZE), math.ceil(h / TILE_SIZE)) for w, h in self.level_dimensions
        ]

    @property
    def tiles_per_level(self) -> list[int]:
        return [cols * rows for cols, rows in self.level_tiles]

    @property
    def tile_count(self) -> int:
        return sum(self.tiles_per_level)

    def dzi(self) -> str:
        """The `.dzi` descriptor, as OpenSlide's `DeepZoomGenerator.get_dzi` writes it."""
        image = Element(
            "Image",
            TileSize=str(TILE_SIZE),
            Overlap=str(OVERLAP),
            Format=TILE_FORMAT,
            xmlns="http://schemas.microsoft.com/deepzoom/2008",
        )
        SubElement(image, "Size", Width=str(self.size[0]), Height=str(self.size[1]))
        out = io.BytesIO()
        ElementTree(image).write(out, encoding="UTF-8")
        return out.getvalue().decode("UTF-8")


def deep_zoom(slide: OpenSlide, limit_bounds: bool = False) -> DeepZoom:
    """The pyramid of SPEC 4.3 for `slide`.

    `limit_bounds` is off by default so that Deep Zoom pixel coordinates are the slide's level-0
    coordinates: annotations drawn in the viewer then map to the slide without an offset. On, the
    image is the slide's non-empty bounds, as OpenSlide's generator computes them."""
    width, height = slide.dimensions
    props = slide.properties
    try:
        x = int(props[openslide.PROPERTY_NAME_BOUNDS_X])
        y = int(props[openslide.PROPERTY_NAME_BOUNDS_Y])
        w = int(props[openslide.PROPERTY_NAME_BOUNDS_WIDTH])
        h = int(props[openslide.PROPERTY_NAME_BOUNDS_HEIGHT])
    except (KeyError, ValueError):
        return DeepZoom((0, 0), (width, height), None)
    if not limit_bounds:
        return DeepZoom((0, 0), (width, height), (x, y, x + w, y + h))
    # The same arithmetic as the generator, so that sizes agree to the pixel.
    size = (math.ceil(width * (w / width)), math.ceil(height * (h / height)))
    return DeepZoom((x, y), size, (0, 0, *size))


def write_pyramid(
    slide: OpenSlide,
    pyramid: DeepZoom,
    sink: Sink,
    progress: ProgressCallback,
    background: Rgb,
    to_srgb: ImageCms.ImageCmsTransform | None = None,
    threads: int | None = None,
    path: Path | None = None,
) -> int:
    """Write `Rel.DZI` and every tile; returns the tile count. With the slide's `path`, the
    full-resolution level of a plain JPEG TIFF is decoded directly (`worker.media.jpegtiff`)."""
    sink.put_bytes(Rel.DZI, pyramid.dzi().encode(), "application/xml")
    threads = threads or _cpu_count()
    direct = jpegtiff.open_level0(path, slide) if path and pyramid.origin == (0, 0) else None
    source = _Source(slide, pyramid, background, to_srgb, direct)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="deepzoom")
    try:
        writer = _TileWriter(pool, sink, progress, pyramid.tile_count)
        depth, stripes = plan_stripes(*pyramid.size)
        sizes = pyramid.level_dimensions
        below = None if depth == len(sizes) else Image.new("RGB", sizes[-1 - depth])
        for owned in stripes:
            _write_stripe(source, pool, writer, owned, depth, threads, below)
        if below is not None:
            # The smaller levels, from the level the stripes made whole together.
            top, levels = build_levels(*below.size, TILE_SIZE, OVERLAP, writer.submit)
            top.push(below)
            assert all(level.done for level in levels)
        writer.finish()
    finally:
        # On failure, reads and encodes not started yet are dropped, not run.
        pool.shutdown(wait=True, cancel_futures=True)
        if direct is not None:
            direct.close()
    log.debug("wrote %d Deep Zoom tiles in %d levels", writer.done, pyramid.level_count)
    return writer.done


def plan_stripes(width: int, height: int) -> tuple[int, list[tuple[int, int]]]:
    """(levels made stripe by stripe, each stripe's full-resolution columns (x0, x1) whose
    tiles it cuts). A slide up to `STRIPE_WIDTH` wide is one stripe making every level; a wider
    one is cut into stripes of about that width, each making the largest levels down to one
    small enough to hold whole (`WHOLE_LEVEL_BYTES`), from which the rest are made: memory
    then depends on neither the slide's width nor its height."""
    levels = len(level_sizes(width, height))
    if width <= STRIPE_WIDTH:
        return levels, [(0, width)]
    depth = 1
    while depth < levels - 1 and _pixels(width, height, depth) * 4 > WHOLE_LEVEL_BYTES:
        depth += 1
    unit = TILE_SIZE << (depth - 1)
    step = max(1, STRIPE_WIDTH // unit) * unit
    return depth, [(x, min(x + step, width)) for x in range(0, width, step)]


def _pixels(width: int, height: int, halvings: int) -> int:
    scale = 1 << halvings
    return math.ceil(width / scale) * math.ceil(height / scale)


def _write_stripe(
    source: _Source,
    pool: ThreadPoolExecutor,
    writer: _TileWriter,
    owned: tuple[int, int],
    depth: int,
    threads: int,
    below: Image.Image | None,
) -> None:
    width = source.pyramid.size[0]
    # Columns read: the owned ones and what their tiles' overlap and halving need, aligned so
    # that halving the stripe alone gives the whole image's pixels.
    align, margin = 1 << depth, 1 << (depth - 1)
    x0 = max(0, (owned[0] - margin) // align * align)
    x1 = min(width, math.ceil((owned[1] + margin) / align) * align)
    canvas = None if below is None else Canvas(below, x0 >> depth)
    top, levels = build_stripe(
        source.pyramid.size, (x0, x1), owned, depth, TILE_SIZE, OVERLAP, writer.submit, canvas
    )
    reader = _BandReader(source, (x0, x1), threads)
    for band in reader.prefetched(pool):
        top.push(*band())
    assert all(level.done for level in levels)


def _stored_tile(slide: OpenSlide, side: str) -> int:
    """The slide's stored tile size; 256 when absent or implausible (a file's claim, and bands
    are sized from it)."""
    try:
        value = int(slide.properties.get(f"openslide.level[0].tile-{side}", 256))
    except ValueError:
        return 256
    return value if 16 <= value <= 4096 else 256


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


Band = tuple[Image.Image, Image.Image | None]
"""Rows of the full-resolution image, and the same rows halved when that can be done alone (the
rows start on an even row and column and span an even number of each, or end the image)."""


@dataclass(frozen=True)
class _Source:
    """Where and how the full-resolution image is read."""

    slide: OpenSlide
    pyramid: DeepZoom
    background: Rgb
    to_srgb: ImageCms.ImageCmsTransform | None
    direct: jpegtiff.JpegTiffLevel | None


class _BandReader:
    """Bands of the image's columns `stripe` (x0, x1), RGB on the slide's background colour,
    read on the pool: through OpenSlide as a few column pieces each, so that every thread
    decodes; directly from a JPEG TIFF whole, several bands at once."""

    def __init__(self, source: _Source, stripe: tuple[int, int], threads: int) -> None:
        self.slide = source.slide
        self.direct = source.direct
        self.pyramid = source.pyramid
        self.background = source.background
        self.to_srgb = source.to_srgb
        self.x0, self.x1 = stripe
        width = self.x1 - self.x0
        # Bands and pieces follow the slide's own tiles, so that no stored tile is decoded twice.
        stored_w, stored_h = _stored_tile(self.slide, "width"), _stored_tile(self.slide, "height")
        self.rows = stored_h * max(1, BAND_PIXELS // (width * stored_h))
        # A direct read of whole bands keeps every thread decoding, as `BANDS_AHEAD` bands are
        # read at once, and spares pasting pieces into a band; OpenSlide's reads are bounded
        # (`READ_PIXELS`, as RGBA) and split so that every thread works on the band at hand.
        if self.direct is not None and threads <= BANDS_AHEAD + 1:
            pieces = 1
        else:
            pieces = max(threads, math.ceil(width * self.rows / READ_PIXELS))
        columns = math.ceil(width / pieces / stored_w) * stored_w
        self.columns = columns + columns % 2

    def prefetched(self, pool: ThreadPoolExecutor) -> Iterator[Callable[[], Band]]:
        """Each band, read while the caller uses the ones before it."""
        queued: deque[Callable[[], Band]] = deque()
        for y, rows in self._bands():
            queued.append(self._submit(pool, y, rows))
            if len(queued) > BANDS_AHEAD:
                yield queued.popleft()
        yield from queued

    def _bands(self) -> Iterator[tuple[int, int]]:
        height = self.pyramid.size[1]
        first = self.rows - self.pyramid.origin[1] % self.rows
        yield 0, min(first, height)
        for y in range(first, height, self.rows):
            yield y, min(self.rows, height - y)

    def _submit(self, pool: ThreadPoolExecutor, y: int, rows: int) -> Callable[[], Band]:
        height = self.pyramid.size[1]
        width = self.x1 - self.x0
        x0, x1 = self.x0, self.x1
        if self.pyramid.bounds is not None:
            bx0, by0, bx1, by1 = self.pyramid.bounds
            x0, x1 = (bx0, bx1) if by0 < y + rows and y < by1 else (0, 0)
            # Even edges keep pieces halvable; the extra column is outside the bounds (empty).
            x0, x1 = max(self.x0, x0 - x0 % 2), min(self.x1, x1 + x1 % 2)
        pieces = []
        for left in range(x0 - x0 % self.columns, x1, self.columns):
            start, stop = max(left, x0), min(left + self.columns, x1)
            pieces.append((start, pool.submit(self._read, start, y, (stop - start, rows))))
        halvable = y % 2 == 0 and (rows % 2 == 0 or y + rows == height)

        def assemble() -> Band:
            if len(pieces) == 1 and pieces[0][0] == self.x0 and x1 == self.x1:
                band, half = pieces.pop()[1].result()
                return band, half if halvable else None
            band = Image.new("RGB", (width, rows), self.background)
            half_size = (math.ceil(width / 2), math.ceil(rows / 2))
            halved: Image.Image | None = Image.new("RGB", half_size, self.background)
            while pieces:  # popped, so that each piece is freed once pasted
                left, piece = pieces.pop()
                rgb, half = piece.result()
                band.paste(rgb, (left - self.x0, 0))
                if halved is not None and half is not None:
                    halved.paste(half, ((left - self.x0) // 2, 0))
                else:
                    halved = None
            return band, halved if halvable else None

        return assemble

    def _read(self, x: int, y: int, size: tuple[int, int]) -> Band:
        if self.direct is not None:
            flat = self.direct.read(x, y, size, self.background)
        else:
            flat = self._read_openslide(x, y, size)
        if self.to_srgb:
            flat = ImageCms.applyTransform(flat, self.to_srgb)
        even = x % 2 == 0 and (size[0] % 2 == 0 or x + size[0] == self.pyramid.size[0])
        return flat, flat.reduce(2) if even else None

    def _read_openslide(self, x: int, y: int, size: tuple[int, int]) -> Image.Image:
        ox, oy = self.pyramid.origin
        region = self.slide.read_region((ox + x, oy + y), 0, size)
        if region.getchannel("A").getextrema() == (255, 255):
            flat = region.convert("RGB")
        else:
            flat = Image.new("RGB", size, self.background)
            flat.paste(region, mask=region)
        return flat


class _TileWriter:
    """Encodes tiles on the pool and hands them to the sink in the order they were cut."""

    def __init__(
        self, pool: ThreadPoolExecutor, sink: Sink, progress: ProgressCallback, total: int
    ) -> None:
        self.pool = pool
        self.sink = sink
        self.progress = progress
        self.total = total
        self.done = 0
        self.queued: deque[tuple[str, Future[bytes]]] = deque()
        self.flat: dict[tuple[int, int, object], bytes] = {}
        progress("tiles", 0, total)

    def submit(self, level: int, col: int, row: int, region: Region) -> None:
        encoded = self.pool.submit(self._encode, region)
        self.queued.append((Rel.tile(level, col, row), encoded))
        while len(self.queued) > TILES_IN_FLIGHT:
            self._put_oldest()

    def finish(self) -> None:
        while self.queued:
            self._put_oldest()
        self.progress("tiles", self.done, self.total)

    def _put_oldest(self) -> None:
        rel, encoded = self.queued.popleft()
        self.sink.put_bytes(rel, encoded.result(), "image/jpeg")
        self.done += 1
        if self.done % PROGRESS_EVERY == 0:
            self.progress("tiles", self.done, self.total)

    def _encode(self, region: Region) -> bytes:
        tile = region.image()
        # One flat colour (background, empty glass) encodes to the same bytes every time.
        # Counting up to one colour tells it in C with no copy, and stops at a second colour.
        colours = tile.getcolors(1)
        key = (tile.width, tile.height, colours[0][1] if colours else None)
        if colours and key in self.flat:
            return self.flat[key]
        out = io.BytesIO()
        tile.save(out, "JPEG", quality=TILE_JPEG_QUALITY)
        if colours and len(self.flat) < FLAT_TILES_KEPT:
            self.flat[key] = out.getvalue()
        return out.getvalue()
