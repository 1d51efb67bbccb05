"""Fetching a source from storage into a local working folder, for the processors.

Processors take local paths; this adapter is the only place that knows how a source maps to
objects in a bucket (one object for most media, a listed folder for a MIRAX slide or a DICOM
series).

A MIRAX slide `dir/NAME.mrxs` keeps its data in `dir/NAME/` (`Slidedat.ini`, `Index.dat`,
`Data*.dat`). That folder is listed (the only bucket-level call processing makes, SPEC section 2)
and every object in it is downloaded beside the `.mrxs`, a few at a time, before anything opens
the slide.

A DICOM whole-slide image is a series of `.dcm` instances in one folder, registered by the folder
(`dir/`) or by any of its instances. The folder is listed, the header of each `.dcm` file directly
in it is read (a bounded ranged read), and only the instances of the item's series are downloaded
(see `worker.media.dicom`).
"""

from __future__ import annotations

import logging
import posixpath
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from worker.errors import MiraxIncomplete, NotFound, PermissionDenied, TooLarge
from worker.media import dicom
from worker.storage.base import ObjectInfo, ReadableStorage

log = logging.getLogger(__name__)

MIRAX_SUFFIX = ".mrxs"
DOWNLOAD_CONCURRENCY = 4


def fetch_source(
    storage: ReadableStorage,
    key: str,
    work_dir: Path,
    *,
    concurrency: int = DOWNLOAD_CONCURRENCY,
    max_bytes: int | None = None,
) -> tuple[Path, ObjectInfo]:
    """Download the source of `key` under `work_dir`; returns the local path to open and the
    source object's info (size, ETag). A partial download is removed before an error escapes.

    `concurrency` bounds parallel downloads of a MIRAX folder; `max_bytes` (when given) bounds
    the whole folder's size, checked from the listing before anything is downloaded."""
    folder = work_dir / "source"
    local = folder / posixpath.basename(key)
    try:
        if key.lower().endswith(MIRAX_SUFFIX):
            return local, _fetch_mirax(storage, key, local, concurrency, max_bytes)
        if dicom.is_instance_key(key) or dicom.is_folder_key(key):
            return _fetch_dicom(storage, key, folder, concurrency, max_bytes)
        return local, storage.download(key, local)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def mirax_prefix(key: str) -> str:
    """`dir/NAME.mrxs` -> `dir/NAME/`: the folder a MIRAX slide keeps its data in."""
    return key[: -len(MIRAX_SUFFIX)] + "/"


def _fetch_mirax(
    storage: ReadableStorage, key: str, local: Path, concurrency: int, max_bytes: int | None
) -> ObjectInfo:
    prefix = mirax_prefix(key)
    parts = _list_folder(storage, f"MIRAX slide {key}", prefix)
    if not parts:
        raise MiraxIncomplete(
            f"MIRAX slide {key}: its folder {prefix} is empty or missing in"
            f" {storage.integration or 'the bucket'}; upload the whole folder beside the .mrxs"
        )
    if max_bytes is not None and _total(parts) > max_bytes:
        raise TooLarge(
            f"MIRAX slide {key}: its folder {prefix} holds {_total(parts):,} bytes, over the limit"
            f" of {max_bytes:,} (limits.max_source_bytes); raise it if this slide is expected"
        )
    folder = local.with_suffix("")
    jobs = [(key, local)] + [(part.key, folder / _relative(part.key, prefix)) for part in parts]
    log.info("fetching MIRAX slide %s: %d parts, %d bytes", key, len(jobs), _total(parts))
    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="fetch") as pool:
        infos = list(pool.map(lambda job: storage.download(*job), jobs))
    return infos[0]


def _list_folder(storage: ReadableStorage, what: str, prefix: str) -> list[ObjectInfo]:
    try:
        return [info for info in storage.list(prefix) if not info.key.endswith("/")]
    except PermissionDenied as exc:
        raise PermissionDenied(
            f"{what}: listing its folder {prefix or '(the bucket root)'} was denied ({exc}). This"
            " slide is a folder of files, so the worker must list it: on S3 or Wasabi allow"
            " s3:ListBucket on the"
            f" bucket for the prefix {prefix}; on Azure grant the 'Storage Blob Data Reader' role"
            " (which includes listing blobs) on the container; on GCS grant storage.objects.list"
            " on the bucket (in Storage Object Viewer)"
        ) from None


