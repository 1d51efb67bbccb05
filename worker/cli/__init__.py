"""The `mediaworker` command (SPEC section 7).

Every command takes `--config FILE` and `--json`. With `--json`, stdout carries one JSON object per
item; otherwise tables and progress bars go to stderr. Exit 0: all ok; 1: some item failed or is
missing assets; 2: usage or configuration error (one line, no traceback).
"""

from __future__ import annotations

import sys

import click

from worker.cli.common import run_guarded
from worker.cli.operate import check_command, policy_command, reprocess_command, sign_command
from worker.cli.process import process_command
from worker.cli.queue import enqueue_command, worker_command
from worker.cli.readonly import preextract_command, verify_command
from worker.cli.report import report_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mediaworker")
def cli() -> None:
    """Turn images, videos and slides in your buckets into browser-ready renditions."""


for _command in (
    process_command,
    verify_command,
    preextract_command,
    reprocess_command,
    check_command,
    sign_command,
    policy_command,
    enqueue_command,
    worker_command,
    report_command,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    sys.exit(
        run_guarded(lambda: cli.main(args=argv, prog_name="mediaworker", standalone_mode=False))
    )
