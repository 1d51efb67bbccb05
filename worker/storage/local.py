"""A folder that stands for a bucket: demos, tests and offline pre-extraction.

A filesystem keeps no object metadata, so content type and encoding are derived from the name
(`audio_peaks.gz` -> gzip), the way a static file server would serve them. Keys can never lead
outside the root: absolute keys, `..` and symlinks pointing out are refused.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from worker.errors import NotFound, PermissionDenied
from worker.storage.base import ObjectInfo, Storage


class LocalStorage(Storage):
    def __init__(self, root: Path, integration: str = "local") -> None:
        self.root = Path(os.path.realpath(root))
        self.integration = integration

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or "\\" in key or "\0" in key:
            raise PermissionDenied(f"key {key!r} is not a relative storage key")
        if any(part in ("..", ".") for part in key.split("/")):
            raise PermissionDenied(f"key {key!r} may not contain '.' or '..' components")
        resolved = Path(os.path.realpath(self.root / key))
        if resolved != self.root and self.root not in resolved.parents:
            raise PermissionDenied(f"key {key!r} leads outside the integration's root")
        return resolved

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise NotFound(f"{self.integration}: {key} does not exist") from None
        if not path.is_file():
            raise NotFound(f"{self.integration}: {key} is a folder, not an object")
        return self._info(key, path, stat)

    def _info(self, key: str, path: Path, stat: os.stat_result) -> ObjectInfo:
        content_type, encoding = mimetypes.guess_type(path.name)
        if encoding == "gzip" and path.suffix == ".gz":
            content_type = content_type or "application/octet-stream"
        etag = hashlib.md5(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            etag=etag,
            content_type=content_type or "application/octet-stream",
            content_encoding=encoding,
            last_modified=datetime.fromtimestamp(stat.st_mtime, UTC),
        )

    def read_range(self, key: str, start: int, length: int) -> bytes:
        with self.open_read(key) as stream:
            stream.seek(start)
            return stream.read(length)

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"{self.integration}: {key} does not exist") from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        folder, _, _ = prefix.rpartition("/")
        start = self._path(folder) if folder else self.root
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix) and not path.is_symlink():
                    yield self._info(key, path, path.stat())

    def sign(self, key: str, expires_seconds: int) -> str:
        """A local file has no signature to give; its URI serves a viewer on the same machine."""
        return self._path(key).as_uri()

    def write(
        self,
        key: str,
        data: bytes | Path,
        content_type: str = "application/octet-stream",
        content_encoding: str | None = None,
    ) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        if isinstance(data, Path):
            shutil.copyfile(data, partial)
        else:
            partial.write_bytes(data)
        partial.replace(path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
