"""A folder that stands for a bucket: demos, tests and offline pre-extraction.

A filesystem keeps no object metadata, so content type and encoding are derived from the name
(`audio_peaks.gz` -> gzip), the way a static file server would serve them. Keys can never lead
outside the root: absolute keys, `..` and symlinks pointing out are refused.

Writes never follow a symlink, wherever one is planted: each folder of the key is opened
relative to its parent with `O_NOFOLLOW`, the data goes to a temporary name created exclusively
(`O_EXCL`) in the target folder, and is renamed over the final name (a rename replaces a
symlink, it does not write through it).
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Any, BinaryIO

from worker.errors import NotFound, PermissionDenied
from worker.storage.base import Content, ObjectInfo, Storage

if TYPE_CHECKING:
    from worker.config import Integration, Settings
    from worker.policy import PolicyRequest, Setup


class LocalStorage(Storage):
    local_folder = True

    def __init__(self, root: Path, integration: str = "local") -> None:
        self.root = Path(os.path.realpath(root))
        self.integration = integration

    @classmethod
    def configure(cls, integration: Integration) -> dict[str, Any]:
        if integration.root is None:
            raise ValueError("field 'root': a local integration needs a root folder")
        return super().configure(integration)

    @classmethod
    def from_integration(cls, integration: Integration, settings: Settings) -> LocalStorage:
        assert integration.root is not None  # `configure` requires it
        return cls(integration.root, integration.name)

    @classmethod
    def setup(cls, request: PolicyRequest) -> Setup:
        from worker.policy import Setup

        return Setup(
            provider="local",
            explanations=[
                "A local integration is a folder: the worker needs read (and, for read-write,"
                " write) permission on it; there is no policy to set."
            ],
        )

    def _path(self, key: str) -> Path:
        _check_relative(key)
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

    def download(self, key: str, dest: Path) -> ObjectInfo:
        """One open, the object's facts read from it, and its bytes copied by the kernel
        (`sendfile`) rather than through a buffer of ours, which made every byte cross memory
        twice more (a 12 MP JPEG: 7 MB per item, evicting other processes' caches)."""
        path = self._path(key)
        try:
            # Non-blocking: a FIFO swapped in for the file must not hang the open.
            source = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"{self.integration}: {key} does not exist") from None
        try:
            stat = os.fstat(source)
            if not S_ISREG(stat.st_mode):
                raise NotFound(f"{self.integration}: {key} is not a file")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with dest.open("wb") as out:
                _copy_in_kernel(source, out.fileno(), stat.st_size)
        finally:
            os.close(source)
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

    def list_folders(self, prefix: str) -> Iterator[str]:
        folder = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not folder.is_dir():
            return
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                yield f"{prefix}{entry.name}/"

    def sign(self, key: str, expires_seconds: int) -> str:
        """A local file has no signature to give; its URI serves a viewer on the same machine."""
        return self._path(key).as_uri()

    def put(self, key: str, data: bytes | Path, content: Content) -> None:
        _check_relative(key)  # a symlink as the last part is replaced, never written through
        folders, name = self._split(key)
        with self._folder(key, folders, create=True) as folder:
            write_exclusive(folder, name, data)

    def delete(self, key: str) -> None:
        _check_relative(key)
        folders, name = self._split(key)
        try:
            with self._folder(key, folders, create=False) as folder:
                os.unlink(name, dir_fd=folder)
        except FileNotFoundError:
            return

    def remove_orphans(self, prefix: str) -> int:
        """Temporaries under `prefix` whose writer, a process of this machine, is gone (a worker
        SIGKILLed mid-write): the next run of the item must leave only what its marker lists.
        A live writer's, or another machine's (a shared folder), are left alone."""
        start = self._path(prefix.rstrip("/"))
        if start.is_symlink():
            return 0
        removed = 0
        for dirpath, _, filenames in os.walk(start):
            for name in filenames:
                if _orphaned(name):
                    with suppress(FileNotFoundError):
                        (Path(dirpath) / name).unlink()
                        removed += 1
        return removed

    @staticmethod
    def _split(key: str) -> tuple[list[str], str]:
        *folders, name = key.split("/")
        return folders, name

    @contextmanager
    def _folder(self, key: str, folders: list[str], create: bool) -> Iterator[int]:
        """A descriptor of the key's folder, reached without following any symlink."""
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            if not create:
                raise
            self.root.mkdir(parents=True, exist_ok=True)  # the root itself is the operator's
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in folders:
                parent, fd = fd, -1
                fd = _descend(parent, part, create, key)
            yield fd
        finally:
            if fd >= 0:
                os.close(fd)


def _check_relative(key: str) -> None:
    if not key or key.startswith("/") or "\\" in key or "\0" in key:
        raise PermissionDenied(f"key {key!r} is not a relative storage key")
    if any(part in ("..", ".", "") for part in key.split("/")):
        raise PermissionDenied(f"key {key!r} may not contain empty, '.' or '..' components")


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
CHUNK = 1024 * 1024


def _descend(parent: int, name: str, create: bool, key: str) -> int:
    """Open folder `name` inside `parent` (closing `parent`); a symlink there is refused.
    Opened first and made only when missing: a tile pyramid writes thousands of files into
    folders that exist, and each system call is a wait for the GIL on return."""
    try:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        with suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=parent)
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except (NotADirectoryError, OSError) as exc:
        if isinstance(exc, FileNotFoundError) and not create:
            raise
        raise PermissionDenied(
            f"key {key!r}: a folder on its path is a symlink or a file; refusing to write"
            " through it"
        ) from None
    finally:
        os.close(parent)


_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMPORARY = re.compile(r"^\..*\.([0-9a-f]{8})-(\d+)\.[0-9a-f]{16}\.partial$")


def _temporary_name(name: str) -> str:
    """Names its writer (this machine, this process) so that what a killed one left can be
    told from what a live one is writing."""
    return f".{name[:64]}.{_HOST}-{os.getpid()}.{secrets.token_hex(8)}.partial"


def _orphaned(name: str) -> bool:
    match = _TEMPORARY.match(name)
    if match is None or match.group(1) != _HOST:
        return False
    try:
        os.kill(int(match.group(2)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        return False
    return False


def write_exclusive(folder: int, name: str, data: bytes | Path) -> None:
    """Write to a new, exclusively created temporary name in `folder`, then rename it to `name`."""
    temporary = _temporary_name(name)
    fd = os.open(temporary, _NEW_FILE_FLAGS, 0o644, dir_fd=folder)
    try:
        if isinstance(data, Path):
            with os.fdopen(fd, "wb") as out, data.open("rb") as src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
        else:
            _write_all(fd, data)
        os.rename(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=folder)
        raise


def _write_all(fd: int, data: bytes) -> None:
    """Write and close `fd` with no file object: its set-up costs three system calls, each a
    wait for the GIL on return, and a tile pyramid writes thousands of small files."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _copy_in_kernel(source: int, target: int, size: int) -> None:
    """The first `size` bytes of `source` to `target` (the size the object was opened with, so
    the copy matches the facts reported for it even if the file grows meanwhile)."""
    offset = 0
    while offset < size:
        sent = os.sendfile(target, source, offset, size - offset)
        if sent == 0:  # shrank since it was opened
            break
        offset += sent
