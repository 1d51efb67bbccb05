"""After a commit, the slot holds exactly what its marker lists.

A re-run that makes fewer outputs (a lower `--fps`, a source re-encoded shorter, a slide
replaced by a smaller one) would otherwise leave the earlier run's extra sections, segments or
tiles beside the new ones. The earlier marker's asset list is read before the run replaces it;
once the new `metadata.json` is written, every key the earlier list names and the new one does
not is deleted. Nothing is listed, so no `s3:ListBucket` is needed, and before the commit
nothing is removed but the old marker (the pipeline deletes it first), so a failed run never
leaves a marker vouching for missing files. (Outputs of a run that failed, which has no marker,
are not known this way; they are overwritten by the next run where the names coincide.)

Only writable storages get here: a read-only integration never reaches the write path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from pydantic import ValidationError

from worker.assets import Asset, AssetIndex, iter_keys
from worker.bounded import bounded_map
from worker.errors import MediaWorkerError
from worker.layout import SlotLayout
from worker.payloads import Metadata
from worker.storage.base import Storage

log = logging.getLogger(__name__)

DELETE_CONCURRENCY = 8


def earlier_assets(storage: Storage, layout: SlotLayout) -> list[Asset]:
    """What the slot's current marker lists (nothing when there is none or it is unreadable)."""
    try:
        return Metadata.model_validate_json(storage.read_bytes(layout.metadata_key)).assets
    except (MediaWorkerError, ValidationError, ValueError):
        return []


def remove_stale(
    storage: Storage, layout: SlotLayout, assets: Iterable[Asset], earlier: Iterable[Asset]
) -> int:
    """Delete every key under the slot that `earlier` names and `assets` does not; returns how
    many. A delete that fails is logged, not an item failure: the marker is already true."""
    listed = AssetIndex(assets)
    try:
        with ThreadPoolExecutor(DELETE_CONCURRENCY, thread_name_prefix="stale") as pool:
            stale = _stale_keys(layout, listed, earlier)
            removed = sum(
                1 for _ in bounded_map(pool, storage.delete, stale, 4 * DELETE_CONCURRENCY)
            )
    except MediaWorkerError as exc:
        log.warning(
            "%s: outputs of an earlier run under %s could not be removed (%s); deleting needs"
            " s3:DeleteObject (or Delete on Azure) under the prefix",
            layout.item_id,
            layout.root,
            exc,
        )
        return 0
    if removed:
        log.info("%s: removed %d outputs of an earlier run", layout.item_id, removed)
    return removed


def _stale_keys(layout: SlotLayout, listed: AssetIndex, earlier: Iterable[Asset]) -> Iterator[str]:
    for key in iter_keys(earlier):
        if key.startswith(layout.root) and key != layout.metadata_key and key not in listed:
            yield key
