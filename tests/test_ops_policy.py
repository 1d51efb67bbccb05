"""`mediaworker policy`: the documents it prints are valid (moto's PutBucketPolicy accepts them),
and they grant exactly what the worker does.

Two proofs:
1. Every request the worker made (recorded by a proxy in front of moto) while processing a MIRAX
   slide, verifying a read-only item and running `check` is evaluated against the printed
   statements with a small IAM evaluator (action and ARN wildcards, the `s3:prefix` condition):
   each one is allowed; a read-only policy grants no write action; with partial access every
   key touched is inside a granted `Resource`; MIRAX listing is conditioned on the item folders.
2. moto enforces IAM *identity* policies when its authentication is on, but not the Allow
   statements of a bucket policy (it honours only their explicit Deny). So a second moto server
   runs with authentication, the worker gets an IAM user whose policy is the printed statements
   (Principal dropped; the `s3:prefix` condition dropped too, since moto passes no condition
   values for S3 and would deny), and the worker's real requests succeed or are refused there.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest
import requests
from ops_support import run_cli, write_config
from recording_proxy import recording_proxy
from servers import moto_server

from fixtures.slides import generate_slides
from worker.config import Integration, Settings, settings_from_dict
from worker.errors import PermissionDenied
from worker.items import Item
from worker.payloads import Status
from worker.pipeline import process_item
from worker.policy import PolicyRequest, build_setup
from worker.preflight import Outcome, run_checks
from worker.storage import open_storage, open_writable
from worker.storage.s3_setup import s3_bucket_policy

PRINCIPAL = "arn:aws:iam::123456789012:user/mediaworker"
SLIDE_KEY = "scans/run1/slide.mrxs"
OUTSIDE_KEY = "private/secret.jpg"


@pytest.fixture(scope="module")
def mirax(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_slides(tmp_path_factory.mktemp("slides"))["mirax"]


def _upload(storage, mirax: Path) -> None:
    storage.write(SLIDE_KEY, mirax)
    for part in sorted(mirax.with_suffix("").iterdir()):
        storage.write(f"{SLIDE_KEY.removesuffix('.mrxs')}/{part.name}", part)
    storage.write(OUTSIDE_KEY, b"not for the worker")


# --- a small IAM evaluator --------------------------------------------------------------------


def _as_list(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


def allows(policy: dict[str, Any], action: str, resource: str, prefix: str | None) -> bool:
    """Whether an Allow statement grants `action` on `resource` (no Deny statements here)."""
    for st in policy["Statement"]:
        if st["Effect"] != "Allow":
            continue
        if not any(fnmatch.fnmatchcase(action, a) for a in _as_list(st["Action"])):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in _as_list(st["Resource"])):
            continue
        like = st.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        if like is not None and (
            prefix is None or not any(fnmatch.fnmatchcase(prefix, p) for p in _as_list(like))
        ):
            continue
        return True
    return False


def to_iam(method: str, path: str, bucket: str) -> tuple[str, str, str | None]:
    """An S3 REST request (path-style) as (IAM action, resource ARN, s3:prefix)."""
    parts = urlsplit(path)
    query = parse_qs(parts.query, keep_blank_values=True)
    key = unquote(parts.path).lstrip("/").removeprefix(bucket).lstrip("/")
    if not key:
        if "cors" in query:
            return "s3:GetBucketCORS", f"arn:aws:s3:::{bucket}", None
        assert method == "GET", (method, path)
        return "s3:ListBucket", f"arn:aws:s3:::{bucket}", query.get("prefix", [""])[0]
    arn = f"arn:aws:s3:::{bucket}/{key}"
    if method in ("GET", "HEAD"):
        return "s3:GetObject", arn, None
    if method in ("PUT", "POST"):
        return "s3:PutObject", arn, None
    if method == "DELETE":
        return ("s3:AbortMultipartUpload" if "uploadId" in query else "s3:DeleteObject"), arn, None
    raise AssertionError(f"unexpected request {method} {path}")


# --- 1. the policies are valid, and cover every recorded request -------------------------------


def _proxied(settings: Settings, integ: Integration, url: str, **changes: Any):
    table = {
        "provider": "s3",
        "bucket": integ.bucket,
        "region": "us-east-1",
        "endpoint_url": url,
        "prefix": integ.prefix,
        **changes,
    }
    proxied = settings_from_dict(
        {"integrations": {integ.name: table}, "worker": {"work_dir": str(settings.worker.work_dir)}}
    )
    return proxied, proxied.integration(integ.name)


def test_policies_accepted_and_cover_every_request(
    make_integration, moto_endpoint: str, mirax: Path, tmp_path: Path, capsys
) -> None:
    settings, integ = make_integration("s3")
    _upload(open_writable(integ, settings), mirax)
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.put_bucket_cors(
        Bucket=integ.bucket,
        CORSConfiguration={
            "CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "PUT"]}]
        },
    )
    config = write_config(tmp_path / "mw.toml", integ)

    code, out, _ = run_cli(capsys, "policy", integ.name, "--config", str(config), "--json",
                           "--principal", PRINCIPAL, "--items", "scans", "--mirax")  # fmt: skip
    assert code == 0
    policy = json.loads(out)["bucket_policy"]
    client.put_bucket_policy(Bucket=integ.bucket, Policy=json.dumps(policy))
    assert json.loads(client.get_bucket_policy(Bucket=integ.bucket)["Policy"]) == policy

    with recording_proxy(moto_endpoint) as proxy:
        rw_settings, rw = _proxied(settings, integ, proxy.url)
        result = process_item(Item(integration=rw.name, key=SLIDE_KEY, type="slide"), rw_settings)
        assert result.status == Status.OK, result.message
        lines = run_checks(rw, rw_settings, key=SLIDE_KEY)
        assert all(line.outcome == Outcome.OK for line in lines), lines
        rw_requests = list(proxy.requests)
        proxy.clear()

        ro_settings, ro = _proxied(settings, integ, proxy.url, readonly=True)
        verified = process_item(Item(integration=ro.name, key=SLIDE_KEY), ro_settings)
        assert verified.status == Status.OK, verified.message
        run_checks(ro, ro_settings, key=SLIDE_KEY)
        ro_requests = list(proxy.requests)

    rw_iam = [to_iam(r.method, r.path, integ.bucket) for r in rw_requests]
    assert {a for a, _, _ in rw_iam} >= {"s3:GetObject", "s3:PutObject", "s3:ListBucket"}
    for action, arn, prefix in rw_iam:
        assert allows(policy, action, arn, prefix), (action, arn, prefix)
        if action.startswith("s3:") and arn.count("/") and action != "s3:GetObject":
            assert arn.startswith(f"arn:aws:s3:::{integ.bucket}/{integ.prefix}/"), arn
    lists = [prefix for action, _, prefix in rw_iam if action == "s3:ListBucket"]
    assert "scans/run1/slide/" in lists  # the MIRAX folder, inside the condition

    # Partial access: what the worker never needs is outside every Resource and condition.
    assert not allows(policy, "s3:GetObject", f"arn:aws:s3:::{integ.bucket}/{OUTSIDE_KEY}", None)
    assert not allows(policy, "s3:ListBucket", f"arn:aws:s3:::{integ.bucket}", "private/")
    assert not allows(policy, "s3:PutObject", f"arn:aws:s3:::{integ.bucket}/scans/x.jpg", None)

    # Read-only: the printed policy grants no write action at all, and still covers every read.
    ro_policy = s3_bucket_policy(
        PolicyRequest(ro, principal=PRINCIPAL, source_prefixes=("scans",), mirax=True)
    )
    client.put_bucket_policy(Bucket=integ.bucket, Policy=json.dumps(ro_policy))
    granted = {a for st in ro_policy["Statement"] for a in _as_list(st["Action"])}
    assert granted == {"s3:GetObject", "s3:ListBucket", "s3:GetBucketCORS"}
    assert ro_requests and all(r.method in ("GET", "HEAD") for r in ro_requests)
    for r in ro_requests:
        assert allows(ro_policy, *to_iam(r.method, r.path, integ.bucket)), r


def test_policy_text_and_azure_roles(make_integration, tmp_path: Path, capsys) -> None:
    _, s3 = make_integration("wasabi", readonly=True)
    _, az = make_integration("azure")
    config = write_config(tmp_path / "mw.toml", s3, az)
    code, out, _ = run_cli(capsys, "policy", s3.name, "--config", str(config))
    assert code == 0
    blocks = out.split("# cors.json")
    policy = json.loads(blocks[0].split("# policy.json")[1])
    assert all("s3:PutObject" not in st["Action"] for st in policy["Statement"])
    assert "Replace arn:aws:iam::111122223333:user/mediaworker" in out
    assert json.loads(blocks[1].split("# then run:")[0])["CORSRules"][0]["AllowedMethods"] == [
        "GET",
        "HEAD",
    ]
    assert "aws s3api put-bucket-policy" in out and "--endpoint-url" in out

    azure = build_setup(PolicyRequest(az, principal="00000000-aaaa", origin="https://v.example"))
    assert any("Storage Blob Data Contributor" in c for c in azure.commands)
    assert any("Storage Blob Delegator" in c for c in azure.commands)
    cors = next(c for c in azure.commands if c.startswith("az storage cors add"))
    assert "https://v.example" in cors and "PUT" in cors


# --- 2. the same statements enforced by moto with IAM authentication on ------------------------


@pytest.fixture(scope="module")
def auth_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto-auth")) as endpoint:
        yield endpoint


def _user_with(endpoint: str, name: str, policy: dict[str, Any]) -> tuple[str, str]:
    statements = []
    for st in policy["Statement"]:
        st = {k: v for k, v in st.items() if k not in ("Principal", "Condition")}
        statements.append(st)
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    iam.create_user(UserName=name)
    iam.put_user_policy(
        UserName=name,
        PolicyName="mediaworker",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def test_enforced_by_moto_with_real_requests(
    auth_moto: str, mirax: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = "mw-policy-enforced"
    table = {"provider": "s3", "bucket": bucket, "endpoint_url": auth_moto, "region": "us-east-1"}
    settings = settings_from_dict(
        {
            "integrations": {"rw": table, "ro": {**table, "readonly": True}},
            "worker": {"work_dir": str(tmp_path)},
        }
    )
    rw, ro = settings.integration("rw"), settings.integration("ro")
    boto3.client("s3", endpoint_url=auth_moto, region_name="us-east-1").create_bucket(Bucket=bucket)
    _upload(open_writable(rw, settings), mirax)
    request = PolicyRequest(rw, source_prefixes=("scans",), mirax=True)
    writer = _user_with(auth_moto, "worker-rw", s3_bucket_policy(request))
    reader = _user_with(auth_moto, "worker-ro", s3_bucket_policy(PolicyRequest(ro, mirax=True)))
    requests.post(f"{auth_moto}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", writer[0])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", writer[1])
        result = process_item(Item(integration="rw", key=SLIDE_KEY, type="slide"), settings)
        assert result.status == Status.OK, result.message
        with pytest.raises(PermissionDenied):
            open_writable(rw, settings).head(OUTSIDE_KEY)  # partial access: outside the grant
        with pytest.raises(PermissionDenied):
            open_writable(rw, settings).write("scans/overwrite.jpg", b"x")  # sources: no write

        monkeypatch.setenv("AWS_ACCESS_KEY_ID", reader[0])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", reader[1])
        verified = process_item(Item(integration="ro", key=SLIDE_KEY), settings)
        assert verified.status == Status.OK, verified.message
        with pytest.raises(PermissionDenied):
            open_writable(ro, settings).write(f"{ro.prefix}/probe", b"x")
        # The read-only user on a read-write integration: `check` names the missing action.
        write_line = next(
            line for line in run_checks(rw, settings, key=SLIDE_KEY) if line.capability == "write"
        )
        assert write_line.outcome == Outcome.FAILED
        assert "s3:PutObject" in write_line.fix and f"{bucket}/data/*" in write_line.fix

        # A wrong key: `check` says the credentials, not the policy, are the problem.
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
        read_line = run_checks(rw, settings, key=SLIDE_KEY)[0]
        assert read_line.capability == "read" and read_line.outcome == Outcome.FAILED
        assert "credentials were rejected" in read_line.fix
        assert "InvalidAccessKeyId" in read_line.fix
    finally:
        requests.post(f"{auth_moto}/moto-api/reset-auth", data=b"inf", timeout=10)
    # Processing with the writer's policy touched nothing outside it: the outside key is intact.
    storage = open_storage(rw, settings)
    assert storage.read_bytes(OUTSIDE_KEY) == b"not for the worker"
