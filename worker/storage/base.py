"""The storage interface: a few primitives per backend, everything else derived here once.

Keys are bucket-relative (`data/<item>/files/0/thumbnail.jpg`); for Azure the first component is
the container (`example_container/example_folder/file.jpeg`). Backends raise only the errors of
`worker.errors` (`NotFound`, `PermissionDenied`, `StorageUnavailable`), each mapped in one table.

`ReadableStorage` is everything processing a read-only integration may do; `Storage` adds writes.
A read-only integration is handed a `ReadOnlyView`, which has no write method at all.

A backend class is also what a provider *is* (`worker.storage.registry` maps each provider name to
one): its class methods check an integration's fields, open it, and give `check` and `policy`
their provider's terms (CORS rules, the fix for a refusal, the policy to print).
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, Literal

from worker.errors import NotFound

if TYPE_CHECKING:
    from worker.config import Integration, Settings
    from worker.policy import PolicyRequest, Setup

Capability = Literal["read", "write", "delete", "list", "sign"]
"""What `check` tries; a refusal of one is explained by `Storage.denied_fix`."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    last_modified: datetime | None = None


@dataclass(frozen=True)
class Content:
    """How a written object is served: its Content-Type and Content-Encoding."""

    type: str = "application/octet-stream"
    encoding: str | None = None


@dataclass(frozen=True)
class CorsRule:
    """One CORS rule of a bucket or blob service, as `check` matches it against an origin."""

    origins: tuple[str, ...]
    methods: tuple[str, ...]


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

    def read_cors(self) -> list[CorsRule]:
        """The CORS rules browsers meet ([] when none are set), for `check` only; a provider
        without CORS raises `NotImplementedError`."""
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
    """A writable integration, and (class methods) the provider it belongs to."""

    local_folder: ClassVar[bool] = False
    """A folder on this machine: the report reaches it by relative paths and `preextract` puts
    `registration.jsonl` at its root, next to the layout it uploads."""

    @classmethod
    def configure(cls, integration: Integration) -> dict[str, Any]:
        """Check the integration's fields against the provider's rules (a `ValueError` naming
        the field and the rule) and return the fields derived from them (`prefix` at least)."""
        return {"prefix": cls.prefix_of(integration.prefix)}

    @classmethod
    def prefix_of(cls, text: str) -> str:
        """The provider's form of a configured prefix (`/data/` -> `data`)."""
        from worker.layout import normalize_prefix

        return normalize_prefix(text)

    @classmethod
    def from_integration(cls, integration: Integration, settings: Settings) -> Storage:
        return cls(integration, settings.worker)  # type: ignore[call-arg]

    @classmethod
    def listing_root(cls, integration: Integration) -> str:
        """Where `check` lists when it has no sample key (the bucket's root by default)."""
        return ""

    @classmethod
    def denied_fix(
        cls, integration: Integration, capability: Capability, key: str, exc: Exception
    ) -> str:
        """What to grant when `capability` on `key` (a prefix for write, delete and list) was
        refused with `exc`, in the provider's terms."""
        verb = "read" if capability == "sign" else capability
        return f"give the worker permission to {verb} {key or 'the bucket'}"

    @classmethod
    def cors_fix(cls, integration: Integration, origin: str, missing: list[str]) -> str:
        """How to let browsers at `origin` use the `missing` methods on the renditions."""
        raise NotImplementedError

    @classmethod
    def setup(cls, request: PolicyRequest) -> Setup:
        """What `mediaworker policy` prints: documents, commands and why each is there."""
        raise NotImplementedError

    def write(
        self,
        key: str,
        data: bytes | Path,
        content_type: str = "application/octet-stream",
        content_encoding: str | None = None,
    ) -> None:
        """Create or replace the object; a `Path` is streamed from disk."""
        self.put(key, data, Content(content_type, content_encoding))

    @abstractmethod
    def put(self, key: str, data: bytes | Path, content: Content) -> None:
        """`write`'s primitive: store `data` served with `content`'s headers."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object if present (for `check`'s probe and for clearing partial output)."""

    def write_text(self, key: str, text: str, content_type: str = "text/plain") -> None:
        self.write(key, text.encode(), content_type=f"{content_type}; charset=utf-8")

    def remove_orphans(self, prefix: str) -> int:
        """Remove what writers killed mid-write left under `prefix`; returns how many. Object
        stores publish an object whole or not at all, so by default there is nothing."""
        return 0


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

    def read_cors(self) -> list[CorsRule]:
        return self._inner.read_cors()

    def download(self, key: str, dest: Path) -> ObjectInfo:
        return self._inner.download(key, dest)


def scratch_dir(base: Path | None, prefix: str) -> Path:
    """A private (0700) temporary folder under the configured work dir (or the system's),
    named so that a later start can remove it if this process is killed (`worker.scratch`)."""
    from worker import scratch

    return scratch.make(base, prefix.removeprefix("mw-").strip("-") or "item")
