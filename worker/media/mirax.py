"""MIRAX (`.mrxs`) completeness check, run before OpenSlide opens the slide.

A MIRAX slide is `NAME.mrxs` plus a folder `NAME/` holding `Slidedat.ini`, the index file it names
in [HIERARCHICAL] INDEXFILE and every data file it names in [DATAFILE]. When a part is missing,
OpenSlide either says only "Unsupported or missing image file" or opens the slide and fails later,
at read time, halfway through the tiles. This module names the missing parts up front. It also
reads the index (small: 16 bytes per stored image) to catch a data file shorter than the images
the index places in it, the usual result of an interrupted upload.
"""

from __future__ import annotations

import configparser
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

from worker.errors import CorruptMedia, MiraxIncomplete, UnsupportedFormat
from worker.safety import plain_file_name

log = logging.getLogger(__name__)

SLIDEDAT = "Slidedat.ini"
INDEX_VERSION = b"01.02"
SLIDE_ZOOM_LEVEL = "Slide zoom level"
_MAX_PAGES = 10_000_000
"""Guard against a looping page chain in a damaged index."""
MAX_DATA_FILES = 100_000
"""Scanners write a few hundred data files at most; more is a hostile count."""


@dataclass(frozen=True)
class SlidedatInfo:
    """What the completeness check needs from `Slidedat.ini`."""

    slide_id: str
    index_file: str
    data_files: tuple[str, ...]
    zoom_levels: int
    """Records in the hierarchical table that belong to the 'Slide zoom level' layer (HIER_0)."""
    nonhier_records: int


def mirax_folder(mrxs_path: Path) -> Path:
    """`NAME/` beside `NAME.mrxs`."""
    return mrxs_path.with_suffix("")


def parse_slidedat(path: Path) -> SlidedatInfo:
    """Read the names of the slide's parts from `Slidedat.ini` (CorruptMedia when unreadable)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    try:
        # Scanners write a UTF-8 byte order mark; utf-8-sig drops it.
        parser.read_string(path.read_text(encoding="utf-8-sig", errors="replace"))
        general, hier, datafile = parser["GENERAL"], parser["HIERARCHICAL"], parser["DATAFILE"]
        count = _count(datafile["FILE_COUNT"])
        data_files = tuple(datafile[f"FILE_{i}"].strip() for i in range(count))
        nonhier = sum(
            _count(hier.get(f"NONHIER_{i}_COUNT", "0"))
            for i in range(_count(hier["NONHIER_COUNT"]))
        )
        levels = _count(hier["HIER_0_COUNT"]) if hier.get("HIER_0_NAME") == SLIDE_ZOOM_LEVEL else 0
        return SlidedatInfo(
            slide_id=general["SLIDE_ID"].strip(),
            index_file=hier["INDEXFILE"].strip(),
            data_files=data_files,
            zoom_levels=levels,
            nonhier_records=nonhier,
        )
    except (configparser.Error, KeyError, ValueError) as exc:
        raise CorruptMedia(
            f"{path.parent.name}/{path.name}: not a readable MIRAX Slidedat.ini"
            f" ({type(exc).__name__}: {exc}); re-export the slide from the scanner software"
        ) from None


def _count(text: str) -> int:
    """A count from Slidedat.ini, bounded before anything loops over it."""
    value = int(text)
    if not 0 <= value <= MAX_DATA_FILES:
        raise ValueError(f"a count of {value} is out of range")
    return value


def check_mirax_complete(mrxs_path: Path) -> None:
    """Raise MiraxIncomplete naming every missing or truncated part of a local MIRAX slide."""
    folder = mirax_folder(mrxs_path)
    name = mrxs_path.name
    fix = f"upload the whole folder {folder.name}/ beside {name}, then process the slide again"
    if not folder.is_dir():
        raise MiraxIncomplete(
            f"MIRAX slide {name} is incomplete: its folder {folder.name}/ is missing; {fix}"
        )
    slidedat = folder / SLIDEDAT
    if not slidedat.is_file():
        raise MiraxIncomplete(
            f"MIRAX slide {name} is incomplete: {folder.name}/{SLIDEDAT} is missing; {fix}"
        )
    info = parse_slidedat(slidedat)
    _refuse_outside_names(name, folder.name, info)
    problems = [
        f"{folder.name}/{part} is missing"
        for part in (info.index_file, *info.data_files)
        if not (folder / part).is_file()
    ]
    if not problems:
        problems = _truncation_problems(folder, info)
    if problems:
        raise MiraxIncomplete(f"MIRAX slide {name} is incomplete: {'; '.join(problems)}; {fix}")


def _refuse_outside_names(name: str, folder: str, info: SlidedatInfo) -> None:
    """OpenSlide opens whatever Slidedat.ini names, relative to the folder or not: only plain
    file names of the slide's own folder are let through (SPEC section 11)."""
    if len(info.data_files) > MAX_DATA_FILES:
        raise UnsupportedFormat(
            f"MIRAX slide {name}: {folder}/{SLIDEDAT} names {len(info.data_files)} data files,"
            f" more than the {MAX_DATA_FILES} a scanner writes; re-export the slide"
        )
    entries = {"INDEXFILE": info.index_file}
    entries |= {f"FILE_{i}": part for i, part in enumerate(info.data_files)}
    for entry, part in entries.items():
        if not plain_file_name(part):
            # The name itself is not repeated: it may be a path of this host.
            raise UnsupportedFormat(
                f"MIRAX slide {name}: {entry} in {folder}/{SLIDEDAT} is not a plain file name"
                f" of {folder}/; mediaworker reads only files inside the slide's own folder."
                " Re-export the slide from the scanner software"
            )


