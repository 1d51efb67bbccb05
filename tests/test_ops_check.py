"""`mediaworker check` against moto's S3 server and Azurite: every capability is tried for real,
and taking one away (CORS rules, the right key, write access) turns its line into a failure that
names the fix. Wrong S3 keys and missing policy actions are in test_ops_policy.py, which runs
moto with IAM authentication on."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, CorsRule
from ops_support import run_cli, s3_client, write_config

from worker.preflight import Outcome, allowed_methods, run_checks
from worker.storage import open_writable
from worker.storage.base import CorsRule as CorsRuleView

ORIGIN = "https://app.example.com"
SAMPLE = "clips/a.jpg"


def _by_capability(lines) -> dict[str, object]:
    return {line.capability: line for line in lines}


def test_s3_all_capabilities_then_cors_removed(make_integration, moto_endpoint: str) -> None:
    settings, integ = make_integration("s3")
    client = s3_client(moto_endpoint)
    client.put_object(Bucket=integ.bucket, Key=SAMPLE, Body=b"\xff\xd8 jpeg bytes")
    client.put_bucket_cors(
        Bucket=integ.bucket,
        CORSConfiguration={
            "CORSRules": [{"AllowedOrigins": [ORIGIN], "AllowedMethods": ["GET", "HEAD", "PUT"]}]
        },
    )
    lines = _by_capability(run_checks(integ, settings, origin=ORIGIN))
    assert {name: line.outcome for name, line in lines.items()} == {
        "read": Outcome.OK,
        "write": Outcome.OK,
        "list": Outcome.OK,
        "sign": Outcome.OK,
        "cors": Outcome.OK,
    }
    assert SAMPLE in lines["read"].detail
    # The probe object was deleted again: only the sample is left.
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=integ.bucket)["Contents"]]
    assert keys == [SAMPLE]

    # Another origin is not covered by the rule.
    other = _by_capability(run_checks(integ, settings, origin="https://evil.example"))
    assert other["cors"].outcome == Outcome.FAILED
    assert "put-bucket-cors" in other["cors"].fix

    client.delete_bucket_cors(Bucket=integ.bucket)
    cors = _by_capability(run_checks(integ, settings, origin=ORIGIN))["cors"]
    assert cors.outcome == Outcome.FAILED
    assert "no CORS rules" in cors.detail
    fix_json = json.loads(cors.fix.split("--cors-configuration '")[1].rstrip("'"))
    rule = fix_json["CORSRules"][0]
    assert rule["AllowedOrigins"] == [ORIGIN]
    assert {"GET", "PUT"} <= set(rule["AllowedMethods"])


def test_s3_read_only_skips_write_and_needs_only_get(make_integration, moto_endpoint) -> None:
    settings, integ = make_integration("s3", readonly=True)
    client = s3_client(moto_endpoint)
    client.put_object(Bucket=integ.bucket, Key=SAMPLE, Body=b"x" * 10)
    client.put_bucket_cors(
        Bucket=integ.bucket,
        CORSConfiguration={"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]},
    )
    lines = _by_capability(run_checks(integ, settings, key=SAMPLE, origin=ORIGIN))
    assert lines["write"].outcome == Outcome.SKIPPED
    assert "read-only" in lines["write"].detail
    assert lines["cors"].outcome == Outcome.OK
    assert lines["read"].outcome == Outcome.OK
    assert [o["Key"] for o in client.list_objects_v2(Bucket=integ.bucket)["Contents"]] == [SAMPLE]


def test_s3_missing_key_names_the_fix(make_integration) -> None:
    settings, integ = make_integration("s3")
    lines = _by_capability(run_checks(integ, settings, key="nope/missing.jpg"))
    assert lines["read"].outcome == Outcome.FAILED
    assert "does not exist" in lines["read"].detail
    assert "--key" in lines["read"].fix


def _azure_cors(connection_string: str, rules: list[CorsRule]) -> None:
    BlobServiceClient.from_connection_string(connection_string).set_service_properties(cors=rules)


def test_azurite_capabilities_cors_and_wrong_key(
    make_integration, azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, integ = make_integration("azure")
    storage = open_writable(integ, settings)
    sample = f"{integ.azure_container}/{SAMPLE}"
    storage.write(sample, b"azure bytes")
    _azure_cors(azurite.connection_string, [CorsRule([ORIGIN], ["GET", "HEAD", "PUT"])])
    try:
        lines = _by_capability(run_checks(integ, settings, key=sample, origin=ORIGIN))
        assert all(line.outcome == Outcome.OK for line in lines.values()), lines

        _azure_cors(azurite.connection_string, [CorsRule([ORIGIN], ["GET"])])
        cors = _by_capability(run_checks(integ, settings, key=sample, origin=ORIGIN))["cors"]
        assert cors.outcome == Outcome.FAILED
        assert "PUT not allowed" in cors.detail
        assert cors.fix.startswith("az storage cors add") and "PUT" in cors.fix

        _azure_cors(azurite.connection_string, [])
        cors = _by_capability(run_checks(integ, settings, key=sample, origin=ORIGIN))["cors"]
        assert cors.outcome == Outcome.FAILED and "no CORS rules" in cors.detail

        # A wrong account key: every line that talks to the service says so.
        wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="
        monkeypatch.setenv("AZURE_STORAGE_KEY", wrong)
        bad = _by_capability(run_checks(integ, settings, key=sample, origin=ORIGIN))
        assert bad["read"].outcome == Outcome.FAILED
        assert "credentials were rejected" in bad["read"].fix
        assert "AZURE_STORAGE_KEY" in bad["read"].fix
        assert bad["write"].outcome == Outcome.FAILED
    finally:
        _azure_cors(azurite.connection_string, [])


def test_check_command_exit_codes_and_json(
    make_integration, moto_endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, integ = make_integration("s3")
    s3_client(moto_endpoint).put_object(Bucket=integ.bucket, Key=SAMPLE, Body=b"x")
    config = write_config(tmp_path / "mw.toml", integ)
    code, out, _ = run_cli(capsys, "check", integ.name, "--config", str(config), "--json")
    assert code == 1  # no CORS rules yet
    lines = {d["capability"]: d for d in map(json.loads, out.strip().splitlines())}
    assert lines["cors"]["outcome"] == "failed" and lines["read"]["outcome"] == "ok"

    s3_client(moto_endpoint).put_bucket_cors(
        Bucket=integ.bucket,
        CORSConfiguration={
            "CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "PUT"]}]
        },
    )
    code, out, err = run_cli(capsys, "check", integ.name, "--config", str(config))
    assert code == 0 and out == ""
    assert "cors" in err and "failed" not in err


def test_cors_rule_matching() -> None:
    rules = [
        CorsRuleView(("https://*.example.com",), ("GET",)),
        CorsRuleView(("https://app.example.com",), ("PUT",)),
    ]
    assert allowed_methods(rules, "https://app.example.com") == {"GET", "PUT"}
    assert allowed_methods(rules, "https://x.example.com") == {"GET"}
    assert allowed_methods(rules, "https://example.org") == set()


def test_sign_command_caps_lifetime_and_url_fetches(
    make_integration, moto_endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, integ = make_integration("s3")
    s3_client(moto_endpoint).put_object(Bucket=integ.bucket, Key=SAMPLE, Body=b"signed bytes")
    config = write_config(tmp_path / "mw.toml", integ)
    code, _, err = run_cli(capsys, "sign", integ.name, SAMPLE, "--config", str(config),
                           "--expires", str(4 * 3600 + 1))  # fmt: skip
    assert code == 2 and "14400" in err
    code, out, _ = run_cli(capsys, "sign", integ.name, SAMPLE, "--config", str(config),
                           "--expires", "900", "--json")  # fmt: skip
    assert code == 0
    signed = json.loads(out)
    assert "X-Amz-Expires=900" in signed["url"]
    with urllib.request.urlopen(signed["url"], timeout=10) as response:
        assert response.read() == b"signed bytes"
