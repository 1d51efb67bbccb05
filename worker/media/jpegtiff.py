"""The full-resolution level of a JPEG tiled TIFF, decoded tile by tile without OpenSlide.

OpenSlide's `read_region` composites every pixel through cairo: about 40 ns a pixel on the bench
TIFF, more CPU than libvips' whole Deep Zoom job (bench/RESULTS-slides.md). Decoding the stored
JPEG tiles directly with libjpeg-turbo (through Pillow, which releases the GIL while decoding)
costs a few ns a pixel. Only the common layout is read this way: a generic tiled TIFF or an Aperio
SVS whose level 0 is 8-bit, 3 samples, chunky, JPEG with YCbCr or RGB photometric. Each tile is
decoded as OpenSlide decodes it (the directory's JPEG tables merged in, the colour space taken
from the photometric tag, missing tiles left to the background), so pixels are the same. Anything
else (MIRAX, DICOM, other vendors, JPEG 2000, ...) is read through OpenSlide.

The file is hostile (SPEC 11): the directory is read with bounded counts, every tile's offset and
length is checked against the file before it is read, a tile's length is bounded by its pixels,
and a tile that does not decode, or decodes to another size, is `CorruptMedia`.
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path

from openslide import OpenSlide
from PIL import Image, UnidentifiedImageError

from worker.errors import CorruptMedia
from worker.media import tiffheader as t

VENDORS = frozenset({"generic-tiff", "aperio"})
"""OpenSlide formats whose level 0 is one plain tiled TIFF directory, tiles neither overlapping
nor sparse in a vendor-specific way."""
JPEG = 7
JPEG_MODES = {2: "RGB", 6: "YCbCr"}
"""Photometric tag -> the colour space the JPEG data is in (as OpenSlide tells libjpeg)."""
MAX_BYTES_PER_PIXEL = 6
"""A JPEG tile of 8-bit RGB is never near this large (uncompressed is 3); longer is corrupt."""
Rgb = tuple[int, int, int]


class JpegTiffLevel:
    """Level 0 of `path`, read with `os.pread` so that any thread may read any tile."""

    def __init__(
        self,
        path: Path,
        tile: tuple[int, int],
        offsets: tuple[int, ...],
        counts: tuple[int, ...],
        tables: bytes,
        jpeg_mode: str,
        size: tuple[int, int],
    ) -> None:
        self.name = path.name
        self.fd = os.open(path, os.O_RDONLY)
        self.file_size = os.fstat(self.fd).st_size
        self.tile_w, self.tile_h = tile
        self.width, self.height = size
        self.across = math.ceil(self.width / self.tile_w)
        self.offsets, self.counts = offsets, counts
        self.prefix = tables[:-2] if tables.endswith(b"\xff\xd9") else b""
        self.jpeg_mode = jpeg_mode
        self.max_tile_bytes = self.tile_w * self.tile_h * MAX_BYTES_PER_PIXEL + len(tables)

    def close(self) -> None:
        os.close(self.fd)

    def read(self, x: int, y: int, size: tuple[int, int], background: Rgb) -> Image.Image:
        """The RGB pixels of `size` at (x, y), missing tiles in `background`."""
        rows = range(y // self.tile_h, math.ceil((y + size[1]) / self.tile_h))
        cols = range(x // self.tile_w, math.ceil((x + size[0]) / self.tile_w))
        tiles = [(col, row, self.tile(col, row)) for row in rows for col in cols]
        if (
            len(tiles) == 1
            and tiles[0][2] is not None
            and (x, y) == (cols[0] * self.tile_w, rows[0] * self.tile_h)
            and size == tiles[0][2].size
        ):
            return tiles[0][2]
        # Filled only where a tile is missing: filling costs as much as pasting.
        complete = all(tile is not None for _, _, tile in tiles)
        out = Image.new("RGB", size, None if complete else background)
        for col, row, tile in tiles:
            if tile is not None:
                out.paste(tile, (col * self.tile_w - x, row * self.tile_h - y))
        return out

    def tile(self, col: int, row: int) -> Image.Image | None:
        """The decoded tile, or None where the file stores none (OpenSlide: transparent)."""
        index = row * self.across + col
        offset, count = self.offsets[index], self.counts[index]
        if offset == 0 or count == 0:
            return None
        where = f"{self.name}: JPEG tile ({col}, {row}) of the full-resolution level"
        if count > self.max_tile_bytes or offset + count > self.file_size:
            raise CorruptMedia(
                f"{where} lies beyond the file's end or is longer than its pixels could need;"
                " upload the original slide again"
            )
        data = os.pread(self.fd, count, offset)
        if self.prefix and data.startswith(b"\xff\xd8"):
            data = self.prefix + data[2:]
        try:
            return self._decode(data)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            said = "not JPEG data" if isinstance(exc, UnidentifiedImageError) else str(exc)
            said = re.sub(r"\s*\(\d+ bytes not processed\)", "", said)
            raise CorruptMedia(
                f"{where} does not decode ({said}); upload the original slide again"
            ) from None

    def _decode(self, data: bytes) -> Image.Image:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as image:
            if image.size != (self.tile_w, self.tile_h) or image.mode not in ("RGB", "L"):
                raise ValueError(f"a {image.mode} image of {image.size}, not the stored tile size")
            if image.mode == "RGB":
                # The colour space from the photometric tag, as OpenSlide sets it, whatever the
                # JPEG's own markers suggest.
                image.tile = [image.tile[0]._replace(args=("RGB", self.jpeg_mode))]
            image.load()
            return image if image.mode == "RGB" else image.convert("RGB")


def open_level0(path: Path, slide: OpenSlide) -> JpegTiffLevel | None:
    """A direct reader of `slide`'s level 0 when it has the plain JPEG TIFF layout, else None."""
    if slide.properties.get("openslide.vendor") not in VENDORS:
        return None
    size = path.stat().st_size
    with path.open("rb") as stream:
        if not t.is_tiff(stream.read(4)):
            return None
        for directory in t.read_directories(stream, size):
            dims = (directory.get(t.WIDTH), directory.get(t.LENGTH))
            if dims == slide.dimensions and directory.get(t.TILE_WIDTH):
                return _level(path, stream, directory, size, slide)
    return None


