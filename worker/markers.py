"""The commit markers under an integration's prefix, indexed by the source key each names.

`reprocess` needs to know, for a listed source, which items were made from it: their id may be
the default (a UUIDv5 of the key) or anything the registering system chose. So every item's
marker is read once up front (item folders by delimited listing, one entry per folder however
many renditions it holds; then one read per marker, a bounded window at a time) and kept as a few
fields per item. Slot "0" is read directly; an item's other slots are found (by listing its
slot folders) only when it has no slot "0", which keeps the cost at one read per item.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pydantic import ValidationError

from worker import PIPELINE_VERSION
from worker.bounded import bounded_map
from worker.errors import NotFound
from worker.layout import SlotLayout
from worker.payloads import Metadata
from worker.storage.base import ObjectInfo, ReadableStorage

log = logging.getLogger(__name__)

MAX_INDEXED_ITEMS = 200_000
"""Markers held in the index (a few hundred bytes each); a prefix holding more falls back to
reading the default item id's marker per listed key."""
READ_WINDOW = 32
"""Marker reads in flight at once: enough to hide request latency, bounded for memory."""


@dataclass(frozen=True)
class Marked:
    """What one commit marker says about the item it commits."""

    item_id: str
    slot: str
    etag: str | None
    pipeline_version: str
    fps: float = 0
    """The frame rate a video was asked at (0: native), so a re-run keeps it."""
    native_fps: float | None = None
    """A video's native frame rate (None for other kinds)."""


def marked_of(layout: SlotLayout, metadata: Metadata) -> Marked:
    payload = metadata.payload
    fps, native = 0.0, getattr(payload, "native_fps", None)
    made = getattr(payload, "fps", None)
    if native is not None and made is not None and abs(made - native) > 0.01:
        fps = made
    source = metadata.source
    version = metadata.pipeline_version
    return Marked(layout.item_id, layout.slot, source.etag, version, fps, native)


def is_current(marked: Marked, source: ObjectInfo, fps: float | None = None) -> bool:
    """The one "is this item up to date" rule, asked by `preextract`, `reprocess` and a worker
    given an item again after the worker that had it died: its marker names this very source
    (same ETag: a changed object gets a new one, whatever its size), the running pipeline
    version, and, when `fps` is given, a video made at the frame rate asked for now (SPEC 4.2's
    step rule)."""
    return (
        marked.pipeline_version == PIPELINE_VERSION
        and _same_etag(marked.etag, source.etag)
        and (fps is None or _same_fps(marked, fps))
    )


def _same_etag(a: str | None, b: str | None) -> bool:
    return bool(a and b) and str(a).strip('"') == str(b).strip('"')


def _same_fps(marked: Marked, fps: float) -> bool:
    native = marked.native_fps
    if native is None:
        return True
    made = marked.fps or native
    wanted = native if fps <= 0 else native / round(max(native / fps, 1), 4)
    return abs(made - wanted) < 0.01 or (fps > 0 and abs(made - fps) < 0.01)


def read_metadata(storage: ReadableStorage, layout: SlotLayout) -> Metadata | None:
    """A slot's commit marker; None when absent or unreadable (the item is then redone)."""
    try:
        return Metadata.model_validate_json(storage.read_bytes(layout.metadata_key))
    except NotFound:
        return None
    except (ValidationError, ValueError):
        log.warning("unreadable commit marker %s; its item is redone", layout.metadata_key)
        return None


def read_marker(storage: ReadableStorage, layout: SlotLayout) -> tuple[str, Marked] | None:
    """The source key a slot's marker names and what it says; None when absent or unreadable."""
    metadata = read_metadata(storage, layout)
    if metadata is None:
        return None
    return metadata.source.key, marked_of(layout, metadata)


class MarkerIndex:
    def __init__(self) -> None:
        self._by_key: dict[str, list[Marked]] = {}
        self.size = 0

    def add(self, key: str, marked: Marked) -> None:
        self._by_key.setdefault(key, []).append(marked)
        self.size += 1

    def get(self, key: str) -> list[Marked]:
        return self._by_key.get(key, [])


def build_marker_index(storage: ReadableStorage, prefix: str) -> MarkerIndex | None:
    """Every item's marker under `prefix`, by source key; None when the backend cannot list
    folders or there are more than `MAX_INDEXED_ITEMS`."""
    index = MarkerIndex()
    try:
        with ThreadPoolExecutor(8, thread_name_prefix="markers") as pool:
            folders = storage.list_folders(f"{prefix}/")
            for _, found in bounded_map(
                pool, lambda f: _item_markers(storage, prefix, f), folders, READ_WINDOW
            ):
                for key, marked in found:
                    index.add(key, marked)
                if index.size > MAX_INDEXED_ITEMS:
                    log.info("more than %d markers: reading each key's own", MAX_INDEXED_ITEMS)
                    return None
    except NotImplementedError:
        return None
    return index


def _item_markers(storage: ReadableStorage, prefix: str, folder: str) -> list[tuple[str, Marked]]:
    """The markers of one item folder: slot "0"'s in one read (the usual case); only when it has
    none are its slot folders listed (one more request per such item, not per item)."""
    item_id = folder[len(prefix) + 1 :].rstrip("/")
    found = read_marker(storage, SlotLayout(prefix, item_id))
    if found is not None:
        return [found]
    slots = [f.rstrip("/").rsplit("/", 1)[-1] for f in storage.list_folders(f"{folder}files/")]
    markers = [
        read_marker(storage, SlotLayout(prefix, item_id, slot)) for slot in slots if slot != "0"
    ]
    return [marker for marker in markers if marker is not None]
