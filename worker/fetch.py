"""Fetching a source from storage into a local working folder, for the processors.

Processors take local paths; this adapter is the only place that knows how a source maps to
objects in a bucket (one object for most media, a listed folder for a MIRAX slide).
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from worker.storage.base import ObjectInfo, ReadableStorage


def fetch_source(storage: ReadableStorage, key: str, work_dir: Path) -> tuple[Path, ObjectInfo]:
    """Download the source of `key` under `work_dir`; returns the local path to open and the
    source object's info (size, ETag)."""
    local = work_dir / "source" / posixpath.basename(key)
    info = storage.download(key, local)
    return local, info
