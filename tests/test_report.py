"""The report without a browser: its data for a bucket (signed URLs that work, and until when),
`mediaworker report` from a results file, and the fix text every reason code needs."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from browser import page_data
from ops_support import run_cli, write_config
from PIL import Image

from fixtures.images import generate_images
from worker.errors import Reason
from worker.reasons import REASONS, markdown_table
from worker.storage import open_writable

ROOT = Path(__file__).resolve().parent.parent
SPEC_CODES = {
    "not_found", "permission_denied", "unsupported_format", "corrupt_media", "too_large",
    "mirax_incomplete", "slide_incomplete", "timeout", "storage_unavailable", "poison",
    "invalid_item", "internal_error",
}  # fmt: skip


def test_every_reason_code_has_a_fix_and_the_docs_list_them() -> None:
    assert {r.value for r in Reason} <= set(REASONS)
    assert set(REASONS) <= SPEC_CODES | {"missing_assets"}
    assert all(h.meaning and h.fix for h in REASONS.values())
    assert markdown_table() in (ROOT / "docs" / "reasons.md").read_text()


def test_report_of_a_bucket_uses_signed_urls_that_work(make_integration, tmp_path, capsys) -> None:
    settings, integration = make_integration("s3")
    storage = open_writable(integration, settings)
    images = generate_images(tmp_path / "images")
    storage.write("photos/a.jpg", images["jpeg_exif_orientation_6"])
    storage.write("photos/bad.png", images["corrupt_png"])
    config = write_config(tmp_path / "mediaworker.toml", integration)
    page = tmp_path / "run.html"

    before = datetime.now(UTC)
    code, out, err = run_cli(capsys, "process", integration.name, "photos/a.jpg",
                             "photos/bad.png", "--json", "--config", str(config),
                             "--report", str(page))  # fmt: skip

    assert code == 1, err
    data = page_data(page)
    until = datetime.fromisoformat(data["signed_until"])
    assert before + timedelta(hours=4) - timedelta(seconds=5) <= until
    assert until <= datetime.now(UTC) + timedelta(hours=4)
    [ok] = [i for i in data["items"] if i["status"] == "ok"]
    thumb = requests.get(ok["thumb"], timeout=10)
    assert thumb.status_code == 200
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 356
    [bad] = [i for i in data["items"] if i["status"] == "failed"]
    assert bad["reason"] == "corrupt_media" and bad["thumb"] is None
    assert data["reasons"]["corrupt_media"]["fix"] == REASONS["corrupt_media"].fix
    assert "Signature=" not in err

    results = tmp_path / "results.jsonl"
    results.write_text(out)
    code, _, err = run_cli(capsys, "report", str(results), "--expires", "600",
                           "--config", str(config))  # fmt: skip
    assert code == 0, err
    again = page_data(results.with_suffix(".html"))
    assert datetime.fromisoformat(again["signed_until"]) <= datetime.now(UTC) + timedelta(
        seconds=600
    )
    assert again["counts"]["status"] == {"ok": 1, "failed": 1}
    assert again["counts"]["reason"] == {"corrupt_media": 1}


def test_report_refuses_a_file_that_holds_no_results(tmp_path, capsys) -> None:
    lines = tmp_path / "sent.jsonl"
    lines.write_text('{"task_id": "1", "queue": "images", "key": "a.jpg"}\n')
    code, _, err = run_cli(capsys, "report", str(lines))
    assert code == 2 and "sent.jsonl:1: not a result line" in err


def test_report_asks_where_the_files_are_when_the_config_does_not_say(tmp_path, capsys) -> None:
    lines = tmp_path / "results.jsonl"
    result = {"item_id": "x", "slot": "0", "integration": "preextract", "key": "a.jpg"}
    result |= {"type": "image", "status": "failed", "reason": "not_found", "message": "gone"}
    lines.write_text(json.dumps(result) + "\n")
    config = tmp_path / "empty.toml"
    config.write_text("")
    code, _, err = run_cli(capsys, "report", str(lines), "--config", str(config))
    assert code == 2 and "--files" in err and "'preextract'" in err
    assert not lines.with_suffix(".html").exists()


def test_enqueue_takes_report_only_with_wait(tmp_path, capsys) -> None:
    code, _, err = run_cli(capsys, "enqueue", "demo", "a.jpg", "--report", str(tmp_path / "r.html"))
    assert code == 2 and "--report needs --wait" in err
    assert not (tmp_path / "r.html").exists()
