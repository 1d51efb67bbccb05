"""The integrations file: every rule of SPEC section 2 gives a one-line error naming the
integration, the field and the rule, and the CLI exits 2 without a traceback."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from worker.config import settings_from_dict
from worker.errors import ConfigError
from worker.storage.registry import PROVIDERS
from worker.storage.s3 import wasabi_endpoint


def _one(table: dict[str, object], name: str = "acme"):
    return settings_from_dict({"integrations": {name: table}}).integration(name)


@pytest.mark.parametrize("prefix", ["data", "/data", "data/", "", None])
def test_s3_prefix_is_normalised_to_data(prefix: str | None) -> None:
    table = {"provider": "aws", "bucket": "acme-media", "region": "eu-west-1"}
    if prefix is not None:
        table["prefix"] = prefix
    assert _one(table).prefix == "data"


def test_nested_s3_prefix_keeps_its_folders() -> None:
    assert _one({"provider": "aws", "bucket": "acme", "prefix": "/a/b/"}).prefix == "a/b"


@pytest.mark.parametrize(
    ("bucket", "rule"),
    [
        ("Bad_Bucket", "lowercase letters, digits, dots and hyphens"),
        ("ab", "3 to 63 characters"),
        ("-acme", "begin and end"),
        ("acme..media", "adjacent dots"),
        ("192.168.1.20", "IP addresses"),
        ("xn--acme", "xn--"),
    ],
)
def test_bucket_names_no_s3_service_accepts_are_refused(bucket: str, rule: str) -> None:
    with pytest.raises(ConfigError) as err:
        _one({"provider": "wasabi", "bucket": bucket, "region": "eu-central-2"})
    message = str(err.value)
    assert "'acme'" in message and "bucket" in message and rule in message
    assert "\n" not in message


def test_dotted_bucket_is_addressed_path_style_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="worker.config"):
        integ = _one({"provider": "wasabi", "bucket": "acme.media.eu", "region": "eu-central-2"})
    assert integ.path_style is True
    assert sum("path-style" in r.getMessage() for r in caplog.records) == 1
    assert _one({"provider": "aws", "bucket": "acme-media"}).path_style is False


@pytest.mark.parametrize(
    ("region", "endpoint"),
    [
        ("eu-central-2", "https://s3.eu-central-2.wasabisys.com"),
        ("ap-northeast-1", "https://s3.ap-northeast-1.wasabisys.com"),
        ("us-east-1", "https://s3.wasabisys.com"),
    ],
)
def test_wasabi_endpoint_is_derived_from_region(region: str, endpoint: str) -> None:
    integ = _one({"provider": "wasabi", "bucket": "acme-media", "region": region})
    assert integ.endpoint_url == endpoint == wasabi_endpoint(region)


def test_explicit_endpoint_wins_over_derived() -> None:
    integ = _one(
        {"provider": "wasabi", "bucket": "acme", "region": "x", "endpoint_url": "http://h:1"}
    )
    assert integ.endpoint_url == "http://h:1"


@pytest.mark.parametrize(
    ("prefix", "container"),
    [("media/folder", "media"), ("media", "media"), ("", "data"), ("media/a/b", "media")],
)
def test_azure_prefix_forms(prefix: str, container: str) -> None:
    integ = _one({"provider": "azure", "bucket": "acmestore", "prefix": prefix})
    assert integ.azure_container == container
    assert integ.prefix == (prefix or "data")


@pytest.mark.parametrize("prefix", ["/folder", "folder/", "Media/x", "a/x", "my--box/x", "a//b"])
def test_azure_prefix_of_another_form_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigError) as err:
        _one({"provider": "azure", "bucket": "acmestore", "prefix": prefix})
    assert "container-name/folder-name" in str(err.value)
    assert "'acme'" in str(err.value) and "prefix" in str(err.value)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"provider": "ftp", "bucket": "x"}, "unknown provider 'ftp'"),
        ({"bucket": "acme"}, "field 'provider' is required"),
        ({"provider": "aws"}, "needs a bucket name"),
        ({"provider": "s3", "bucket": "acme"}, "endpoint"),
        ({"provider": "local"}, "root"),
        ({"provider": "aws", "bucket": "acme", "buckett": "x"}, "'buckett' is not a known"),
        ({"provider": "azure", "bucket": "Acme_Store"}, "storage account names"),
    ],
)
def test_missing_or_wrong_fields_name_the_rule(table: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        _one(table)
    assert expected in str(err.value)
    assert str(err.value).startswith("integration 'acme'")


def test_providers_are_the_six_of_the_spec() -> None:
    assert set(PROVIDERS) == {"local", "aws", "wasabi", "s3", "azure", "gcs"}


def test_environment_overrides_the_broker_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAWORKER_BROKER_URL", "redis://127.0.0.1:1/0")
    settings = settings_from_dict({"broker": {"url": "amqp://file"}})
    assert settings.broker.url == "redis://127.0.0.1:1/0"


def test_unknown_integration_names_the_known_ones() -> None:
    settings = settings_from_dict({"integrations": {"demo": {"provider": "local", "root": "x"}}})
    with pytest.raises(ConfigError, match=r"'nope' is not defined .*\(defined: demo\)"):
        settings.integration("nope")


BAD_CONFIGS = {
    "bucket": ('provider = "aws"\nbucket = "Bad_Bucket"\n', "bucket"),
    "azure-prefix": ('provider = "azure"\nbucket = "acmestore"\nprefix = "/folder"\n', "prefix"),
    "provider": ('provider = "dropbox"\nbucket = "acme"\n', "unknown provider"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("command", [["process", "acme", "a.jpg"], ["process", "other", "k"]])
def test_cli_exits_2_with_one_line_naming_integration_and_rule(
    tmp_path: Path, case: str, command: list[str]
) -> None:
    body, rule = BAD_CONFIGS[case]
    config = tmp_path / "mediaworker.toml"
    config.write_text(f"[integrations.acme]\n{body}")
    proc = subprocess.run(
        [sys.executable, "-m", "worker", *command, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "integration 'acme'" in lines[0] and rule in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("prefix", ["data", "/data", "data/", "", None])
def test_gcs_prefix_defaults_to_data(prefix: str | None) -> None:
    table: dict[str, object] = {"provider": "gcs", "bucket": "labs_slides.v2"}
    if prefix is not None:
        table["prefix"] = prefix
    integration = _one(table)
    assert (integration.prefix, integration.endpoint_url) == ("data", None)


@pytest.mark.parametrize(
    ("bucket", "rule"),
    [
        ("Labs", "lowercase letters, digits, dashes, underscores and dots"),
        ("ab", "3 to 63 characters"),
        ("a" * 64, "3 to 63 characters"),
        ("_labs", "begin and end"),
        (f"{'a' * 64}.example.com", "dot-separated parts of 1 to 63"),
        ("10.0.0.1", "IP addresses"),
        ("goog-media", "'goog'"),
        ("my-g00gle-bucket", "'google' or a look-alike"),
    ],
)
def test_gcs_bucket_names_gcs_refuses_are_refused_naming_the_rule(bucket: str, rule: str) -> None:
    with pytest.raises(ConfigError) as err:
        _one({"provider": "gcs", "bucket": bucket})
    message = str(err.value)
    assert rule in message and "GCS bucket names" in message
    assert message.startswith("integration 'acme': field 'bucket'") and "\n" not in message


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"credentials": "key.json"}, "'credentials' is not a known setting"),
        ({"endpoint_url": "ftp://127.0.0.1:4443"}, "http:// or https://"),
        ({"region": "europe-west4"}, "own location"),
    ],
)
def test_gcs_refuses_credentials_and_odd_fields(extra: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        _one({"provider": "gcs", "bucket": "labs-slides", **extra})
