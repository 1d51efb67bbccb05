"""Observability: the metrics endpoint counts a real batch; JSON log lines carry the item and
stage; and no log line of a run with signed URLs holds a signature or a credential."""

from __future__ import annotations

import io
import json
import logging
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fixtures.slides import generate_slides
from worker.assets import iter_keys
from worker.items import Item
from worker.observability import (
    observe_queue_wait,
    scrub,
    setup_logging,
    start_metrics_server,
)
from worker.payloads import Status
from worker.pipeline import process_item
from worker.storage import open_writable
from worker.storage.signing import SignedUrlCache

ACCESS_KEY = "AKIAMWOPSTEST0000001"
SECRET_KEY = "mwOpsSecretKeyValue/0123456789abcdefXYZ"


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_slides(tmp_path_factory.mktemp("slides"))


def _put_slide(storage, mrxs: Path, key: str) -> None:
    storage.write(key, mrxs)
    for part in sorted(mrxs.with_suffix("").iterdir()):
        storage.write(f"{key.removesuffix('.mrxs')}/{part.name}", part)


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _delta(before, after, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_endpoint_counts_a_batch(make_integration, slides: dict[str, Path]) -> None:
    settings, integ = make_integration("local")
    storage = open_writable(integ, settings)
    for i in range(2):
        _put_slide(storage, slides["mirax"], f"wsi/ok{i}.mrxs")
    _put_slide(storage, slides["broken_no_index"], "wsi/broken.mrxs")
    server, _ = start_metrics_server(0, addr="127.0.0.1")
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        before = _scrape(url)
        keys = ["wsi/ok0.mrxs", "wsi/ok1.mrxs", "wsi/broken.mrxs", "wsi/absent.mrxs"]
        results = [
            process_item(Item(integration=integ.name, key=k, type="slide"), settings) for k in keys
        ]
        observe_queue_wait("slides", enqueued_at=100.0, now=103.0)
        after = _scrape(url)
    finally:
        server.shutdown()
    assert [r.status for r in results] == [Status.OK, Status.OK, Status.FAILED, Status.FAILED]
    assert _delta(before, after, "mediaworker_items_total", type="slide", outcome="ok") == 2
    assert _delta(before, after, "mediaworker_items_total", type="slide", outcome="failed") == 2
    assert _delta(before, after, "mediaworker_item_failures_total", reason="mirax_incomplete") == 1
    assert _delta(before, after, "mediaworker_item_failures_total", reason="not_found") == 1
    # Every stage that started is timed, a failing one too: the missing key stops in `plan`,
    # the incomplete slide in `process` (where the MIRAX check runs).
    assert _delta(before, after, "mediaworker_stage_seconds_count", stage="plan") == 4
    assert _delta(before, after, "mediaworker_stage_seconds_count", stage="process") == 3
    source_bytes = slides["mirax"].stat().st_size
    assert _delta(before, after, "mediaworker_bytes_read_total", type="slide") == 2 * source_bytes
    written = sum(
        p.stat().st_size
        for p in (integ.root / integ.prefix).rglob("*")  # type: ignore[operator]
        if p.is_file() and p.name != "metadata.json"
    )
    assert _delta(before, after, "mediaworker_bytes_written_total", type="slide") == written
    assert _delta(before, after, "mediaworker_queue_wait_seconds_sum", queue="slides") == 3.0


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Route the root logger through `setup_logging` into a buffer, DEBUG and up."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    setup_logging(json_lines=True, level=logging.DEBUG, stream=buffer)
    try:
        yield buffer
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


SIGNATURE_PATTERNS = [
    re.compile(r"X-Amz-Signature=(?!<redacted>)", re.I),
    re.compile(r"X-Amz-Credential=(?!<redacted>)", re.I),
    re.compile(r"[?&]sig=(?!<redacted>)", re.I),
    re.compile(r"AccountKey=(?!<redacted>)", re.I),
]


def test_no_signature_or_key_in_any_log_line(
    make_integration,
    azurite,
    slides: dict[str, Path],
    json_log: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    setup_logging(json_lines=True, level=logging.DEBUG, stream=json_log)  # learns the secret
    log = logging.getLogger("tests.ops")
    urls: list[str] = []
    for kind in ("s3", "azure"):
        settings, integ = make_integration(kind)
        storage = open_writable(integ, settings)
        base = f"{integ.azure_container}/" if kind == "azure" else ""
        key = f"{base}wsi/a.mrxs"
        _put_slide(storage, slides["mirax"], key)
        result = process_item(Item(integration=integ.name, key=key, type="slide"), settings)
        assert result.status == Status.OK, result.message
        cache = SignedUrlCache(storage, 60)
        for asset in list(iter_keys(result.assets))[:3]:
            url = cache.get(asset, 600)
            urls.append(url)
            # Careless callers log URLs whole, in messages, arguments and exceptions.
            log.info("signed %s for the viewer", url)
            log.warning("fetch failed", extra={"stage": "sign"})
            try:
                raise RuntimeError(f"GET {url} -> 403")
            except RuntimeError:
                log.exception("request failed")
    log.info("connection: AccountName=devstoreaccount1;AccountKey=%s;", azurite.key)
    log.info("credentials %r", {"aws_secret_access_key": SECRET_KEY})
    assert any("X-Amz-Signature=" in u for u in urls) and any("sig=" in u for u in urls)

    lines = json_log.getvalue().splitlines()
    assert len(lines) > 20
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for line in lines:
        for pattern in SIGNATURE_PATTERNS:
            assert not pattern.search(line), line
        for secret in (ACCESS_KEY, SECRET_KEY, azurite.key):
            assert secret not in line
        for url in urls:
            assert url.split("?")[1] not in line
    stages = [r for r in records if r.get("stage") in ("plan", "fetch", "process")]
    assert len(stages) >= 6
    for record in stages:
        assert record["item_id"] and record["integration"] and record["key"].endswith("a.mrxs")
        assert record["duration_ms"] >= 0
    finished = [r for r in records if r["message"].startswith("item finished")]
    assert [r["status"] for r in finished] == ["ok", "ok"]


def test_scrub_cases() -> None:
    s3 = (
        "https://b.s3.amazonaws.com/k.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
        "AKIAABCDEFGHIJKLMNOP%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=abc123"
    )
    assert scrub(f"url {s3} end") == "url https://b.s3.amazonaws.com/k.jpg?<redacted> end"
    sas = "https://acct.blob.core.windows.net/c/k.jpg?se=2024&sp=r&sv=2023&sr=b&sig=AbC%2Fd%3D"
    assert "AbC" not in scrub(sas) and "k.jpg" in scrub(sas)
    assert "AKIAABCDEFGHIJKLMNOP" not in scrub("key AKIAABCDEFGHIJKLMNOP used")
    header = "Authorization: AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=ff00"
    assert "ff00" not in scrub(header)
    assert scrub("plain text stays") == "plain text stays"


def test_scrub_leaves_storage_keys_alone() -> None:
    assert scrub("wrote data/1234/files/0/thumbnail.jpg") == (
        "wrote data/1234/files/0/thumbnail.jpg"
    )
