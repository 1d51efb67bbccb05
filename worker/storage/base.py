"""The storage interface: a few primitives per backend, everything else derived here once.

Keys are bucket-relative (`data/<item>/files/0/thumbnail.jpg`); for Azure the first component is
the container (`example_container/example_folder/file.jpeg`). Backends raise only the errors of
`worker.errors` (`NotFound`, `PermissionDenied`, `StorageUnavailable`), each mapped in one table.

`ReadableStorage` is everything processing a read-only integration may do; `Storage` adds writes.
A read-only integration is handed a `ReadOnlyView`, which has no write method at all.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from worker.errors import NotFound


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    last_modified: datetime | None = None


class ReadableStorage(ABC):
    """Read primitives. `integration` names the integration in messages."""

    integration: str = ""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Size, ETag, content type and encoding; `NotFound` when the key is absent."""

    @abstractmethod
    def read_range(self, key: str, start: int, length: int) -> bytes:
        """`length` bytes from `start` (fewer at the end of the object)."""

    @abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A stream of the object's bytes; the caller closes it."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every key under `prefix`, page by page, never the whole listing in memory."""

    @abstractmethod
    def sign(self, key: str, expires_seconds: int) -> str:
        """A URL that GETs the key without credentials until it expires."""

    def list_folders(self, prefix: str) -> Iterator[str]:
        """The folders directly under `prefix` (which ends in '/'), each as a full prefix ending
        in '/': one entry per folder however many keys it holds. Optional: a backend that cannot
        list by delimiter raises `NotImplementedError`."""
        raise NotImplementedError

    def download(self, key: str, dest: Path) -> ObjectInfo:
        """Copy the object to a local file; backends override with concurrent ranged reads."""
        info = self.head(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self.open_read(key) as src, dest.open("wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
        return info

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except NotFound:
            return False
        return True

    def read_bytes(self, key: str) -> bytes:
        with self.open_read(key) as stream:
            return stream.read()

    def read_head(self, key: str, length: int = 4096) -> bytes:
        """The first bytes of an object, for content sniffing without a full download."""
        return self.read_range(key, 0, length)


class Storage(ReadableStorage):
    """A writable integration."""

    @abstractmethod
    def write(
        self,
        key: str,
        data: bytes | Path,
        content_type: str = "application/octet-stream",
        content_encoding: str | None = None,
    ) -> None:
        """Create or replace the object; a `Path` is streamed from disk."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object if present (for `check`'s probe and for clearing partial output)."""

    def write_text(self, key: str, text: str, content_type: str = "text/plain") -> None:
        self.write(key, text.encode(), content_type=f"{content_type}; charset=utf-8")


class ReadOnlyView(ReadableStorage):
    """Wraps any storage and exposes only reads: a read-only integration cannot write by
    construction, since nothing reachable from here has a write method."""

    def __init__(self, inner: ReadableStorage) -> None:
        self._inner = inner
        self.integration = inner.integration

    def head(self, key: str) -> ObjectInfo:
        return self._inner.head(key)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        return self._inner.read_range(key, start, length)

    def open_read(self, key: str) -> BinaryIO:
        return self._inner.open_read(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self._inner.list(prefix)

    def sign(self, key: str, expires_seconds: int) -> str:
        return self._inner.sign(key, expires_seconds)

    def list_folders(self, prefix: str) -> Iterator[str]:
        return self._inner.list_folders(prefix)

    def download(self, key: str, dest: Path) -> ObjectInfo:
        return self._inner.download(key, dest)


def scratch_dir(base: Path | None, prefix: str) -> Path:
    """A private (0700) temporary folder under the configured work dir (or the system's),
    named so that a later start can remove it if this process is killed (`worker.scratch`)."""
    from worker import scratch

    return scratch.make(base, prefix.removeprefix("mw-").strip("-") or "item")
