"""Offline pre-extraction for read-only integrations (SPEC section 7, `preextract`).

A customer runs this on their own machine against a local copy of their bucket (or the bucket
itself) and writes exactly the layout that read-only verification expects, through the same
pipeline the workers run, plus `registration.jsonl`: one SPEC 5 payload per item, ready to post to
a read-only registration endpoint.

Item keys are paths relative to SOURCE, so the default item ids (UUIDv5 of the key) are the ones
verification of the bucket computes. A MIRAX slide (`NAME.mrxs` and its `NAME/` folder) is one
item, and so is a DICOM series (the folder of its `.dcm` instances, as `dir/`). An item whose
`metadata.json` already matches its source (size, ETag) and the pipeline version is skipped, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from worker.config import Integration, Settings
from worker.errors import ConfigError, MediaWorkerError, Reason
from worker.fetch import item_keys, resolve
from worker.identifiers import key_problem, printable
from worker.items import Item
from worker.layout import SlotLayout, normalize_prefix, registration_key
from worker.limits import item_deadline
from worker.markers import is_current, marked_of
from worker.payloads import ItemResult, Metadata, Status
from worker.pipeline import process_item
from worker.storage import ReadableStorage, Storage, open_storage
from worker.storage import open_writable as _open_writable
from worker.storage.local import LocalStorage
from worker.storage.registry import LOCAL_FOLDER, backend_class
from worker.verify import payload_type

log = logging.getLogger(__name__)

LOCAL_DEST = "preextract"
"""The name of the local integration that stands for a DEST folder."""
SKIPPED_MESSAGE = "already extracted from this source by this pipeline version; skipped"


@dataclass(frozen=True)
class Source:
    """Where items are read: a local folder standing for the bucket, or an integration."""

    root: Path | None = None
    integration: str | None = None
    under: str = ""
    """Key prefix to take items from (integration sources)."""
    only: str | None = None
    """A single key (SOURCE was one file)."""

    def open(self, settings: Settings) -> ReadableStorage:
        if self.root is not None:
            return LocalStorage(self.root, "source")
        assert self.integration is not None
        return open_storage(settings.integration(self.integration), settings)


@dataclass(frozen=True)
class Plan:
    """Everything a run needs, picklable, so each worker process opens its own storages."""

    settings: Settings
    source: Source
    dest: str
    """The integration (in `settings`) that receives the layout."""
    fps: float = 0


def resolve_source(text: str, settings: Settings) -> Source:
    """SOURCE: a local file or folder, else `INTEGRATION[:KEY_PREFIX]` from the config."""
    path = Path(text).expanduser()
    if path.exists():
        if path.is_file():
            return Source(root=path.resolve().parent, only=path.name)
        return Source(root=path.resolve())
    name, _, under = text.partition(":")
    if name in settings.integrations:
        return Source(integration=name, under=under.lstrip("/"))
    raise ConfigError(
        f"SOURCE {text!r} is neither a local file or folder nor INTEGRATION[:KEY_PREFIX]"
        f" of a configured integration (configured: {', '.join(settings.integrations) or 'none'})"
    )


def resolve_dest(text: str, settings: Settings, prefix: str | None) -> tuple[Settings, str]:
    """DEST: a configured, writable integration, else a local folder that stands for the bucket.
    Returns the settings holding the destination integration, and its name."""
    if text in settings.integrations and "/" not in text:
        integration = settings.integration(text)
        if integration.readonly:
            raise ConfigError(
                f"DEST {text!r} is a read-only integration: mediaworker never writes to it."
                " Pre-extract into a local folder, upload that folder, then run verify"
            )
        if prefix is not None:
            integration = integration.model_copy(
                update={"prefix": _dest_prefix(integration, prefix)}
            )
        return _with_integration(settings, integration), text
    root = Path(text).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"DEST {text} is a file; give a folder (it is created if missing)")
    root.mkdir(parents=True, exist_ok=True)
    local = Integration(
        name=LOCAL_DEST, provider=LOCAL_FOLDER, root=root, prefix=normalize_prefix(prefix)
    )
    return _with_integration(settings, local), LOCAL_DEST


def _dest_prefix(integration: Integration, prefix: str) -> str:
    return backend_class(integration.provider).prefix_of(prefix)


def _with_integration(settings: Settings, integration: Integration) -> Settings:
    integrations = {**settings.integrations, integration.name: integration}
    return settings.model_copy(update={"integrations": integrations})


def discover(plan: Plan, exclude: Path | None = None) -> list[str]:
    """The item keys of SOURCE, sorted: every file, except hidden ones, MIRAX data folders and
    (when SOURCE holds DEST) the outputs; a folder of DICOM instances as one key."""
    source = plan.source
    if source.only is not None:
        return [source.only]
    storage = source.open(plan.settings)
    skip = _output_prefix(plan, exclude)
    keys = [
        info.key
        for info in storage.list(source.under)
        if not info.key.endswith("/") and not (skip and info.key.startswith(skip))
    ]
    return item_keys([k for k in keys if not _hidden(k)])


def _output_prefix(plan: Plan, exclude: Path | None) -> str | None:
    """Keys under this prefix are outputs of this very run, never sources."""
    source = plan.source
    if source.root is not None and exclude is not None:
        exclude = exclude.resolve()
        if exclude == source.root or source.root in exclude.parents:
            relative = exclude.relative_to(source.root).as_posix()
            return "" if relative == "." else relative + "/"
    if source.integration == plan.dest:
        return plan.settings.integration(plan.dest).prefix + "/"
    return None


def _hidden(key: str) -> bool:
    return any(part.startswith(".") for part in key.split("/"))


def plan_items(plan: Plan, keys: Iterable[str]) -> list[Item]:
    """An item for each key that SPEC 3 accepts; the others are logged and left out (see
    `refused_keys`, which reports them as `invalid_item`)."""
    return [Item(integration=plan.dest, key=key, fps=plan.fps) for key in keys if _usable(key)]


def refused_keys(plan: Plan, keys: Iterable[str]) -> list[ItemResult]:
    """An `invalid_item` result for each SOURCE file whose name SPEC 3 refuses as a key."""
    results = []
    for key in keys:
        problem = key_problem(key)
        if problem is not None:
            results.append(
                ItemResult(
                    item_id="",
                    slot="0",
                    integration=plan.dest,
                    key=key,
                    type="auto",
                    status=Status.FAILED,
                    reason=Reason.INVALID_ITEM,
                    message=f"{printable(key)}: as an item key it {problem}; rename the file",
                )
            )
    return results


def _usable(key: str) -> bool:
    return key_problem(key) is None


def extract_one(plan: Plan, item: Item) -> ItemResult:
    """Extract one item, or skip it when its commit marker already matches its source. Runs in
    a worker process, so it opens its own storages."""
    dest = _open_writable(plan.settings.integration(plan.dest), plan.settings)
    source = plan.source.open(plan.settings)
    done = _completed(plan, item, dest, source)
    if done is not None:
        return done
    with item_deadline(plan.settings.limits.item_timeout_seconds, item.key):
        return process_item(item, plan.settings, dest, source=source)


def _completed(plan: Plan, item: Item, dest: Storage, source: ReadableStorage) -> ItemResult | None:
    layout = SlotLayout(plan.settings.integration(plan.dest).prefix, item.item_id, item.slot)
    try:
        metadata = Metadata.model_validate_json(dest.read_bytes(layout.metadata_key))
        info = resolve(source, item.key).main
    except (MediaWorkerError, ValidationError):
        return None  # not done (or unreadable): extracting again reports any real fault
    if not is_current(marked_of(layout, metadata), info, item.fps):
        return None
    log.info("item %s (%s): %s", item.item_id, item.key, SKIPPED_MESSAGE)
    payload = metadata.payload
    return ItemResult.of(
        item,
        Status.OK,
        payload_type(payload),
        payload,
        message=SKIPPED_MESSAGE,
        assets=metadata.assets,
    )


def run(
    plan: Plan,
    items: list[Item],
    jobs: int = 1,
    on_result: Callable[[ItemResult], None] = lambda result: None,
) -> list[ItemResult]:
    """Extract every item, `jobs` at a time in separate processes; results in item order."""
    if jobs <= 1 or len(items) <= 1:
        results = []
        for item in items:
            results.append(extract_one(plan, item))
            on_result(results[-1])
        return results
    by_key: dict[str, ItemResult] = {}
    # Spawned, not forked: the parent runs threads (progress bar, storage pools).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(jobs, len(items)), mp_context=context) as pool:
        futures = {pool.submit(extract_one, plan, item): item for item in items}
        for future in as_completed(futures):
            result = _outcome(future, futures[future])
            by_key[futures[future].key] = result
            on_result(result)
    return [by_key[item.key] for item in items]


def _outcome(future: Future[ItemResult], item: Item) -> ItemResult:
    try:
        return future.result()
    except BrokenProcessPool:
        # A decoder crash or the out-of-memory killer took a process; which item did it is not
        # known, so every unfinished one fails and a re-run (which skips done items) retries.
        return ItemResult.failure(
            item,
            Reason.POISON,
            f"{item.key}: the extraction process died while this item was running or queued"
            " (out of memory, or a decoder crash); run preextract again, with --jobs 1 to find"
            " the item that kills it",
        )


def write_registration(plan: Plan, results: list[ItemResult]) -> str:
    """`registration.jsonl`: one payload a line for each item that is ok, in key order. Written
    whole at the end (the local backend replaces it atomically). Returns its key."""
    integration = plan.settings.integration(plan.dest)
    at_root = backend_class(integration.provider).local_folder  # next to the layout it uploads
    key = registration_key("" if at_root else integration.prefix)
    lines = [
        json.dumps(r.payload, ensure_ascii=False, sort_keys=True)
        for r in sorted(results, key=lambda r: r.key)
        if r.status == Status.OK and r.payload is not None
    ]
    text = "".join(line + "\n" for line in lines)
    dest = _open_writable(integration, plan.settings)
    dest.write(key, text.encode(), "application/x-ndjson")
    log.info("wrote %s with %d payloads", key, len(lines))
    return key


def default_jobs() -> int:
    return max(1, min(4, (os.cpu_count() or 1)))
