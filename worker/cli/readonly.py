"""`mediaworker verify` and `mediaworker preextract`: the read-only integration's two commands.

`verify` checks pre-extracted assets without writing anything (whatever the integration's flag,
its storage is opened as a `ReadOnlyView`). `preextract` is the customer's offline tool that makes
those assets and `registration.jsonl`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from worker.cli.common import (
    common_options,
    emit_json,
    profile_option,
    progress_bar,
    report,
    result_json,
    setup,
    stderr,
)
from worker.cli.report import report_option, write_run_report
from worker.config import Limits, with_video_profile
from worker.errors import ConfigError, InvalidItem, PermanentError, TransientError, reason_of
from worker.items import Item
from worker.layout import SlotLayout
from worker.limits import item_deadline
from worker.payloads import AssetProblem, ItemResult, Metadata, Payload, Status, parse_payload
from worker.preextract import (
    LOCAL_DEST,
    Plan,
    default_jobs,
    discover,
    plan_items,
    refused_keys,
    resolve_dest,
    resolve_source,
    write_registration,
)
from worker.preextract import run as run_preextract
from worker.safety import internal_error
from worker.storage import open_writable
from worker.storage.base import ObjectInfo, ReadOnlyView
from worker.verify import MAX_READ_BYTES, item_for_payload, verify_item

Job = tuple[Item, Payload | None]
log = logging.getLogger(__name__)


@click.command("verify")
@click.argument("integration")
@click.argument("keys", nargs=-1)
@click.option(
    "--from-file",
    "from_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON lines: registration payloads (registration.jsonl), result lines or items.",
)
@click.option("--slot", default="0", show_default=True, help="Slot of KEYs.")
@report_option
@common_options
def verify_command(
    integration: str,
    keys: tuple[str, ...],
    from_file: Path | None,
    slot: str,
    report_path: Path | None,
    config_file: str | None,
    as_json: bool,
    verbose: bool,
) -> int:
    """Check the pre-extracted assets of KEYs (or of the payloads in --from-file; with neither,
    of every item committed under the prefix) in INTEGRATION, writing nothing. Exit 1 when any
    asset is missing or invalid."""
    if keys and from_file:
        raise click.UsageError("give KEYs or --from-file payloads.jsonl, not both")
    settings = setup(config_file, verbose)
    target = settings.integration(integration)
    # Opened read-only whatever the integration's flag: verifying never writes.
    storage = ReadOnlyView(open_writable(target, settings))
    jobs: Iterable[Job | ItemResult]
    if from_file is not None:
        jobs = _jobs_from_file(from_file, integration)
    elif keys:
        jobs = [(Item(integration=integration, key=key, slot=slot), None) for key in keys]
    else:
        # One committed item at a time: the listing may be of millions.
        jobs = _jobs_from_listing(storage, target.prefix, integration)
    total = len(jobs) if isinstance(jobs, list) else 0
    results = []
    started = datetime.now(UTC)
    with progress_bar(total, "verifying", enabled=not as_json) as advance:
        for job in jobs:
            result = _verify_one_bounded(job, target, storage, settings.limits)
            if as_json:
                emit_json(result_json(result))
            if as_json and report_path is None:
                # Only the outcome is needed from here on: a listing may be of millions.
                result = result.model_copy(update={"payload": None, "assets": [], "problems": []})
            results.append(result)
            advance()
    if not as_json:
        _print_problems(results)
    write_run_report(report_path, results, settings, "verify", started)
    return report(results, as_json)


def _verify_one_bounded(
    job: Job | ItemResult, target: Any, storage: ReadOnlyView, limits: Limits
) -> ItemResult:
    """One item's verification, within the item's time limit; whatever goes wrong with it
    becomes its result, so one bad item never ends the batch."""
    if isinstance(job, ItemResult):
        return job
    item, payload = job
    try:
        with item_deadline(limits.item_timeout_seconds, item.key):
            return verify_item(item, target, storage, payload, limits)
    except TransientError as exc:
        return ItemResult.failure(item, reason_of(exc), f"{exc} (try again later)")
    except PermanentError as exc:
        return ItemResult.failure(item, reason_of(exc), str(exc))
    except Exception:
        error = internal_error(log, f"verifying item {item.item_id}")
        return ItemResult.failure(item, error.reason, str(error))


def _jobs_from_file(path: Path, integration: str) -> list[Job]:
    """Each line: a payload (has `storage_key`), a result line (has `payload`), or an item."""
    jobs: list[Job] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            jobs.append(_job_from_line(json.loads(line), integration))
        except (json.JSONDecodeError, ValidationError, TypeError, KeyError, InvalidItem) as exc:
            raise ConfigError(
                f"{path}:{number}: not a registration payload, result line or item ({exc})"
            ) from None
    return jobs


def _jobs_from_listing(
    storage: ReadOnlyView, prefix: str, integration: str
) -> Iterator[Job | ItemResult]:
    """Every committed slot under the prefix, found by listing it (this needs list permission,
    `s3:ListBucket`, unlike verifying named KEYs): its `metadata.json` names the source and
    holds the payload to check against. A marker that cannot be used is that item's result."""
    for info in storage.list(f"{prefix}/"):
        slot = SlotLayout.containing(info.key)
        if slot is None or info.key != slot.metadata_key:
            continue
        placeholder = Item(
            integration=integration, key=info.key, item_id=slot.item_id, slot=slot.slot
        )
        try:
            metadata = Metadata.model_validate_json(_read_marker(storage, info))
            item = Item(
                integration=integration,
                key=metadata.source.key,
                item_id=slot.item_id,
                slot=slot.slot,
                type=item_for_payload(metadata.payload, integration).type,
            )
        except (ValidationError, ValueError, InvalidItem) as exc:
            problem = f"invalid: not a usable mediaworker metadata.json ({_first_line(exc)})"
            yield _marker_result(placeholder, info.key, problem)
            continue
        yield item, metadata.payload


