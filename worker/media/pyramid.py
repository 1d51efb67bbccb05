"""A Deep Zoom pyramid built in one pass over the full-resolution image, top to bottom.

The full-resolution level is fed in horizontal strips. Each level cuts a row of tiles as soon as
its rows are complete, halves the rows it holds with a 2x2 box filter (as libvips' `dzsave` does)
and feeds them to the level below, then forgets every row it no longer needs. So the slide is
decoded once, at full resolution only, and memory holds a strip and at most a tile row (plus
overlap) per level: it grows with the image's width, never with its area. `build_stripe` makes
the largest levels of a column stripe of the image alone, so that a wide image can be made
stripe by stripe (the caller assembles the next level whole from the stripes, on a `Canvas`).

Tiles follow OpenSlide's `DeepZoomGenerator` geometry exactly: level `L` is the full image halved
(rounding up) `levels - 1 - L` times; tile (col, row) covers `[col * size - overlap, (col + 1) *
size + overlap)` clipped to the level, with no overlap on the image's outer edges.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Region:
    """A rectangle of one level as crops of the strips that hold it. `image()` may run on any
    thread: strips are never modified once received."""

    size: tuple[int, int]
    parts: tuple[tuple[Image.Image, Box, int], ...]
    """(strip, box within the strip, row within the region) for each strip it spans."""

    def image(self) -> Image.Image:
        if len(self.parts) == 1:
            strip, box, _ = self.parts[0]
            return strip if box == (0, 0, *strip.size) else strip.crop(box)
        out = Image.new(self.parts[0][0].mode, self.size)
        for strip, box, row in self.parts:
            # The whole strip, placed so that its box lands at (0, row): pasting clips to
            # `out`, and strips do not overlap, so only the box is copied, and once.
            out.paste(strip, (-box[0], row - box[1]))
        return out


TileFn = Callable[[int, int, int, Region], None]
"""tile(level, col, row, region): called once per tile, in the order tiles become complete."""


def level_sizes(width: int, height: int) -> list[tuple[int, int]]:
    """Pixel size of every Deep Zoom level, smallest (1x1) first."""
    sizes = [(width, height)]
    while sizes[-1] != (1, 1):
        w, h = sizes[-1]
        sizes.append((max(1, math.ceil(w / 2)), max(1, math.ceil(h / 2))))
    return sizes[::-1]


class Level:
    """One Deep Zoom level receiving its rows top to bottom, in strips it keeps (never copies)
    until no tile or lower level needs them."""

    def __init__(
        self,
        level: int,
        size: tuple[int, int],
        tile_size: int,
        overlap: int,
        below: Level | Canvas | None,
        tile: TileFn,
        part: tuple[int, int, range] | None = None,
    ) -> None:
        """`part`, when the level receives only some of its columns: (the level's full width,
        the first column received, the tile columns to cut, which must lie in those)."""
        self.level = level
        self.width, self.height = size
        self.tile_size = tile_size
        self.overlap = overlap
        self.below = below
        self.tile = tile
        self.full_width, self.offset, self.columns = part or (
            self.width,
            0,
            range(math.ceil(self.width / tile_size)),
        )
        self.rows = math.ceil(self.height / tile_size)
        self.strips: deque[tuple[int, Image.Image]] = deque()
        """(first row, strip) for every strip still needed."""
        self.end = 0
        """Rows received so far."""
        self.next_row = 0
        """Next tile row to cut."""
        self.passed = 0
        """Rows above this one have been handed, halved, to the level below."""

    def push(self, strip: Image.Image, halved: Image.Image | None = None) -> None:
        """Append the next `strip.height` rows of the level. `halved` is the strip already
        reduced by 2, when the caller made it (on another thread) from a strip starting on an
        even row with an even height (or ending the level)."""
        start = self.end
        self.strips.append((start, strip))
        self.end += strip.height
        self._cut_tiles()
        if halved is not None and self.below is not None and self.passed == start:
            self.below.push(halved)
            self.passed = self.end
        self._pass_down()
        self._forget()

    def _span(self, index: int, limit: int) -> tuple[int, int]:
        start = index * self.tile_size
        return max(0, start - self.overlap), min(limit, start + self.tile_size + self.overlap)

    def _region(self, x0: int, y0: int, x1: int, y1: int) -> Region:
        parts = tuple(
            (strip, (x0, max(y0, top) - top, x1, min(y1, top + strip.height) - top), top - y0)
            for top, strip in self.strips
            if top < y1 and y0 < top + strip.height
        )
        return Region((x1 - x0, y1 - y0), tuple((s, b, max(0, r)) for s, b, r in parts))

    def _cut_tiles(self) -> None:
        while self.next_row < self.rows:
            y0, y1 = self._span(self.next_row, self.height)
            if y1 > self.end:
                return
            for col in self.columns:
                x0, x1 = (x - self.offset for x in self._span(col, self.full_width))
                self.tile(self.level, col, self.next_row, self._region(x0, y0, x1, y1))
            self.next_row += 1

    def _pass_down(self) -> None:
        if self.below is None:
            return
        # Pairs of rows only, so that each halved row averages the same rows as a whole-image
        # reduction would; the image's last odd row is averaged alone.
        available = self.end - self.passed
        count = available if self.end == self.height else available // 2 * 2
        if count <= 0:
            return
        rows = self._region(0, self.passed, self.width, self.passed + count).image()
        self.below.push(rows.reduce(2))
        self.passed += count

    def _forget(self) -> None:
        keep_from = self.passed if self.below is not None else self.height
        if self.next_row < self.rows:
            keep_from = min(keep_from, self._span(self.next_row, self.height)[0])
        while self.strips and self.strips[0][0] + self.strips[0][1].height <= keep_from:
            self.strips.popleft()

    @property
    def done(self) -> bool:
        return self.next_row == self.rows


class Canvas:
    """A whole level assembled from the halved rows of column stripes (each stripe pushes its
    rows top to bottom into its own `Canvas` at its column). Columns that two stripes share get
    the same pixels from both."""

    def __init__(self, image: Image.Image, x: int) -> None:
        self.image = image
        self.x = x
        self.end = 0

    def push(self, strip: Image.Image, halved: Image.Image | None = None) -> None:
        self.image.paste(strip, (self.x, self.end))
        self.end += strip.height


def build_stripe(
    size: tuple[int, int],
    columns: tuple[int, int],
    owned: tuple[int, int],
    depth: int,
    tile_size: int,
    overlap: int,
    tile: TileFn,
    below: Canvas | None,
) -> tuple[Level, list[Level]]:
    """The `depth` largest levels of the image of `size` for its full-resolution columns
    `columns` (x0, x1), cutting the tiles whose left edge lies in `owned` (x0, x1, full
    resolution, each a multiple of `tile_size` times 2 ** (depth - 1)). `columns` starts on a
    multiple of 2 ** depth and ends on one or on the image's edge, so halving the stripe alone
    gives the pixels that halving the whole image would; the next level's rows go to `below`."""
    sizes = level_sizes(*size)
    x0, x1 = columns
    levels: list[Level] = []
    chained: Level | Canvas | None = below
    for halvings in range(depth - 1, -1, -1):
        index = len(sizes) - 1 - halvings
        full_width, height = sizes[index]
        first, last = (math.ceil(x / (tile_size << halvings)) for x in owned)
        cut = range(first, min(last, math.ceil(full_width / tile_size)))
        width = math.ceil((x1 - x0) / (1 << halvings))
        part = (full_width, x0 >> halvings, cut)
        chained = Level(index, (width, height), tile_size, overlap, chained, tile, part)
        levels.append(chained)
    assert isinstance(chained, Level)
    return chained, levels


def build_levels(
    width: int, height: int, tile_size: int, overlap: int, tile: TileFn
) -> tuple[Level, list[Level]]:
    """The chain of levels; feed the full-resolution image to the first one returned."""
    below: Level | None = None
    levels = []
    for index, size in enumerate(level_sizes(width, height)):
        below = Level(index, size, tile_size, overlap, below, tile)
        levels.append(below)
    assert below is not None
    return below, levels
