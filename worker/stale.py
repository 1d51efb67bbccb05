"""After a commit, the slot holds exactly what its marker lists.

A re-run that makes fewer outputs (a lower `--fps`, a source re-encoded shorter, a slide
replaced by a smaller one) would otherwise leave the earlier run's extra sections, segments or
tiles beside the new ones. The slot is listed once the new `metadata.json` is written, and every
key it does not list is deleted. Before the commit nothing is removed but the old marker (the
pipeline deletes it first), so a failed run never leaves a marker vouching for missing files.

Only writable storages get here: a read-only integration never reaches the write path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from worker.assets import Asset, AssetIndex
from worker.bounded import bounded_map
from worker.errors import PermissionDenied, TransientError
from worker.layout import SlotLayout
from worker.storage.base import Storage

log = logging.getLogger(__name__)

DELETE_CONCURRENCY = 8


def remove_stale(storage: Storage, layout: SlotLayout, assets: Iterable[Asset]) -> int:
    """Delete every key under the slot that neither `assets` nor the marker names; returns how
    many. A storage that refuses the listing keeps its leftovers (logged, not an item failure:
    the marker is already true to what it lists)."""
    listed = AssetIndex(assets)
    try:
        with ThreadPoolExecutor(DELETE_CONCURRENCY, thread_name_prefix="stale") as pool:
            stale = _stale_keys(storage, layout, listed)
            removed = sum(
                1 for _ in bounded_map(pool, storage.delete, stale, 4 * DELETE_CONCURRENCY)
            )
    except (PermissionDenied, TransientError) as exc:
        log.warning(
            "%s: leftovers of earlier runs under %s could not be removed (%s); the listing needs"
            " s3:ListBucket (or List on Azure) and deleting s3:DeleteObject under the prefix",
            layout.item_id,
            layout.root,
            exc,
        )
        return 0
    if removed:
        log.info("%s: removed %d outputs of an earlier run", layout.item_id, removed)
    return removed


def _stale_keys(storage: Storage, layout: SlotLayout, listed: AssetIndex) -> Iterator[str]:
    for info in storage.list(layout.root):
        if info.key != layout.metadata_key and info.key not in listed:
            yield info.key
