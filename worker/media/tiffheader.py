"""What a TIFF-based slide's header claims, checked before OpenSlide allocates for it.

OpenSlide and libtiff allocate what a directory declares: a 501-byte file declaring one
60000x60000 tile makes GLib abort the whole process when the allocation fails. Every directory
of a TIFF (classic or BigTIFF: generic tiled TIFF, SVS, NDPI's first 4 GB, ...) is read here
first, with the number of directories and entries bounded, and each claim is checked:
- a tile, strip or untiled image (labels and macros are decoded whole) must fit the item's
  memory budget (`limits.max_item_memory_mb`), as 32-bit pixels, the form OpenSlide decodes to;
- a tiled level must fit `limits.max_slide_pixels`;
- a directory must list an offset for each tile or strip it declares, and the file must be long
  enough to hold those lists (what the source can hold).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from worker.config import Limits
from worker.errors import CorruptMedia, TooLarge
from worker.kinds.image import is_tiff
from worker.limits import check_allocation

MAX_DIRECTORIES = 1024
MAX_ENTRIES = 1024
BYTES_PER_PIXEL = 4
_WIDTH, _LENGTH, _STRIP_OFFSETS, _ROWS_PER_STRIP = 256, 257, 273, 278
_TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS = 322, 323, 324
_NDPI_FORMAT = 65420
"""Hamamatsu NDPI: untiled JPEG levels that OpenSlide reads piecewise (restart markers)."""
BITS, COMPRESSION, PHOTOMETRIC, SAMPLES, PLANAR = 258, 259, 262, 277, 284
TILE_BYTE_COUNTS, JPEG_TABLES = 325, 347
WIDTH, LENGTH, TILE_WIDTH, TILE_LENGTH, TILE_OFFSETS = 256, 257, 322, 323, 324
_WANTED = {_WIDTH, _LENGTH, _STRIP_OFFSETS, _ROWS_PER_STRIP, _TILE_WIDTH, _TILE_LENGTH}
_WANTED |= {_TILE_OFFSETS, _NDPI_FORMAT, BITS, COMPRESSION, PHOTOMETRIC, SAMPLES, PLANAR}
_WANTED |= {TILE_BYTE_COUNTS, JPEG_TABLES}
_SCALAR = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8
_ITEM = {1: "B", 7: "B", 3: "H", 4: "I", 16: "Q"}  # BYTE and UNDEFINED as bytes


@dataclass
class Directory:
    values: dict[int, int]
    counts: dict[int, int]
    places: dict[int, tuple[int, int]] = field(default_factory=dict)
    """tag -> (field type, file position of the entry's value field) for each wanted tag."""
    order: str = "<"
    big: bool = False

    def get(self, tag: int, default: int = 0) -> int:
        return self.values.get(tag, default)

    def array(self, stream: BinaryIO, tag: int, size: int, most: int) -> tuple[int, ...]:
        """Every value of `tag` (empty when absent or of another type), read only when there
        are at most `most` and the file of `size` bytes holds them all."""
        if tag not in self.places or self.places[tag][0] not in _ITEM:
            return ()
        kind, at = self.places[tag]
        count = self.counts[tag]
        if count > most:
            raise CorruptMedia(f"TIFF tag {tag} lists {count:,} values, more than {most:,}")
        length = count * struct.calcsize(self.order + _ITEM[kind])
        if length > (8 if self.big else 4):
            stream.seek(at)
            pointer = stream.read(8 if self.big else 4)
            (at,) = struct.unpack(self.order + ("Q" if self.big else "I"), pointer)
        if at + length > size:
            raise CorruptMedia(f"TIFF tag {tag} lists {count:,} values beyond the file's end")
        stream.seek(at)
        return struct.unpack(self.order + _ITEM[kind] * count, stream.read(length))


def check_tiff_claims(path: Path, limits: Limits) -> None:
    """Raise `TooLarge` or `CorruptMedia` for a claim over the limits or beyond the file."""
    size = path.stat().st_size
    with path.open("rb") as stream:
        if not is_tiff(stream.read(4)):
            return
        try:
            directories, offset_size = _read_directories(stream, size)
        except struct.error:
            raise CorruptMedia(f"{path.name}: its TIFF directories are cut short") from None
    for number, directory in enumerate(directories):
        _check_directory(path.name, number, directory, offset_size, size, limits)


def read_directories(stream: BinaryIO, size: int) -> list[Directory]:
    """Every directory of a TIFF stream of `size` bytes (bounded in number and entries)."""
    try:
        return _read_directories(stream, size)[0]
    except struct.error:
        raise CorruptMedia("its TIFF directories are cut short") from None


def _read_directories(stream: BinaryIO, size: int) -> tuple[list[Directory], int]:
    stream.seek(0)
    head = stream.read(16)
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\0", b"\0+")
    offset = struct.unpack_from(order + ("Q" if big else "I"), head, 8 if big else 4)[0]
    directories: list[Directory] = []
    seen: set[int] = set()
    while offset and offset not in seen and len(directories) < MAX_DIRECTORIES:
        if offset >= size:
            break
        seen.add(offset)
        directory, offset = _read_directory(stream, offset, order, big)
        directory.order, directory.big = order, big
        directories.append(directory)
    return directories, 8 if big else 4


def _read_directory(stream: BinaryIO, at: int, order: str, big: bool) -> tuple[Directory, int]:
    count_format, entry_size, next_format = ("Q", 20, "Q") if big else ("H", 12, "I")
    stream.seek(at)
    raw = stream.read(struct.calcsize(count_format))
    count = min(struct.unpack(order + count_format, raw)[0], MAX_ENTRIES)
    entries = stream.read(count * entry_size)
    directory = Directory({}, {})
    for i in range(count):
        entry = entries[i * entry_size : (i + 1) * entry_size]
        tag, kind = struct.unpack_from(order + "HH", entry)
        if tag not in _WANTED:
            continue
        (number,) = struct.unpack_from(order + ("Q" if big else "I"), entry, 4)
        directory.counts[tag] = number
        value_at = 12 if big else 8
        entry_at = at + struct.calcsize(count_format) + i * entry_size
        directory.places[tag] = (kind, entry_at + value_at)
        if kind in _SCALAR and number >= 1:
            directory.values[tag] = struct.unpack_from(order + _SCALAR[kind], entry, value_at)[0]
    (following,) = struct.unpack(order + next_format, stream.read(struct.calcsize(next_format)))
    return directory, following


def _check_directory(
    name: str, number: int, d: Directory, offset_size: int, size: int, limits: Limits
) -> None:
    width, height = d.get(_WIDTH), d.get(_LENGTH)
    where = f"{name}: TIFF directory {number}"
    if d.get(_TILE_WIDTH) and d.get(_TILE_LENGTH):
        tile_w, tile_h = d.get(_TILE_WIDTH), d.get(_TILE_LENGTH)
        check_allocation(f"{where}: one {tile_w}x{tile_h} tile", _bytes(tile_w, tile_h), limits)
        if width * height > limits.max_slide_pixels:
            raise TooLarge(
                f"{where}: {width}x{height} pixels, over limits.max_slide_pixels"
                f" ({limits.max_slide_pixels:,}); raise it if this slide is expected"
            )
        pieces = math.ceil(width / tile_w) * math.ceil(height / tile_h)
        listed = d.counts.get(_TILE_OFFSETS, 0)
    else:
        rows = min(d.get(_ROWS_PER_STRIP, height) or height, height)
        if _NDPI_FORMAT not in d.counts:
            check_allocation(f"{where}: a {width}x{height} image", _bytes(width, height), limits)
        pieces = math.ceil(height / rows) if rows else 0
        listed = d.counts.get(_STRIP_OFFSETS, 0)
    if listed < pieces or listed * offset_size > size:
        raise CorruptMedia(
            f"{where} declares {pieces:,} tiles or strips but the file lists {listed:,} of them"
            " or is too short to; upload the original slide again"
        )


def _bytes(width: int, height: int) -> int:
    return width * height * BYTES_PER_PIXEL
