"""DICOM whole-slide images (VL Whole Slide Microscopy): a series of `.dcm` instances in one
folder, one instance per pyramid level plus LABEL and OVERVIEW images.

The item is registered by its folder (`dir/`) or by any instance in it. Fetching lists the folder
(like MIRAX: `s3:ListBucket`), reads the header of each `.dcm` directly in it (a bounded ranged
read), and downloads only the instances of the item's series (`worker.media.dicom` decides which
from the headers). The series is resolved once per item: the registered object (the instance
opened: the one given, else the largest level), its name (the folder's) and the downloads.
A listing groups a folder's instances into one item, the folder.
"""

from __future__ import annotations

import posixpath
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from worker.kinds import Format, Resolved, extensions

if TYPE_CHECKING:
    from worker.config import Limits
    from worker.media.dicom import Instance
    from worker.storage.base import ObjectInfo, ReadableStorage

SUFFIX = ".dcm"
MAGIC_OFFSET = 128
"""A DICOM Part 10 file is a 128-byte preamble, then `DICM`."""
HEADER_READS = 4
"""Instance headers read at once while resolving a series."""


def is_dicom(head: bytes) -> bool:
    return head[MAGIC_OFFSET : MAGIC_OFFSET + 4] == b"DICM"


def is_instance_name(name: str) -> bool:
    """A plain file name ending in `.dcm`: nothing that could leave or hide in a folder."""
    plain = name not in ("", ".", "..") and not any(c in name for c in "/\\\0")
    return plain and name.isprintable() and name.lower().endswith(SUFFIX)


def is_folder_key(key: str) -> bool:
    """A key naming a folder: the item is the DICOM series inside it (never the bucket root)."""
    return key.endswith("/") and bool(key.strip("/"))


def is_instance_key(key: str) -> bool:
    return key.lower().endswith(SUFFIX)


def folder_of(key: str) -> str:
    """`dir/x.dcm` -> `dir/`, `dir/` -> `dir/` (`""` at the bucket root)."""
    folder = key if is_folder_key(key) else posixpath.dirname(key)
    return folder.rstrip("/") + "/" if folder.strip("/") else ""


class DicomSource:
    """The instances of one series, from one listing of its folder and their headers."""

    def resolve(self, storage: ReadableStorage, key: str, max_bytes: int | None) -> Resolved:
        from worker.errors import TooLarge
        from worker.fetch import list_folder
        from worker.media.dicom import main_instance

        folder = folder_of(key)
        listing = list_folder(storage, f"DICOM slide {key}", folder)
        series = _series(storage, key, folder, listing)
        total = sum(i.size for i in series)
        if max_bytes is not None and total > max_bytes:
            raise TooLarge(
                f"DICOM slide {key}: its series holds {total:,} bytes, over the limit of"
                f" {max_bytes:,} (limits.max_source_bytes); raise it if this slide is expected"
            )
        opened = posixpath.basename(key) or main_instance(series).name
        main = next(i for i in listing if i.key == folder + opened)
        names = [opened, *sorted(i.name for i in series if i.name != opened)]
        # Named after its folder: the instances' file names say nothing about the slide.
        label = folder.rstrip("/") if folder else main.key
        return Resolved(key, main, label, tuple((folder + n, n) for n in names))

    def item_key(self, key: str, claimed: set[str]) -> str | None:
        if not is_instance_key(key):
            return None
        # The series is claimed, not its folder: other files in it are items of their own.
        series = f"{SUFFIX} series in /{folder_of(key)}"
        if series in claimed:
            return None
        claimed.add(series)
        return folder_of(key) or key  # at the bucket root the first instance stands for it


def _series(
    storage: ReadableStorage, key: str, folder: str, listing: list[ObjectInfo]
) -> list[Instance]:
    """The headers of the item's series, from the `.dcm` files listed directly in its folder."""
    from worker.errors import NotFound, PermissionDenied, TooLarge
    from worker.media.dicom import MAX_FOLDER_FILES, select_series

    given = None if is_folder_key(key) else posixpath.basename(key)
    if given is not None and not is_instance_name(given):
        raise PermissionDenied(f"{key}: refusing a DICOM instance name that is not a plain name")
    files = [i for i in listing if is_instance_name(i.key[len(folder) :])]
    if not files:
        raise NotFound(f"DICOM slide {key}: no .dcm file in its folder {folder or '/'}")
    if given is not None and not any(f.key == key for f in files):
        raise NotFound(f"{key}: not found in the listing of its folder {folder or '/'}")
    if len(files) > MAX_FOLDER_FILES:
        raise TooLarge(
            f"DICOM slide {key}: its folder {folder or '/'} holds {len(files):,} .dcm files, over"
            f" the {MAX_FOLDER_FILES:,} a slide series may have; keep one series per folder"
        )
    with ThreadPoolExecutor(HEADER_READS, thread_name_prefix="fetch") as pool:
        found = list(pool.map(lambda f: _header(storage, f, f.key[len(folder) :]), files))
    return select_series([i for i in found if i is not None], given, folder or "/")


def _header(storage: ReadableStorage, info: ObjectInfo, name: str) -> Instance | None:
    """An instance's header from a short ranged read, a longer one when it does not fit."""
    from worker.media.dicom import FIRST_READ_BYTES, HEADER_BYTES, HeaderTooLong, parse_header

    for length in (FIRST_READ_BYTES, HEADER_BYTES):
        try:
            return parse_header(storage.read_head(info.key, length), name, info.size)
        except HeaderTooLong:
            if length == HEADER_BYTES:
                raise
    return None


def _check(path: Path, limits: Limits) -> None:
    from worker.media.dicom import check_dicom_complete

    check_dicom_complete(path, limits)


FORMATS = (
    Format(
        "dicom",
        "slide",
        extensions("dcm"),
        content=lambda head: "slide" if is_dicom(head) else None,
        extension_decides=True,
        folder_keys=True,
        source=DicomSource(),
        check=_check,
    ),
)
