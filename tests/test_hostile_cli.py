"""The trust boundary at the command line and the queue: hostile ids, keys and settings are refused
before any request, with one line and exit 2 (`invalid_item` through the queue); our own faults
are `internal_error` with an id the log shares; control characters never forge a log line;
`policy` never prints a policy open to everyone."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ops_support import run_cli
from PIL import Image

from tasks.items import process_image
from worker.config import settings_from_dict
from worker.errors import ConfigError

AWS = {"provider": "aws", "bucket": "acme", "region": "us-east-1"}


def _config(path: Path, table: dict, extra: str = "") -> Path:
    lines = ["[integrations.t]", *[f"{k} = {json.dumps(v)}" for k, v in table.items()]]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@pytest.fixture()
def bucket(tmp_path: Path) -> Path:
    root = tmp_path / "bucket"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (64, 48), (200, 10, 10)).save(root / "images" / "a.jpg")
    return root


@pytest.mark.parametrize(
    ("field", "table", "rule"),
    [
        ("endpoint_url", {"endpoint_url": "file:///etc/passwd"}, "http:// or https://"),
        ("endpoint_url", {"endpoint_url": "http://169.254.169.254/"}, "metadata"),
        ("endpoint_url", {"endpoint_url": "http://[fd00:ec2::254]/"}, "metadata"),
        ("endpoint_url", {"endpoint_url": "http://[::ffff:169.254.169.254]/"}, "metadata"),
        ("region", {"provider": "wasabi", "region": "eu-central-2.evil.example/x"}, "shaped"),
    ],
)
def test_unsafe_settings_are_refused_at_load(
    tmp_path: Path, capsys, field: str, table: dict, rule: str
) -> None:
    config = _config(tmp_path / "c.toml", {"provider": "s3", "bucket": "acme", **table})
    code, _, err = run_cli(capsys, "sign", "t", "a.jpg", "--config", str(config))
    assert code == 2 and field in err and rule in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "limits", [{"max_image_pixels": -1}, {"item_timeout_seconds": 0}, {"max_item_memory_mb": -5}]
)
def test_limits_must_be_positive(limits: dict) -> None:
    with pytest.raises(ConfigError, match="greater than 0"):
        settings_from_dict({"limits": limits})


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--item-id", "a/../../victim", "images/a.jpg"], "item_id"),
        (["--item-id", "../x", "images/a.jpg"], "item_id"),
        (["--slot", "..", "images/a.jpg"], "slot"),
        (["images/a\n2026-01-01 INFO forged.jpg"], "control characters"),
        (["k" * 5000], "1024 bytes"),
    ],
)
def test_refused_ids_and_keys_exit_2_before_any_write(
    bucket: Path, tmp_path: Path, capsys, argv: list[str], named: str
) -> None:
    config = _config(tmp_path / "c.toml", {"provider": "local", "root": str(bucket)})
    code, out, err = run_cli(capsys, "process", "t", *argv, "--config", str(config))
    assert code == 2 and named in err and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (bucket / "data").exists()


@pytest.mark.parametrize(
    "raw",
    [
        {"item_id": "../x"},
        {"item_id": "a/../../victim"},
        {"slot": "0/../1"},
        {"key": "a\nb.jpg"},
        {"key": "k" * 5000},
    ],
)
def test_the_queue_answers_invalid_item(raw: dict) -> None:
    result = process_image.run({"integration": "t", "key": "images/a.jpg", **raw})
    assert result["status"] == "failed" and result["reason"] == "invalid_item"
    assert "invalid item" in result["message"]


def test_internal_error_carries_the_id_of_its_logged_traceback(
    bucket: Path, tmp_path: Path, capsys
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the work dir should be")
    extra = f"[worker]\nwork_dir = {json.dumps(str(blocked))}\n"
    config = _config(tmp_path / "c.toml", {"provider": "local", "root": str(bucket)}, extra)
    code, out, err = run_cli(capsys, "process", "t", "images/a.jpg", "--json", "--config",
                             str(config))  # fmt: skip
    result = json.loads(out)
    assert code == 1 and result["reason"] == "internal_error"
    error_id = re.search(r"internal error ([0-9a-f]{12})", result["message"])[1]  # type: ignore[index]
    assert str(tmp_path) not in result["message"]
    logged = err[err.index(f"internal error {error_id}") :]
    assert "Traceback" in logged


def test_control_characters_of_keys_are_escaped_in_plain_logs(
    bucket: Path, tmp_path: Path, capsys
) -> None:
    (bucket / "images" / "evil\n2026-01-01 00:00:00 ERROR forged line.jpg").write_bytes(b"x")
    config = _config(tmp_path / "c.toml", {"provider": "local", "root": str(bucket)})
    code, out, err = run_cli(capsys, "reprocess", "t", "--dry-run", "--json", "--config",
                             str(config))  # fmt: skip
    assert code == 0 and json.loads(out)["enqueued"] == 1  # only images/a.jpg
    assert "\\n2026-01-01 00:00:00 ERROR forged" in err
    assert not any(line.startswith("2026-01-01 00:00:00 ERROR") for line in err.splitlines())


def test_connection_errors_are_one_line(tmp_path: Path, capsys) -> None:
    config = _config(
        tmp_path / "c.toml",
        {"provider": "s3", "bucket": "acme", "endpoint_url": "http://127.0.0.1:9"},
    )
    code, _, err = run_cli(capsys, "reprocess", "t", "--dry-run", "--config", str(config))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_policy_refuses_open_principals_and_escaping_folders(tmp_path: Path, capsys) -> None:
    config = _config(tmp_path / "c.toml", AWS)
    for argv, named in (
        (["--principal", "*"], "--principal"),
        (["--principal", "arn:aws:iam::*"], "--principal"),
        (["--items", "scans/../../other"], "--items"),
    ):
        code, out, err = run_cli(capsys, "policy", "t", *argv, "--config", str(config))
        assert code == 2 and named in err and out == ""


def test_cors_allows_put_only_from_the_named_origin(tmp_path: Path, capsys) -> None:
    config = _config(tmp_path / "c.toml", AWS)
    _, out, _ = run_cli(capsys, "policy", "t", "--json", "--config", str(config))
    [anyone] = json.loads(out)["cors"]["CORSRules"]
    assert anyone["AllowedOrigins"] == ["*"] and "PUT" not in anyone["AllowedMethods"]
    origin = "https://viewer.example"
    _, out, _ = run_cli(
        capsys, "policy", "t", "--origin", origin, "--json", "--config", str(config)
    )
    [named] = json.loads(out)["cors"]["CORSRules"]
    assert named["AllowedOrigins"] == [origin] and "PUT" in named["AllowedMethods"]
