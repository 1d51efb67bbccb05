"""`mediaworker report` and the `--report FILE.html` option of the commands that run items."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from worker.cli.common import common_options, setup, stderr
from worker.config import Integration, Settings
from worker.errors import ConfigError
from worker.payloads import ItemResult
from worker.report import RunInfo, load_results, write_report
from worker.storage.registry import LOCAL_FOLDER

F = TypeVar("F", bound=Callable[..., Any])


def report_option(func: F) -> F:
    return click.option(
        "--report",
        "report_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Also write an HTML report of the run (thumbnails, playback, failures) here.",
    )(func)


def write_run_report(
    path: Path | None,
    results: list[ItemResult],
    settings: Settings,
    command: str,
    started: datetime,
) -> None:
    """The page a command's `--report` asks for, written once its items are done."""
    if path is None:
        return
    run = RunInfo(command=command, started=started, finished=datetime.now(UTC))
    write_report(results, settings, path, run)
    stderr.print(f"report: {path}")


@click.command("report")
@click.argument("results_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The page to write (default: RESULTS with .html).",
)
@click.option(
    "--files",
    default=None,
    help="Where the items' files are, when not in the integrations the results name: a local"
    " folder (a preextract --out) or an integration.",
)
@click.option(
    "--expires",
    type=click.IntRange(min=60, max=4 * 3600),
    default=4 * 3600,
    show_default=True,
    help="Seconds the signed URLs of a bucket stay valid (at most 4 hours).",
)
@common_options
def report_command(
    results_file: Path,
    out: Path | None,
    files: str | None,
    expires: int,
    config_file: str | None,
    as_json: bool,
    verbose: bool,
) -> int:
    """Write one self-contained HTML page from the --json result lines of a run: counts,
    a contact sheet, failures with their fix, and a viewer per item."""
    settings = setup(config_file, verbose)
    results = load_results(results_file)
    finished = datetime.fromtimestamp(results_file.stat().st_mtime, UTC)
    run = RunInfo(command=f"results of {results_file.name}", finished=finished)
    page = out or results_file.with_suffix(".html")
    unknown = sorted({r.integration for r in results} - set(settings.integrations))
    if files is None and unknown:
        raise ConfigError(
            f"{results_file.name} names integration {unknown[0]!r}, which the config does not"
            " define: say where its files are with --files FOLDER (a preextract --out) or"
            " --files INTEGRATION"
        )
    write_report(results, settings, page, run, _files(files, settings), expires)
    stderr.print(f"report: {page} ({len(results)} items)")
    return 0


def _files(files: str | None, settings: Settings) -> Integration | None:
    if files is None:
        return None
    if files in settings.integrations and "/" not in files:
        return settings.integration(files)
    if not Path(files).is_dir():
        raise click.BadParameter(
            f"{files} is neither an integration nor a folder", param_hint="--files"
        )
    return Integration(name="files", provider=LOCAL_FOLDER, root=Path(files).resolve())
