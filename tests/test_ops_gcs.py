"""`mediaworker check` and `policy` for GCS, against fake-gcs-server.

fake-gcs-server keeps no bucket CORS configuration and has no IAM: `check`'s CORS line is seen
failing with its gcloud fix (the rule matching itself is shared with S3 and Azure and tested in
test_ops_check.py), refusals come from the fault proxy in front of the emulator, and the printed
IAM bindings are checked for what they grant, not enforced."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from faultproxy import FaultPlan, fault_proxy
from ops_support import run_cli, write_config
from servers import gcs_admin

from worker.policy import PolicyRequest, build_setup
from worker.preflight import Outcome, run_checks
from worker.storage import open_writable

ORIGIN = "https://viewer.example"
SAMPLE = "scans/a.jpg"
ACCOUNT = "mw@acme-project.iam.gserviceaccount.com"


def test_check_on_gcs_all_capabilities_and_the_cors_fix(make_integration) -> None:
    settings, integ = make_integration("gcs")
    open_writable(integ, settings).write(SAMPLE, b"\xff\xd8 jpeg bytes", "image/jpeg")
    lines = {line.capability: line for line in run_checks(integ, settings, origin=ORIGIN)}
    outcomes = {name: line.outcome for name, line in lines.items()}
    assert outcomes == {
        "read": Outcome.OK,
        "write": Outcome.OK,
        "list": Outcome.OK,
        "sign": Outcome.OK,  # the signed URL was fetched from the emulator without credentials
        "cors": Outcome.FAILED,
    }
    assert SAMPLE in lines["read"].detail
    names = [b.name for b in gcs_admin(integ.endpoint_url or "").list_blobs(integ.bucket)]
    assert names == [SAMPLE]  # the probe was deleted again
    cors = lines["cors"]
    assert "no CORS rules" in cors.detail
    assert f"gcloud storage buckets update gs://{integ.bucket} --cors-file=cors.json" in cors.fix
    [rule] = json.loads(cors.fix.split("cors.json = ", 1)[1].split(" then run", 1)[0])
    assert rule["origin"] == [ORIGIN] and {"GET", "PUT"} <= set(rule["method"])


def test_check_on_gcs_names_the_role_a_refusal_needs(make_integration) -> None:
    settings, integ = make_integration("gcs")
    open_writable(integ, settings).write(SAMPLE, b"bytes")
    with fault_proxy(integ.endpoint_url or "", FaultPlan(forbidden=("uploadType",))) as (url, _):
        proxied = integ.model_copy(update={"endpoint_url": url})
        lines = {line.capability: line for line in run_checks(proxied, settings, key=SAMPLE)}
    assert lines["read"].outcome == Outcome.OK
    assert lines["write"].outcome == Outcome.FAILED
    assert "storage.objects.create" in lines["write"].fix
    assert "roles/storage.objectUser" in lines["write"].fix

    readonly = integ.model_copy(update={"readonly": True})
    lines = {line.capability: line for line in run_checks(readonly, settings, key=SAMPLE)}
    assert lines["write"].outcome == Outcome.SKIPPED


def _bindings(commands: list[str]) -> dict[str, dict[str, str]]:
    """role -> the flags of its `add-iam-policy-binding` command, parsed as a shell would."""
    found: dict[str, dict[str, str]] = {}
    for command in commands:
        argv = shlex.split(command)
        if "add-iam-policy-binding" in argv:
            flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--"))
            found[flags["role"]] = {**flags, "resource": argv[4]}
    return found


def test_policy_for_gcs_read_write_partial_access_with_slides(
    make_integration, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, integ = make_integration("gcs", prefix="renditions")
    config = write_config(tmp_path / "mw.toml", integ)
    code, out, _ = run_cli(
        capsys, "policy", integ.name, "--config", str(config), "--principal", ACCOUNT,
        "--origin", ORIGIN, "--items", "scans", "--mirax", "--json",
    )  # fmt: skip
    assert code == 0
    setup = json.loads(out)
    bindings = _bindings(setup["commands"])
    objects = f"projects/_/buckets/{integ.bucket}/objects"
    viewer = bindings["roles/storage.objectViewer"]
    assert viewer["member"] == f"serviceAccount:{ACCOUNT}"
    assert viewer["condition"].startswith(
        f'expression=resource.name.startsWith("{objects}/scans/")'
        f' || resource.name.startsWith("{objects}/renditions/")'
    )
    user = bindings["roles/storage.objectUser"]
    assert user["resource"] == f"gs://{integ.bucket}"
    assert user["condition"].startswith(
        f'expression=resource.name.startsWith("{objects}/renditions/"),'
    )
    lister = bindings["projects/PROJECT_ID/roles/mediaworkerLister"]
    assert "condition" not in lister  # listing is authorised on the bucket
    assert any("--permissions=storage.objects.list" in c for c in setup["commands"])
    assert bindings["roles/iam.serviceAccountTokenCreator"]["resource"] == ACCOUNT
    [rule] = setup["cors"]
    assert rule["origin"] == [ORIGIN] and rule["method"] == ["GET", "HEAD", "PUT"]
    assert "Range" in rule["responseHeader"] and "Content-Encoding" in rule["responseHeader"]
    assert any("--cors-file=cors.json" in c for c in setup["commands"])


def test_policy_for_gcs_read_only_grants_no_write_and_explains_itself(make_integration) -> None:
    _, integ = make_integration("gcs", readonly=True)
    setup = build_setup(PolicyRequest(integ, origin=ORIGIN, mirax=True))
    bindings = _bindings(setup.commands)
    assert set(bindings) == {"roles/storage.objectViewer", "roles/iam.serviceAccountTokenCreator"}
    assert "condition" not in bindings["roles/storage.objectViewer"]  # the whole bucket
    assert bindings["roles/storage.objectViewer"]["member"].endswith(
        "@PROJECT_ID.iam.gserviceaccount.com"
    )
    assert setup.cors is not None and setup.cors[0]["method"] == ["GET", "HEAD"]
    text = " ".join(setup.explanations)
    assert "Read-only integration" in text and "Replace mediaworker@PROJECT_ID" in text
    assert "storage.objects.list, to list MIRAX slide folders" in text
