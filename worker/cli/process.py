"""`mediaworker process`: process items now, in this process, with no broker."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from worker.cli.common import (
    common_options,
    emit_json,
    profile_option,
    progress_bar,
    report,
    result_json,
    setup,
)
from worker.cli.report import report_option, write_run_report
from worker.config import with_video_profile
from worker.items import Item, ItemType
from worker.limits import item_deadline
from worker.pipeline import process_item
from worker.storage import open_storage

TYPE_CHOICE = click.Choice([t.value for t in ItemType])


@click.command("process")
@click.argument("integration")
@click.argument("keys", nargs=-1, required=True)
@click.option("--type", "item_type", type=TYPE_CHOICE, default="auto", show_default=True)
@click.option("--fps", type=click.FloatRange(min=0), default=0, help="0 = native frame rate.")
@click.option("--item-id", default=None, help="Only with a single KEY; default: UUIDv5 of the key.")
@click.option("--slot", default="0", show_default=True)
@report_option
@profile_option
@common_options
def process_command(
    integration: str,
    keys: tuple[str, ...],
    item_type: str,
    fps: float,
    item_id: str | None,
    slot: str,
    report_path: Path | None,
    profile: str | None,
    config_file: str | None,
    as_json: bool,
    verbose: bool,
) -> int:
    """Process KEYs of INTEGRATION now, in this process (no broker needed)."""
    if item_id and len(keys) > 1:
        raise click.UsageError("--item-id names one item; give a single KEY with it")
    settings = with_video_profile(setup(config_file, verbose), profile)
    items = [
        Item(
            integration=integration,
            key=key,
            type=ItemType(item_type),
            fps=fps,
            item_id=item_id or "",
            slot=slot,
        )
        for key in keys
    ]  # every id, slot and key is checked here, before any request (exit 2 when refused)
    storage = open_storage(settings.integration(integration), settings)
    results = []
    started = datetime.now(UTC)
    with progress_bar(len(items), "processing", enabled=not as_json) as advance:
        for item in items:
            with item_deadline(settings.limits.item_timeout_seconds, item.key):
                result = process_item(item, settings, storage)
            results.append(result)
            if as_json:
                emit_json(result_json(result))
            advance()
    write_run_report(report_path, results, settings, "process", started)
    return report(results, as_json)
