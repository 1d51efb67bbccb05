"""Media kinds and source formats: what the worker reads, each declared once.

A *kind* (`MediaKind`: image, video, slide) is what an item becomes: its queue and task, its
processor, its registration payload and how a read-only integration verifies it. A *format*
(`Format`: TIFF, MIRAX, DICOM, ...) is how a source is recognised (extensions and first bytes),
which kind it is, whether it is several objects fetched as one (`FolderSource`), and what is
checked on the local copy before a decoder opens it.

Every table elsewhere (`ItemType`, sniffing, the queues and task names, reprocess's extensions,
the processors, payload and verification dispatch) is read from `worker.kinds.registry`, which
lists the kinds and formats of the modules in this package; see docs/extending.md.

The types here are light on purpose: `worker.items` reads the kind names at import, so the kind
modules import their processors, payload models and checks inside functions.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from worker.assets import Asset
    from worker.claims import Claim
    from worker.config import Limits, Settings
    from worker.layout import SlotLayout
    from worker.media import MediaResult, ProgressCallback, Sink
    from worker.payloads import Payload
    from worker.storage.base import ObjectInfo, ReadableStorage
    from worker.verify import Report


SNIFF_BYTES = 8192
"""How much of the start of an object sniffing reads (one ranged request)."""


@dataclass(frozen=True)
class ProcessContext:
    """Everything a processor gets: a local file, where outputs go, and the settings. No bucket,
    key layout or queue: processors stay storage-agnostic."""

    path: Path
    sink: Sink
    settings: Settings
    work_dir: Path
    fps: float = 0
    """The frame rate asked for (videos; 0 = native)."""
    progress: ProgressCallback = field(default=lambda stage, done, total: None)


@dataclass(frozen=True)
class PayloadInput:
    """What a payload is built from once a processor has run."""

    key: str
    """The object registered (`storage_key`)."""
    name: str
    path: str
    layout: SlotLayout
    source: ObjectInfo
    result: MediaResult
    written_bytes: int


@dataclass(frozen=True)
class Resolved:
    """An item's source as stored: the object it registers and every object to download.
    Resolved once per item (a folder source lists its folder here, and only here)."""

    key: str
    """The item's key as given (an object, or a folder ending in `/`)."""
    main: ObjectInfo
    """The object that is registered, sniffed and sized, and whose ETag says "unchanged"."""
    label: str
    """The key whose base name and folder name the item in its payload (`name`, `path`)."""
    parts: tuple[tuple[str, str], ...]
    """(storage key, path relative to the local source folder) of each object to download; the
    first is the file a processor opens."""


class FolderSource(Protocol):
    """A source made of several objects (a MIRAX slide and its folder, a DICOM series): listed,
    grouped into one item and fetched together. Bucket-aware, unlike processors."""

    def resolve(self, storage: ReadableStorage, key: str, max_bytes: int | None) -> Resolved:
        """List what the item is made of (one listing) and name what to download."""

    def item_key(self, key: str, claimed: set[str]) -> str | None:
        """The item a listed key stands for: itself, its folder, or None when it is a part of
        an item already seen (the listing is sorted). Adds what it claims to `claimed`: a folder
        (`dir/`, every key under it is part of this item) or a private marker of its own."""


Sniffer = Callable[[bytes], str | None]
"""The kind a source's first bytes say, or None."""
LocalCheck = Callable[[Path, "Limits"], None]
"""Run on the local copy before a decoder opens it (completeness, header claims)."""


@dataclass(frozen=True)
class Format:
    """A source format: how it is recognised and fetched, and what is checked before decoding."""

    name: str
    kind: str
    """The kind its extensions say."""
    extensions: frozenset[str] = frozenset()
    """Lower case, with the dot."""
    content: Sniffer | None = None
    extension_decides: bool = False
    """The extension wins over the content: slide files whose first bytes say "TIFF" at best."""
    content_decides: bool = False
    """The extension alone does not tell the kind (a TIFF may be a photo or a slide): a listing
    reads the first bytes of such a key before typing it."""
    folder_keys: bool = False
    """A key ending in `/` names an item of this format (a DICOM series by its folder)."""
    source: FolderSource | None = None
    check: LocalCheck | None = None


Processor = Callable[[ProcessContext], "MediaResult"]
PayloadBuilder = Callable[[PayloadInput], "Payload"]
AssetLister = Callable[["Payload", "SlotLayout | None"], "list[Asset]"]
ContentCheck = Callable[["Payload", "ReadableStorage", "Report", "Limits"], None]
ClaimCheck = Callable[["Payload", "Limits"], "list[Claim]"]


@dataclass(frozen=True)
class MediaKind:
    """One kind of item: where it is queued, how it is processed, registered and verified."""

    name: str
    queue: str
    task: str
    """The Celery task name producers send to (see docs/queue.md)."""
    process: Processor
    payload: PayloadBuilder
    payload_model: str
    """The payload class, as `module:name` (imported late: payloads import the item types)."""
    assets: AssetLister
    """The keys a payload names beyond its source and thumbnail, for verification."""
    claims: ClaimCheck
    """The payload's counts and sizes against the limits, before any is expanded into keys."""
    check: ContentCheck | None = None
    """Content checks of verification beyond "every key exists" and the thumbnail (counts,
    descriptors)."""


def extensions(*names: str) -> frozenset[str]:
    return frozenset(f".{name}" for name in names)


def imported(target: str) -> Any:
    """`module:name`, imported."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def lazy(target: str) -> Callable[..., Any]:
    """A function that calls `module:name`, imported on the first call: a kind's entry names
    its payload builder and verification steps without importing them (see the docstring)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return imported(target)(*args, **kwargs)

    call.__qualname__ = call.__name__ = target
    return call
