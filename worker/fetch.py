"""Fetching a source from storage into a local working folder, for the processors.

Processors take local paths; this adapter is the only place that knows how a source maps to
objects in a bucket. Most sources are one object. A source of several objects (a MIRAX slide
and its folder, a DICOM series) is a `FolderSource` of its format (`worker.kinds`): `resolve`
lists it once, naming the object registered and every object to download; `fetch` downloads
them side by side under the working folder, a few at a time. Listing a folder is the only
bucket-level call processing makes (SPEC section 2), and its refusal names the permission.
"""

from __future__ import annotations

import logging
import posixpath
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from worker.errors import PermissionDenied
from worker.kinds import Resolved
from worker.kinds.registry import folder_source, item_keys
from worker.storage.base import ObjectInfo, ReadableStorage

__all__ = ["fetch", "fetch_source", "item_keys", "list_folder", "resolve", "source_key"]

log = logging.getLogger(__name__)

DOWNLOAD_CONCURRENCY = 4


def resolve(storage: ReadableStorage, key: str, max_bytes: int | None = None) -> Resolved:
    """What an item's key stands for in storage (see the module docstring). `max_bytes` bounds
    a multi-object source's size, checked from its listing before anything is downloaded."""
    source = folder_source(key)
    if source is not None:
        return source.resolve(storage, key, max_bytes)
    return Resolved(key, storage.head(key), key, ((key, posixpath.basename(key)),))


def fetch(
    storage: ReadableStorage,
    resolved: Resolved,
    work_dir: Path,
    concurrency: int = DOWNLOAD_CONCURRENCY,
) -> tuple[Path, ObjectInfo]:
    """Download a resolved source under `work_dir`; returns the local file to open and what its
    download said of the registered object. A partial download is removed before an error
    escapes."""
    folder = work_dir / "source"
    jobs = [(key, folder / rel) for key, rel in resolved.parts]
    try:
        if len(jobs) == 1:
            return jobs[0][1], storage.download(*jobs[0])
        log.info("fetching %s: %d objects", resolved.key, len(jobs))
        with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="fetch") as pool:
            infos = list(pool.map(lambda job: storage.download(*job), jobs))
        return jobs[0][1], infos[0]
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def fetch_source(
    storage: ReadableStorage,
    key: str,
    work_dir: Path,
    *,
    concurrency: int = DOWNLOAD_CONCURRENCY,
    max_bytes: int | None = None,
) -> tuple[Path, ObjectInfo]:
    """`resolve`, then `fetch`: the local path to open and the registered object's info."""
    return fetch(storage, resolve(storage, key, max_bytes), work_dir, concurrency)


def source_key(storage: ReadableStorage, key: str) -> str:
    """The object an item's key registers: the key itself, or for a folder key (a DICOM series)
    the instance that is opened."""
    return resolve(storage, key).main.key


def list_folder(storage: ReadableStorage, what: str, prefix: str) -> list[ObjectInfo]:
    """The objects under `prefix`, for a multi-object source; a refusal names the permission."""
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


def relative(part_key: str, prefix: str, what: str) -> str:
    """A part's path inside its folder; refuses names that would leave it."""
    rel = part_key[len(prefix) :]
    if any(piece in ("", ".", "..") for piece in rel.split("/")):
        raise PermissionDenied(f"{part_key}: refusing a {what} name that leaves its folder")
    return rel


def total(parts: list[ObjectInfo]) -> int:
    return sum(part.size for part in parts)