def _level(
    path: Path, stream: io.BufferedReader, d: t.Directory, size: int, slide: OpenSlide
) -> JpegTiffLevel | None:
    tile = (d.get(t.TILE_WIDTH), d.get(t.TILE_LENGTH))
    props = slide.properties
    stored = tuple(props.get(f"openslide.level[0].tile-{side}") for side in ("width", "height"))
    simple = (
        d.get(t.COMPRESSION) == JPEG
        and d.get(t.PHOTOMETRIC) in JPEG_MODES
        and d.get(t.SAMPLES) == 3
        and d.get(t.PLANAR, 1) == 1
        and d.array(stream, t.BITS, size, 4) == (8, 8, 8)
        and stored == tuple(str(side) for side in tile)
    )
    if not simple:
        return None
    tiles = math.ceil(slide.dimensions[0] / tile[0]) * math.ceil(slide.dimensions[1] / tile[1])
    offsets = d.array(stream, t.TILE_OFFSETS, size, tiles)
    counts = d.array(stream, t.TILE_BYTE_COUNTS, size, tiles)
    if len(offsets) != tiles or len(counts) != tiles:
        raise CorruptMedia(
            f"{path.name}: the full-resolution level has {tiles:,} tiles but lists"
            f" {len(offsets):,} offsets and {len(counts):,} lengths; upload the original slide"
            " again"
        )
    tables = bytes(d.array(stream, t.JPEG_TABLES, size, 64 * 1024))
    return JpegTiffLevel(
        path, tile, offsets, counts, tables, JPEG_MODES[d.get(t.PHOTOMETRIC)], slide.dimensions
    )
