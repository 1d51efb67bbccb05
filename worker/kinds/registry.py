"""The registry: every media kind and source format the worker reads, and every table derived
from them. Nothing else lists kinds, extensions, magic numbers, queues or task names
(`tests/test_registry.py` checks it); adding a kind or a format is a module in this package and
a line below (docs/extending.md).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from worker.kinds import (
    FolderSource,
    Format,
    MediaKind,
    dicom,
    image,
    imported,
    mirax,
    slide,
    video,
)

if TYPE_CHECKING:
    from worker.config import Limits
    from worker.payloads import Payload

KINDS: tuple[MediaKind, ...] = (image.KIND, video.KIND, slide.KIND)
FORMATS: tuple[Format, ...] = (
    *dicom.FORMATS,
    *image.FORMATS,
    *video.FORMATS,
    *mirax.FORMATS,
    *slide.FORMATS,
)
"""In sniffing order: the first whose first-bytes check answers decides."""

KIND_NAMES: tuple[str, ...] = tuple(k.name for k in KINDS)
QUEUES: tuple[str, ...] = tuple(k.queue for k in KINDS)
TASK_NAMES: dict[str, str] = {k.queue: k.task for k in KINDS}
"""The task name of each queue: what producers pass to `send_task` (see docs/queue.md)."""
FALLBACK_QUEUE = image.KIND.queue
"""Where an item whose type could not be told before sending goes (its worker reports why)."""

_BY_NAME = {k.name: k for k in KINDS}
_BY_EXTENSION: dict[str, Format] = {}
for _format in FORMATS:
    for _ext in _format.extensions:
        if _ext in _BY_EXTENSION:
            raise RuntimeError(
                f"{_ext} is claimed twice: {_BY_EXTENSION[_ext].name}, {_format.name}"
            )
        _BY_EXTENSION[_ext] = _format
EXTENSIONS: frozenset[str] = frozenset(_BY_EXTENSION)
"""Every extension a source is recognised by (lower case, with the dot)."""


def kind(name: str) -> MediaKind:
    try:
        return _BY_NAME[str(name)]
    except KeyError:
        raise ValueError(f"unknown media kind {name!r}; the kinds are {KIND_NAMES}") from None


def queue_of(kind_name: str) -> str:
    """The queue of a kind; the fallback queue for a type not known yet (`auto`)."""
    found = _BY_NAME.get(str(kind_name))
    return found.queue if found is not None else FALLBACK_QUEUE


def extension(name: str) -> str:
    return posixpath.splitext(posixpath.basename(name.replace("\\", "/")))[1].lower()


def format_of(name: str) -> Format | None:
    """The format a key or file name's extension says (a folder key: the format of folders)."""
    if name.endswith("/") and name.strip("/"):
        return next((f for f in FORMATS if f.folder_keys), None)
    return _BY_EXTENSION.get(extension(name))


def sniff(head: bytes, name: str) -> str | None:
    """The kind of a source whose first bytes are `head` and whose key or file name is `name`;
    None when neither says. Content wins over the extension, since keys are named by people and
    tools that get them wrong, but for formats whose extension decides on its own."""
    by_name = format_of(name)
    if by_name is not None and (by_name.extension_decides or name.endswith("/")):
        return by_name.kind
    for candidate in FORMATS:
        found = candidate.content(head) if candidate.content is not None else None
        if found is not None:
            return found
    return by_name.kind if by_name is not None else None


def kind_of_key(key: str) -> str | None:
    """The kind a key's extension says, without reading it (for `content_decides` formats,
    what they usually are)."""
    found = format_of(key)
    return found.kind if found is not None else None


def needs_content(key: str) -> bool:
    """Whether a listing must read a key's first bytes to type it."""
    found = format_of(key)
    return found is not None and found.content_decides


def folder_source(key: str) -> FolderSource | None:
    found = format_of(key)
    return found.source if found is not None else None


def check_local(path: Path, limits: Limits) -> None:
    """The checks of the local file's format before a decoder opens it (completeness, header
    claims); a slide of no listed format gets the TIFF header check."""
    found = format_of(path.name)
    check = found.check if found is not None and found.check else slide.check_tiff_claims
    check(path, limits)


def kind_of_payload(payload: Payload) -> MediaKind:
    for candidate in KINDS:
        if isinstance(payload, imported(candidate.payload_model)):
            return candidate
    raise TypeError(f"no media kind registers {type(payload).__name__}")


class ItemGrouper:
    """Which listed keys are items, in listing (sorted) order: a multi-file source is one item
    (a MIRAX slide is its `.mrxs`, a DICOM series its folder), its other files are not items.
    Holds the folders claimed so far (one entry per multi-file item)."""

    def __init__(self) -> None:
        self._claimed: set[str] = set()

    def item_key(self, key: str) -> str | None:
        if self._inside_claimed(key):
            return None
        source = folder_source(key)
        return key if source is None else source.item_key(key, self._claimed)

    def _inside_claimed(self, key: str) -> bool:
        folder = posixpath.dirname(key)
        while folder:
            if folder + "/" in self._claimed:
                return True
            folder = posixpath.dirname(folder)
        return False

    def items(self, keys: Iterable[str]) -> Iterator[str]:
        for key in keys:
            found = self.item_key(key)
            if found is not None:
                yield found


def item_keys(keys: Iterable[str]) -> list[str]:
    """The item keys among listed keys (see `ItemGrouper`), sorted."""
    return sorted(ItemGrouper().items(sorted(keys)))