def _relative(part_key: str, prefix: str) -> str:
    """The part's path inside the slide folder; refuses names that would leave it."""
    relative = part_key[len(prefix) :]
    if any(piece in ("", ".", "..") for piece in relative.split("/")):
        raise PermissionDenied(f"{part_key}: refusing a MIRAX part name that leaves its folder")
    return relative


def _total(parts: list[ObjectInfo]) -> int:
    return sum(part.size for part in parts)


# --- DICOM series ------------------------------------------------------------------------------


def source_key(storage: ReadableStorage, key: str) -> str:
    """The object an item's key stands for: the key itself, or for a folder key (`dir/`, a
    DICOM series) the series' main instance, which is what gets sized, sniffed and registered."""
    if not dicom.is_folder_key(key):
        return key
    folder = dicom.folder_of(key)
    series = _dicom_series(storage, key, folder, _list_folder(storage, _what(key), folder))
    return folder + dicom.main_instance(series).name


def item_keys(keys: list[str]) -> list[str]:
    """Which listed keys are items: a MIRAX slide is its `.mrxs` (the files of its folder are
    not items), and the `.dcm` instances of one folder are one item, that folder."""
    mirax = tuple(mirax_prefix(k) for k in keys if k.lower().endswith(MIRAX_SUFFIX))
    kept = [k for k in keys if not (mirax and k.startswith(mirax))]
    # At the bucket root a series has no folder key: its first instance stands for it.
    root = min((k for k in kept if dicom.is_instance_key(k) and "/" not in k), default=None)
    items = {dicom.folder_of(k) or root if dicom.is_instance_key(k) else k for k in kept}
    return sorted(k for k in items if k)


def _what(key: str) -> str:
    return f"DICOM slide {key}"


def _dicom_series(
    storage: ReadableStorage, key: str, folder: str, listing: list[ObjectInfo]
) -> list[dicom.Instance]:
    """The headers of the item's series, from the `.dcm` files listed directly in its folder."""
    given = None if dicom.is_folder_key(key) else posixpath.basename(key)
    if given is not None and not dicom.is_instance_name(given):
        raise PermissionDenied(f"{key}: refusing a DICOM instance name that is not a plain name")
    files = [i for i in listing if dicom.is_instance_name(i.key[len(folder) :])]
    if not files:
        raise NotFound(f"DICOM slide {key}: no .dcm file in its folder {folder or '/'}")
    if given is not None and not any(f.key == key for f in files):
        raise NotFound(f"{key}: not found in the listing of its folder {folder or '/'}")
    if len(files) > dicom.MAX_FOLDER_FILES:
        raise TooLarge(
            f"DICOM slide {key}: its folder {folder or '/'} holds {len(files):,} .dcm files, over"
            f" the {dicom.MAX_FOLDER_FILES:,} a slide series may have; keep one series per folder"
        )
    with ThreadPoolExecutor(DOWNLOAD_CONCURRENCY, thread_name_prefix="fetch") as pool:
        found = list(pool.map(lambda f: _header(storage, f, f.key[len(folder) :]), files))
    instances = [i for i in found if i is not None]
    return dicom.select_series(instances, given, folder or "/")


def _header(storage: ReadableStorage, info: ObjectInfo, name: str) -> dicom.Instance | None:
    """An instance's header from a short ranged read, a longer one when it does not fit."""
    for length in (dicom.FIRST_READ_BYTES, dicom.HEADER_BYTES):
        try:
            return dicom.parse_header(storage.read_head(info.key, length), name, info.size)
        except dicom.HeaderTooLong:
            if length == dicom.HEADER_BYTES:
                raise
    return None


def _fetch_dicom(
    storage: ReadableStorage, key: str, folder: Path, concurrency: int, max_bytes: int | None
) -> tuple[Path, ObjectInfo]:
    prefix = dicom.folder_of(key)
    listing = _list_folder(storage, _what(key), prefix)
    series = _dicom_series(storage, key, prefix, listing)
    total = sum(i.size for i in series)
    if max_bytes is not None and total > max_bytes:
        raise TooLarge(
            f"DICOM slide {key}: its series holds {total:,} bytes, over the limit of"
            f" {max_bytes:,} (limits.max_source_bytes); raise it if this slide is expected"
        )
    opened = posixpath.basename(key) or dicom.main_instance(series).name
    log.info("fetching DICOM slide %s: %d instances, %d bytes", key, len(series), total)
    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="fetch") as pool:
        infos = list(pool.map(lambda i: storage.download(prefix + i.name, folder / i.name), series))
    info = next(i for s, i in zip(series, infos, strict=True) if s.name == opened)
    return folder / opened, info
