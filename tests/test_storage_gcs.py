"""What only Google Cloud Storage has, on fake-gcs-server over HTTP (the shared contract is in
`test_storage_contract.py`, id `[gcs]`).

fake-gcs-server has no IAM and does not check signatures, so:
- signed URLs are verified here by an independent V4 computation against the throwaway key;
- refusals (403), throttling (503) and their translation are produced by the fault-injecting
  proxy in front of the emulator: real HTTP answers through the real client library.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from faultproxy import FaultPlan, fault_proxy
from gcs_credentials import ServiceAccount
from recording_proxy import recording_proxy
from servers import free_port

from worker.config import Integration, Settings
from worker.errors import NotFound, PermissionDenied, Reason, StorageUnavailable
from worker.storage import gcs, open_writable
from worker.storage.gcs import GcsStorage


@pytest.fixture
def gcs_case(make_integration) -> tuple[Settings, Integration, GcsStorage]:
    settings, integration = make_integration("gcs")
    storage = open_writable(integration, settings)
    assert isinstance(storage, GcsStorage)
    return settings, integration, storage


# --- V4 signed URLs, checked without the library ----------------------------------------------


def v4_signature_problem(url: str, public_key: RSAPublicKey, now: float) -> str | None:
    """Google's V4 signing rules, computed here: None when the URL's signature verifies with
    `public_key` and it has not expired at `now`, else what is wrong."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    signature = bytes.fromhex(query.pop("X-Goog-Signature"))
    canonical_query = "&".join(
        f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(query.items())
    )
    signed_headers = query["X-Goog-SignedHeaders"]
    host = f"host:{parts.netloc}"
    lines = ["GET", parts.path, canonical_query, host, "", signed_headers, "UNSIGNED-PAYLOAD"]
    canonical = "\n".join(lines)
    scope = query["X-Goog-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        [
            query["X-Goog-Algorithm"],
            query["X-Goog-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    try:
        public_key.verify(signature, to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return "the signature does not verify"
    signed_at = datetime.strptime(query["X-Goog-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    if now > signed_at.timestamp() + int(query["X-Goog-Expires"]):
        return "expired"
    return None


def test_signed_url_verifies_against_the_key_and_serves_the_bytes(
    gcs_case: tuple[Settings, Integration, GcsStorage], gcs_account: ServiceAccount
) -> None:
    _, integration, storage = gcs_case
    key = "data/share/ünï cödé+#%.png"
    storage.write(key, b"signed bytes", content_type="image/png")
    url = storage.sign(key, 600)
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["X-Goog-Credential"].startswith(gcs_account.email + "/")
    assert urlsplit(url).path == f"/{integration.bucket}/{quote(key, safe='/~')}"
    assert v4_signature_problem(url, gcs_account.public_key, time.time()) is None

    response = requests.get(url, timeout=10)  # a plain GET, no credentials
    assert response.status_code == 200
    assert response.content == b"signed bytes"

    longer = url.replace("X-Goog-Expires=600", "X-Goog-Expires=6000")
    assert longer != url
    assert v4_signature_problem(longer, gcs_account.public_key, time.time()) is not None
    assert v4_signature_problem(url, gcs_account.public_key, time.time() + 601) == "expired"


# --- raw bytes of gzip-encoded objects ---------------------------------------------------------


def test_gzip_encoded_object_reads_raw_although_the_service_transcodes(
    gcs_case: tuple[Settings, Integration, GcsStorage], tmp_path: Path
) -> None:
    _, _, storage = gcs_case
    peaks = bytes(range(256)) * 40
    packed = gzip.compress(peaks, mtime=0)
    key = "data/item/files/0/audio_peaks.gz"
    storage.write(key, packed, content_encoding="gzip")

    # A client that does not ask for gzip gets the decompressed bytes (transcoding) ...
    plain = requests.get(storage.sign(key, 60), headers={"Accept-Encoding": "identity"}, timeout=10)
    assert plain.content == peaks
    # ... the worker reads the stored stream itself, ranges included.
    assert storage.read_bytes(key) == packed
    assert storage.read_range(key, 10, 20) == packed[10:30]
    assert storage.download(key, tmp_path / "peaks.gz").size == len(packed)
    assert (tmp_path / "peaks.gz").read_bytes() == packed


def test_large_file_goes_as_a_resumable_upload(make_integration, tmp_path: Path) -> None:
    """Over 8 MiB, a file is sent in `download_part_bytes` chunks of a resumable session."""
    settings, integration = make_integration("gcs")
    data = hashlib.sha256(b"seed").digest() * (9 * 1024**2 // 32 + 7)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    with recording_proxy(integration.endpoint_url or "") as proxy:
        proxied = integration.model_copy(update={"endpoint_url": proxy.url})
        worker = settings.worker.model_copy(update={"download_part_bytes": 1024**2})
        GcsStorage(proxied, worker).write("data/big.bin", source)
        sent = [r.method for r in proxy.writes() if "uploadType=resumable" in r.path]
    assert sent == ["POST"] + ["PUT"] * 10  # the session, then 9 MiB + a bit in 1 MiB chunks
    assert open_writable(integration, settings).read_bytes("data/big.bin") == data


# --- refusals and faults, through the fault proxy ----------------------------------------------


def test_refusals_name_the_missing_permission(
    gcs_case: tuple[Settings, Integration, GcsStorage], gcs_account: ServiceAccount
) -> None:
    settings, integration, storage = gcs_case
    storage.write("data/closed/no.jpg", b"denied")
    upstream = integration.endpoint_url or ""
    # An upload names its object in the body, so every upload is refused.
    refused = FaultPlan(forbidden=("closed", "uploadType=multipart"))
    with fault_proxy(upstream, refused) as (url, stats):
        denied = GcsStorage(integration.model_copy(update={"endpoint_url": url}), settings.worker)
        calls = {
            "storage.objects.get": lambda: denied.read_bytes("data/closed/no.jpg"),
            "storage.objects.create": lambda: denied.write("data/closed/new.jpg", b"x"),
            "storage.objects.list": lambda: list(denied.list("data/closed/")),
        }
        for permission, call in calls.items():
            with pytest.raises(PermissionDenied) as caught:
                call()
            assert caught.value.reason == Reason.PERMISSION_DENIED
            assert permission in str(caught.value) and "data/closed/" in str(caught.value)
            assert "test-token" not in str(caught.value)
        assert stats["403"] == 3  # refused once each: a 403 is not retried
        with pytest.raises(NotFound):
            denied.head("data/open/missing.jpg")


def test_throttling_is_retried_then_succeeds(
    gcs_case: tuple[Settings, Integration, GcsStorage],
) -> None:
    settings, integration, storage = gcs_case
    storage.write("data/busy.jpg", b"eventually")
    upstream = integration.endpoint_url or ""
    with fault_proxy(upstream, FaultPlan(flaky={"busy": 2})) as (url, stats):
        busy = GcsStorage(integration.model_copy(update={"endpoint_url": url}), settings.worker)
        assert busy.read_bytes("data/busy.jpg") == b"eventually"
    assert stats["503"] == 2


def test_unreachable_endpoint_is_storage_unavailable(
    gcs_case: tuple[Settings, Integration, GcsStorage], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, integration, _ = gcs_case
    monkeypatch.setattr(gcs, "RETRY_SECONDS", 1.0)  # the bound, shortened for the test
    dead = integration.model_copy(update={"endpoint_url": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(StorageUnavailable) as caught:
        GcsStorage(dead, settings.worker).head("data/anything.jpg")
    assert caught.value.reason == Reason.STORAGE_UNAVAILABLE


def test_no_credentials_is_permission_denied_naming_adc(
    gcs_case: tuple[Settings, Integration, GcsStorage], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, integration, _ = gcs_case
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    with pytest.raises(PermissionDenied, match="GOOGLE_APPLICATION_CREDENTIALS"):
        open_writable(integration, settings)
