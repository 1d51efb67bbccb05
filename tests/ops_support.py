"""Helpers shared by the operator tests (tests/test_ops_*.py): config files for the CLI, running
the CLI in-process, bulk uploads to a moto bucket, and commit markers written directly."""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest

from worker import PIPELINE_VERSION
from worker.cli import cli
from worker.cli.common import run_guarded
from worker.config import Integration
from worker.items import default_item_id
from worker.layout import Rel, SlotLayout, source_folder, source_name
from worker.payloads import ImagePayload, Metadata, SourceInfo


def write_config(path: Path, *integrations: Integration) -> Path:
    """A TOML integrations file naming these integrations, as an operator would write it."""
    lines: list[str] = []
    for integ in integrations:
        lines.append(f"[integrations.{integ.name}]")
        table: dict[str, Any] = {"provider": integ.provider, "readonly": integ.readonly}
        for name in ("bucket", "region", "endpoint_url", "prefix"):
            value = getattr(integ, name)
            if value:
                table[name] = value
        if integ.root is not None:
            table["root"] = str(integ.root)
        for name, value in table.items():
            lines.append(f"{name} = {json.dumps(value)}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `mediaworker ARGV...` in this process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = run_guarded(lambda: cli.main(args=list(argv), prog_name="mediaworker",
                                        standalone_mode=False))  # fmt: skip
    out, err = capsys.readouterr()
    return int(code), out, err


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def put_many(endpoint: str, bucket: str, objects: Iterable[tuple[str, bytes]]) -> None:
    """Upload many small objects quickly (a pool of 16 clients' worth of connections)."""
    client = s3_client(endpoint)
    with ThreadPoolExecutor(16) as pool:
        for future in [
            pool.submit(client.put_object, Bucket=bucket, Key=k, Body=b) for k, b in objects
        ]:
            future.result()


def marker_for(
    prefix: str, key: str, etag: str | None, version: str = PIPELINE_VERSION
) -> Metadata:
    """A commit marker as the pipeline writes it, for a source already processed."""
    layout = SlotLayout(prefix, default_item_id(key))
    payload = ImagePayload(
        name=source_name(key),
        path=source_folder(key),
        storage_key=key,
        storage_thumbnail_key=layout.key(Rel.THUMBNAIL),
        width=1,
        height=1,
        size_bytes=1,
    )
    return Metadata(
        item_id=layout.item_id,
        slot="0",
        pipeline_version=version,
        source=SourceInfo(key=key, size=1, etag=etag),
        payload=payload,
        assets=[layout.key(Rel.THUMBNAIL)],
        timings={},
    )
