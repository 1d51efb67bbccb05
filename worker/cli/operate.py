"""Operator commands: `reprocess`, `check`, `sign`, `policy` (SPEC section 7)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from worker.cli.common import (
    EXIT_ITEMS_FAILED,
    EXIT_OK,
    common_options,
    emit_json,
    setup,
    stderr,
)
from worker.config import MAX_SIGNED_URL_SECONDS, Settings
from worker.items import Item, ItemType
from worker.policy import PolicyRequest, build_setup, render_text
from worker.preflight import Outcome, all_ok, run_checks
from worker.reprocess import ReprocessOptions, ReprocessSummary, parse_since, reprocess
from worker.storage import open_storage

MEDIA_TYPES = click.Choice([t.value for t in ItemType if t != ItemType.AUTO])


def _queue_enqueue(settings: Settings) -> Callable[[list[Item]], list[str]]:
    from worker.queue import enqueue

    return lambda items: enqueue(items, settings)


@contextmanager
def _reprocess_progress(enabled: bool) -> Iterator[Callable[[ReprocessSummary], None]]:
    """A live line of counts on stderr: the listing's length is unknown until it ends."""
    if not enabled:
        yield lambda summary: None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task("listing")
        seen = [0]

        def update(s: ReprocessSummary) -> None:
            seen[0] += 1
            if seen[0] % 50 == 0:
                bar.update(task, description=_counts(s))

        yield update


def _counts(s: ReprocessSummary) -> str:
    verb = "to enqueue" if s.dry_run else "enqueued"
    return f"listed {s.listed}, up to date {s.up_to_date}, {verb} {s.enqueued}"


def _print_summary(summary: ReprocessSummary) -> None:
    table = Table(title="reprocess (dry run: nothing enqueued)" if summary.dry_run else "reprocess")
    table.add_column("")
    table.add_column("count", justify="right")
    rows = [
        ("listed", summary.listed),
        ("not sources (renditions, MIRAX data, other files)", summary.not_sources),
        ("filtered out (--type, --since)", summary.filtered_out),
        ("skipped as up to date", summary.up_to_date),
        ("would enqueue" if summary.dry_run else "enqueued", summary.enqueued),
    ]
    rows += [(f"  {name}", count) for name, count in sorted(summary.by_type.items())]
    for label, count in rows:
        table.add_row(label, str(count))
    stderr.print(table)


@click.command("reprocess")
@click.argument("integration")
@click.option("--under", default="", help="Only keys under this prefix (a folder).")
@click.option("--type", "item_type", type=MEDIA_TYPES, default=None, help="Only this media type.")
@click.option("--since", default=None, help="Only sources modified at or after DATE (ISO 8601).")
@click.option("--force", is_flag=True, help="Enqueue even items that are up to date.")
@click.option("--dry-run", is_flag=True, help="Count what would be enqueued; enqueue nothing.")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=500, show_default=True)
@common_options
def reprocess_command(
    integration: str,
    under: str,
    item_type: str | None,
    since: str | None,
    force: bool,
    dry_run: bool,
    batch_size: int,
    config_file: str | None,
    as_json: bool,
    verbose: bool,
) -> int:
    """List INTEGRATION's bucket and enqueue the items that need processing, in batches."""
    settings = setup(config_file, verbose)
    integ = settings.integration(integration)
    options = ReprocessOptions(
        under=under,
        item_type=ItemType(item_type) if item_type else None,
        since=parse_since(since) if since else None,
        force=force,
        dry_run=dry_run,
        batch_size=batch_size,
    )
    enqueue = (lambda items: []) if dry_run else _queue_enqueue(settings)
    storage = open_storage(integ, settings)
    with _reprocess_progress(not as_json) as progress:
        summary = reprocess(storage, integ, options, enqueue, progress)
    if as_json:
        emit_json({"integration": integration, **summary.as_dict()})
    else:
        _print_summary(summary)
    return EXIT_OK


@click.command("check")
@click.argument("integration")
@click.option("--key", default=None, help="A sample item key (default: the first key listed).")
@click.option("--origin", default="*", show_default=True, help="The viewer's browser origin.")
@common_options
def check_command(
    integration: str,
    key: str | None,
    origin: str,
    config_file: str | None,
    as_json: bool,
    verbose: bool,
) -> int:
    """Try read, write, list, sign and CORS on INTEGRATION for real; name the fix for each."""
    settings = setup(config_file, verbose)
    lines = run_checks(settings.integration(integration), settings, key=key, origin=origin)
    if as_json:
        for line in lines:
            emit_json({"integration": integration, **line.as_dict()})
    else:
        table = Table()
        for column in ("capability", "outcome", "detail", "fix"):
            table.add_column(column, overflow="fold")
        styles = {Outcome.OK: "green", Outcome.FAILED: "red", Outcome.SKIPPED: "yellow"}
        for line in lines:
            outcome = f"[{styles[line.outcome]}]{line.outcome.value}[/]"
            table.add_row(line.capability, outcome, line.detail, line.fix)
        stderr.print(table)
    return EXIT_OK if all_ok(lines) else EXIT_ITEMS_FAILED


@click.command("sign")
@click.argument("integration")
@click.argument("key")
@click.option(
    "--expires",
    type=click.IntRange(1, MAX_SIGNED_URL_SECONDS),
    default=3600,
    show_default=True,
    help="Lifetime in seconds, at most 4 hours (14400).",
)
@common_options
def sign_command(
    integration: str,
    key: str,
    expires: int,
    config_file: str | None,
    as_json: bool,
    verbose: bool,
) -> int:
    """Print a URL that GETs KEY without credentials until it expires."""
    from worker.storage.signing import SignedUrlCache

    settings = setup(config_file, verbose)
    storage = open_storage(settings.integration(integration), settings)
    cache = SignedUrlCache(storage, settings.worker.signed_url_min_remaining_seconds)
    url = cache.get(key, expires)
    if as_json:
        emit_json({"integration": integration, "key": key, "url": url, "expires_in": expires})
    else:
        click.echo(url)
    return EXIT_OK


@click.command("policy")
@click.argument("integration")
@click.option(
    "--principal",
    default=None,
    help="The ARN (S3), identity (Azure) or service account e-mail (GCS) of the workers.",
)
@click.option("--origin", default="*", show_default=True, help="The viewer's browser origin.")
@click.option(
    "--items",
    "item_folders",
    multiple=True,
    help="Partial access: a folder holding items (repeat); default: the whole bucket.",
)
@click.option("--mirax", is_flag=True, help="MIRAX or DICOM slides are expected: allow listing.")
@common_options
def policy_command(
    integration: str,
    principal: str | None,
    origin: str,
    item_folders: tuple[str, ...],
    mirax: bool,
    config_file: str | None,
    as_json: bool,
    verbose: bool,
) -> int:
    """Print the bucket policy / roles and CORS rules INTEGRATION needs."""
    settings = setup(config_file, verbose)
    request = PolicyRequest(
        integration=settings.integration(integration),
        principal=principal,
        origin=origin,
        source_prefixes=item_folders,
        mirax=mirax,
    )
    result = build_setup(request)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(render_text(result), nl=False)
    return EXIT_OK