def _truncation_problems(folder: Path, info: SlidedatInfo) -> list[str]:
    """Data files shorter than the last byte the index places in them; a short index too."""
    index_path = folder / info.index_file
    try:
        ends = _data_ends(index_path.read_bytes(), info)
    except (struct.error, ValueError) as exc:
        return [f"{folder.name}/{info.index_file} is truncated or damaged ({exc})"]
    problems = []
    for fileno, end in sorted(ends.items()):
        if fileno >= len(info.data_files):
            return [f"{folder.name}/{info.index_file} names data file #{fileno}, not in Slidedat"]
        part = info.data_files[fileno]
        size = (folder / part).stat().st_size
        if size < end:
            # Sizes of the slide's own parts only: names outside its folder never get here.
            problems.append(
                f"{folder.name}/{part} is truncated ({size} bytes; the index needs {end})"
            )
    return problems


def _data_ends(index: bytes, info: SlidedatInfo) -> dict[int, int]:
    """For each data file number, the end of the furthest image the index points into."""
    if not index.startswith(INDEX_VERSION + info.slide_id.encode()):
        raise ValueError("its header does not match the slide id in Slidedat.ini")
    hier_root = len(INDEX_VERSION) + len(info.slide_id.encode())
    hier_table, nonhier_table = struct.unpack_from("<ii", index, hier_root)
    ends: dict[int, int] = {}

    def note(offset: int, length: int, fileno: int) -> None:
        if offset < 0 or length < 0 or fileno < 0:
            raise ValueError("it holds a negative offset, length or file number")
        ends[fileno] = max(ends.get(fileno, 0), offset + length)

    for level in range(info.zoom_levels):
        (head,) = struct.unpack_from("<i", index, hier_table + 4 * level)
        _, page = struct.unpack_from("<ii", index, head)
        for _ in range(_MAX_PAGES):
            count, next_page = struct.unpack_from("<ii", index, page)
            for i in range(count):
                _, offset, length, fileno = struct.unpack_from("<iiii", index, page + 8 + 16 * i)
                note(offset, length, fileno)
            if next_page == 0:
                break
            page = next_page
    for record in range(info.nonhier_records):
        (head,) = struct.unpack_from("<i", index, nonhier_table + 4 * record)
        _, page = struct.unpack_from("<ii", index, head)
        offset, length, fileno = struct.unpack_from("<iii", index, page + 16)
        note(offset, length, fileno)
    return ends
