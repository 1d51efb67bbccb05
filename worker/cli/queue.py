"""`mediaworker enqueue` and `mediaworker worker`: the two ends of the queue."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click
from celery.utils.log import mlevel

from worker.celery_app import QUEUES, app, is_embedded, prefetch_multiplier, queue_name
from worker.cli.common import common_options, emit_json, progress_bar, report, setup, stderr
from worker.cli.process import TYPE_CHOICE
from worker.cli.report import report_option, write_run_report
from worker.errors import ConfigError, InvalidItem, Reason
from worker.items import Item, ItemType
from worker.observability import quiet_task_trace
from worker.payloads import ItemResult
from worker.queue import Enqueued, producer_app, send_items
from worker.rabbitmq import consumer_timeout_problem


@click.command("enqueue")
@click.argument("integration", required=False)
@click.argument("keys", nargs=-1)
@click.option(
    "--from-file",
    "from_file",
    type=click.File("r"),
    default=None,
    help="Items as JSON lines (SPEC 3); `integration` may be left out when INTEGRATION is given.",
)
@click.option("--type", "item_type", type=TYPE_CHOICE, default="auto", show_default=True)
@click.option("--fps", type=click.FloatRange(min=0), default=0, help="0 = native frame rate.")
@click.option("--slot", default="0", show_default=True)
@click.option("--wait", is_flag=True, help="Wait for the results and report them like `process`.")
@click.option("--timeout", type=float, default=3600, show_default=True, help="With --wait.")
@report_option
@common_options
def enqueue_command(
    integration: str | None,
    keys: tuple[str, ...],
    from_file: IO[str] | None,
    item_type: str,
    fps: float,
    slot: str,
    wait: bool,
    timeout: float,
    report_path: Path | None,
    config_file: str | None,
    as_json: bool,
    verbose: bool,
) -> int:
    """Send KEYs of INTEGRATION (or the items of --from-file) to the queue of their type."""
    if not keys and from_file is None:
        raise click.UsageError("give INTEGRATION and KEYs, or --from-file items.jsonl")
    if keys and not integration:
        raise click.UsageError("KEYs need the INTEGRATION they belong to")
    if report_path and not wait:
        raise click.UsageError("--report needs --wait: the page shows the results")
    settings = setup(config_file, verbose)
    items = [
        Item(integration=str(integration), key=k, type=ItemType(item_type), fps=fps, slot=slot)
        for k in keys
    ]
    if from_file is not None:
        items.extend(_read_items(from_file, integration))
    started = datetime.now(UTC)
    sent = send_items(items, settings)
    if not wait:
        for entry in sent:
            _report_sent(entry, as_json)
        return 0
    results = _wait(sent, settings, timeout, as_json)
    write_run_report(report_path, results, settings, "enqueue --wait", started)
    return report(results, as_json)


def _read_items(stream: IO[str], integration: str | None) -> Iterator[Item]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if integration and "integration" not in data:
                data["integration"] = integration
            yield Item.model_validate(data)
        except (ValueError, InvalidItem) as exc:
            name = getattr(stream, "name", "items file")
            raise ConfigError(f"{name} line {number}: not a valid item: {exc}") from None


def _report_sent(entry: Enqueued, as_json: bool) -> None:
    line = {
        "task_id": entry.task_id,
        "queue": entry.queue,
        "task": entry.task_name,
        **entry.item.model_dump(mode="json"),
    }
    if as_json:
        emit_json(line)
    else:
        stderr.print(f"{entry.task_id}  {entry.queue:7} {entry.item.key}")


def _wait(sent: list[Enqueued], settings: Any, timeout: float, as_json: bool) -> list[ItemResult]:
    producer = producer_app(settings)
    results = []
    with progress_bar(len(sent), "waiting", enabled=not as_json) as advance:
        for entry in sent:
            handle = entry.result or producer.AsyncResult(entry.task_id)
            result = result_of(handle, entry.item, timeout)
            results.append(result)
            if as_json:
                emit_json({"task_id": entry.task_id, **result.model_dump(mode="json")})
            advance()
    return results


def result_of(async_result: Any, item: Item, timeout: float) -> ItemResult:
    """The SPEC 7 result of a task; a task that failed outside the pipeline (its hard time
    limit, a malformed message) or did not finish in time becomes a `failed` result."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    try:
        value = async_result.get(timeout=timeout, interval=0.2, propagate=False)
    except CeleryTimeout:
        return ItemResult.failure(
            item,
            Reason.TIMEOUT,
            f"no result within {timeout:.0f} s (task {async_result.id} is queued or running;"
            " is a worker consuming its queue?)",
        )
    if async_result.successful() and isinstance(value, dict):
        return ItemResult.model_validate(value)
    reason = Reason.TIMEOUT if type(value).__name__ == "TimeLimitExceeded" else None
    return ItemResult.failure(
        item,
        reason or Reason.INTERNAL_ERROR,
        f"{item.key}: task {async_result.id} failed: {value!r}",
    )


@click.command("worker")
@click.option(
    "--queues",
    default=",".join(QUEUES),
    show_default=True,
    help="Comma-separated queues to consume.",
)
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Default: CPUs.")
@click.option("--hostname", "-n", default=None, help="Node name (default: unique per process).")
@click.option("--loglevel", default="INFO", show_default=True)
@common_options
def worker_command(
    queues: str,
    concurrency: int | None,
    hostname: str | None,
    loglevel: str,
    config_file: str | None,
    as_json: bool,
    verbose: bool,
) -> int:
    """Run a Celery worker on the queues (prefork pool, late acks, prefetch of one)."""
    settings = setup(config_file, verbose=True, json_logs=True)
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(wanted) - set(QUEUES))
    if unknown or not wanted:
        raise click.BadParameter(
            f"unknown queue(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(QUEUES)}",
            param_hint="--queues",
        )
    problem = consumer_timeout_problem(settings, wanted)
    if problem:
        raise ConfigError(problem)
    app.use_settings(settings)
    quiet_task_trace(mlevel(loglevel))
    argv = [
        "worker",
        "--pool=prefork",
        f"--queues={','.join(queue_name(settings, q) for q in wanted)}",
        f"--loglevel={loglevel}",
        f"--hostname={hostname or f'mediaworker-{os.getpid()}@%h'}",
        f"--prefetch-multiplier={prefetch_multiplier(settings, wanted)}",
    ]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    if is_embedded(settings):
        argv += ["--without-gossip", "--without-mingle"]
    code = app.worker_main(argv)
    return int(code or 0)
