"""Fetching a source from storage into a local working folder, for the processors.

Processors take local paths; this adapter is the only place that knows how a source maps to
objects in a bucket (one object for most media, a listed folder for a MIRAX slide).

A MIRAX slide `dir/NAME.mrxs` keeps its data in `dir/NAME/` (`Slidedat.ini`, `Index.dat`,
`Data*.dat`). That folder is listed (the only bucket-level call processing makes, SPEC section 2)
and every object in it is downloaded beside the `.mrxs`, a few at a time, before anything opens
the slide.
"""

from __future__ import annotations

import logging
import posixpath
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from worker.errors import MiraxIncomplete, PermissionDenied, TooLarge
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
    parts = _list_folder(storage, key, prefix)
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


def _list_folder(storage: ReadableStorage, key: str, prefix: str) -> list[ObjectInfo]:
    try:
        return [info for info in storage.list(prefix) if not info.key.endswith("/")]
    except PermissionDenied as exc:
        raise PermissionDenied(
            f"MIRAX slide {key}: listing its folder {prefix} was denied ({exc}). A MIRAX slide is a"
            f" folder, so the worker must list it: on S3 or Wasabi allow s3:ListBucket on the"
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
