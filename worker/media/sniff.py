"""What kind of item a source is (SPEC 3, `type: auto`), and what Content-Type an object is
stored under.

The rules (content first, then the extension; slide extensions decide on their own; a tiled
TIFF is a slide) and their one table of extensions and magic numbers live in the registry
(`worker.kinds.registry`); this module answers with an `ItemType`.
"""

from __future__ import annotations

import mimetypes
import posixpath

from worker.items import ItemType
from worker.kinds import SNIFF_BYTES, registry

__all__ = ["SNIFF_BYTES", "content_type_for", "sniff"]

_CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".avif": "image/avif",
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".ts": "video/mp2t",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".dzi": "application/xml",
    ".json": "application/json",
    ".txt": "text/plain",
    ".gz": "application/gzip",
}


def sniff(head: bytes, name: str) -> ItemType | None:
    """The type of a source whose first bytes are `head` (ideally `SNIFF_BYTES` of them) and
    whose key or file name is `name`; None when neither says what it is. A folder key (`dir/`)
    is a source of several files (a DICOM series)."""
    found = registry.sniff(head, name)
    return ItemType(found) if found is not None else None


def content_type_for(name: str) -> str:
    """The Content-Type to store an object under, from its name."""
    ext = registry.extension(name)
    if ext in _CONTENT_TYPES:
        return _CONTENT_TYPES[ext]
    guessed, _ = mimetypes.guess_type(posixpath.basename(name))
    return guessed or "application/octet-stream"
