"""What every command shares: options, settings loading, result output and exit codes."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from worker.config import Settings, VideoProfileName, load_settings
from worker.errors import ConfigError, MediaWorkerError
from worker.observability import scrub, setup_logging
from worker.payloads import ItemResult, Status
from worker.scratch import exit_on_sigterm, remove_stale

EXIT_OK, EXIT_ITEMS_FAILED, EXIT_CONFIG = 0, 1, 2

stderr = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def common_options(func: F) -> F:
    func = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        default=None,
        help="Integrations file (default: $MEDIAWORKER_CONFIG, else ./mediaworker.toml).",
    )(func)
    func = click.option(
        "--json", "as_json", is_flag=True, help="One JSON object per item on stdout."
    )(func)
    return click.option("-v", "--verbose", is_flag=True, help="Log progress details.")(func)


def profile_option(func: F) -> F:
    """`--profile`: the video profile for this run, over the settings' `[video] profile`."""
    return click.option(
        "--profile",
        type=click.Choice([p.value for p in VideoProfileName]),
        default=None,
        help="Video encoding profile (default: [video] profile, else standard).",
    )(func)


def setup(
    config_file: str | None, verbose: bool = False, json_logs: bool | None = None
) -> Settings:
    """Logging first (scrubbed of secrets; JSON lines when `$MEDIAWORKER_LOG_JSON=1` or for
    long-running commands), then the settings."""
    if json_logs is None:
        json_logs = os.environ.get("MEDIAWORKER_LOG_JSON", "") in ("1", "true", "yes")
    _VERBOSE[0] = verbose
    setup_logging(json_lines=json_logs, level=logging.INFO if verbose else logging.WARNING)
    settings = load_settings(config_file)
    exit_on_sigterm()
    remove_stale(settings.worker.work_dir)
    return settings


_VERBOSE = [False]
"""Whether `-v` was given: only then does an error escaping a command show its traceback."""


def run_guarded(run: Callable[[], Any]) -> int:
    """Run a click command without standalone mode, mapping errors to SPEC 7's exit codes."""
    try:
        result = run()
    except ConfigError as exc:
        click.echo(f"mediaworker: error: {exc}", err=True)
        return EXIT_CONFIG
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_CONFIG
    except click.Abort:
        click.echo("mediaworker: aborted", err=True)
        return EXIT_ITEMS_FAILED
    except Exception as exc:
        # Configuration, credentials, connections, an id refused before any request: one line.
        click.echo(f"mediaworker: error: {_one_line(exc)}", err=True)
        if _VERBOSE[0]:
            traceback.print_exc()
        return EXIT_CONFIG
    return result if isinstance(result, int) else EXIT_OK


def _one_line(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, MediaWorkerError) else f"{type(exc).__name__}: {exc}"
    text = scrub(" ".join(text.split()))
    return text if len(text) <= 400 else text[:400] + "..."


def exit_code(results: Iterable[ItemResult]) -> int:
    return EXIT_OK if all(r.status == Status.OK for r in results) else EXIT_ITEMS_FAILED


def emit_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextmanager
def progress_bar(total: int, label: str, enabled: bool = True) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr for batches; `advance()` after each item."""
    if not enabled or total <= 1:
        yield lambda: None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


def print_results(results: list[ItemResult]) -> None:
    table = Table(title=None, show_lines=False)
    for column in ("key", "type", "status", "reason", "message"):
        table.add_column(column, overflow="fold")
    for r in results:
        style = "green" if r.status == Status.OK else "red"
        reason = r.reason.value if r.reason else ""
        table.add_row(r.key, r.type, f"[{style}]{r.status.value}[/]", reason, r.message)
    stderr.print(table)
    ok = sum(r.status == Status.OK for r in results)
    stderr.print(f"{ok} of {len(results)} items ok")


def report(results: list[ItemResult], as_json: bool) -> int:
    if not as_json:
        print_results(results)
    return exit_code(results)


def result_json(result: ItemResult) -> dict[str, Any]:
    return result.model_dump(mode="json")