def _read_marker(storage: ReadOnlyView, info: ObjectInfo) -> bytes:
    if info.size > MAX_READ_BYTES:
        raise ValueError(f"{info.size} bytes, far more than a commit marker holds")
    return storage.read_range(info.key, 0, MAX_READ_BYTES)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _marker_result(item: Item, key: str, problem: str) -> ItemResult:
    return ItemResult.of(
        item,
        Status.MISSING_ASSETS,
        message=f"1 assets missing or invalid: {key}: {problem}",
        assets=[key],
        problems=[AssetProblem(key=key, problem=problem)],
    )


def _job_from_line(data: dict[str, Any], integration: str) -> Job:
    if "storage_key" in data:
        payload = parse_payload(data)
        return item_for_payload(payload, integration), payload
    if isinstance(data.get("payload"), dict):
        payload = parse_payload(data["payload"])
        item = Item(
            integration=integration,
            key=payload.storage_key,
            item_id=data.get("item_id", ""),
            slot=data.get("slot", "0"),
            type=item_for_payload(payload, integration).type,
        )
        return item, payload
    fields = {k: v for k, v in data.items() if k in ("key", "item_id", "slot", "type", "fps")}
    return Item(integration=integration, **fields), None


def _print_problems(results: list[ItemResult]) -> None:
    for result in results:
        for problem in result.problems:
            stderr.print(f"[red]{result.key}[/]: {problem.key}: {problem.problem}", soft_wrap=True)


@click.command("preextract")
@click.argument("source")
@click.option(
    "--out",
    "dest",
    required=True,
    help="A local folder (it stands for the bucket) or a writable integration.",
)
@click.option("--prefix", default=None, help="Prefix of the layout (default: data).")
@click.option("--fps", type=click.FloatRange(min=0), default=0, help="0 = native frame rate.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Items in parallel.")
@report_option
@profile_option
@common_options
def preextract_command(
    source: str,
    dest: str,
    prefix: str | None,
    fps: float,
    jobs: int | None,
    report_path: Path | None,
    profile: str | None,
    config_file: str | None,
    as_json: bool,
    verbose: bool,
) -> int:
    """Pre-extract every item of SOURCE (a local file or folder, or INTEGRATION[:KEY_PREFIX])
    into --out, with registration.jsonl. Item keys are SOURCE's relative paths; items already
    extracted from the same source are skipped, so an interrupted run resumes."""
    settings = with_video_profile(setup(config_file, verbose), profile)
    dest_settings, dest_name = resolve_dest(dest, settings, prefix)
    plan = Plan(
        settings=dest_settings,
        source=resolve_source(source, dest_settings),
        dest=dest_name,
        fps=fps,
    )
    local_dest = Path(dest) if dest_name == LOCAL_DEST else None
    keys = discover(plan, exclude=local_dest)
    items, refused = plan_items(plan, keys), refused_keys(plan, keys)
    if not items and not refused:
        raise ConfigError(f"SOURCE {source} holds no files to extract")
    started = datetime.now(UTC)
    with progress_bar(len(items), "extracting", enabled=not as_json) as advance:

        def done(result: ItemResult) -> None:
            if as_json:
                emit_json(result_json(result))
            advance()

        for result in refused:
            done(result)
        results = refused + run_preextract(plan, items, jobs or default_jobs(), on_result=done)
    key = write_registration(plan, results)
    if not as_json:
        stderr.print(f"registration payloads: {key} in {dest}")
    write_run_report(report_path, results, dest_settings, "preextract", started)
    return report(results, as_json)
