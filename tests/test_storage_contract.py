"""The storage contract, run against every backend on real servers.

`[local]` is a folder, `[s3]` and `[wasabi]` go over HTTP to moto's S3 server (an `s3` and a
Wasabi-style integration), `[azure]` over HTTP to Azurite, `[gcs]` over HTTP to fake-gcs-server
(with a throwaway service-account key found through Application Default Credentials). Each test
gets a fresh bucket. Where moto is too lenient (it does not check the expiry of presigned URLs),
S3 runs against s3rver, which refuses an expired URL. fake-gcs-server checks neither signatures
nor expiry, so GCS signed URLs are also verified here against the signing key; the GCS-only
tests (refusals, retries) are in `test_storage_gcs.py`.
"""

from __future__ import annotations

import calendar
import gzip
import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from servers import (
    S3RVER_BUCKET,
    S3RVER_CREDENTIALS,
    Azurite,
    free_port,
    moto_enforcing_iam,
    moto_user,
)

from worker.config import (
    MAX_SIGNED_URL_SECONDS,
    Integration,
    Settings,
    WorkerSettings,
    settings_from_dict,
)
from worker.errors import NotFound, PermissionDenied, Reason, StorageUnavailable
from worker.storage import open_writable
from worker.storage.azure import RETRY_TOTAL, AzureStorage
from worker.storage.base import Storage
from worker.storage.gcs import GcsStorage
from worker.storage.local import LocalStorage
from worker.storage.s3 import MAX_ATTEMPTS, S3Storage

MakeIntegration = Callable[..., tuple[Settings, Integration]]

AWKWARD_NAMES = [
    "with space.jpg",
    "ünïcödé 日本.jpg",
    "a+b.jpg",
    "100%.jpg",
    "hash#tag.jpg",
    "mixed +%# ü.jpg",
]


def payload(size: int, seed: str = "mw") -> bytes:
    """Deterministic bytes that are not all alike, so offsets and ranges are checked for real."""
    out = bytearray()
    block = seed.encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


@dataclass
class Case:
    kind: str
    storage: Storage
    integration: Integration
    settings: Settings

    def key(self, name: str) -> str:
        """A key under the integration's prefix (for Azure it starts with the container)."""
        return f"{self.integration.prefix}/{name}"


@pytest.fixture(params=["local", "s3", "wasabi", "azure", "gcs"])
def store(request: pytest.FixtureRequest, make_integration: MakeIntegration) -> Case:
    settings, integration = make_integration(request.param)
    return Case(request.param, open_writable(integration, settings), integration, settings)


@pytest.fixture(params=["s3", "wasabi", "azure", "gcs"])
def remote(request: pytest.FixtureRequest, make_integration: MakeIntegration) -> Case:
    settings, integration = make_integration(request.param)
    return Case(request.param, open_writable(integration, settings), integration, settings)


# --- bytes, files, ranges, streams -------------------------------------------------------------


def test_bytes_round_trip_with_head_fields(store: Case) -> None:
    data = payload(300_000)
    key = store.key("items/photo.jpg")
    store.storage.write(key, data, content_type="image/jpeg")

    assert store.storage.read_bytes(key) == data
    info = store.storage.head(key)
    assert info.key == key
    assert info.size == len(data)
    assert info.etag and '"' not in info.etag
    assert info.content_type == "image/jpeg"
    assert info.last_modified is not None


def test_overwrite_replaces_content_and_etag(store: Case) -> None:
    key = store.key("replace.bin")
    store.storage.write(key, b"first version")
    first = store.storage.head(key)
    time.sleep(0.01)  # the local backend derives its ETag from size and mtime
    store.storage.write(key, b"second, longer version")
    assert store.storage.read_bytes(key) == b"second, longer version"
    second = store.storage.head(key)
    assert second.size == len(b"second, longer version")
    assert second.etag != first.etag


def test_file_upload_and_concurrent_ranged_download(store: Case, tmp_path: Path) -> None:
    """3 MB in 1 MB parts: the download is split into ranged GETs, and every byte comes back
    in its place."""
    data = payload(3 * 1024**2 + 12_345)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    key = store.key("big/source.bin")
    store.storage.write(key, source, content_type="application/octet-stream")

    worker = store.settings.worker.model_copy(update={"download_part_bytes": 1024**2})
    reader = _reopen(store, worker)
    dest = tmp_path / "out" / "copy.bin"
    info = reader.download(key, dest)
    assert dest.read_bytes() == data
    assert info.size == len(data)
    assert info.etag == store.storage.head(key).etag


def _reopen(store: Case, worker: WorkerSettings) -> Storage:
    if store.kind == "local":
        return store.storage
    if store.kind == "azure":
        return AzureStorage(store.integration, worker)
    if store.kind == "gcs":
        return GcsStorage(store.integration, worker)
    return S3Storage(store.integration, worker)


def test_read_range_and_stream(store: Case) -> None:
    data = payload(70_000)
    key = store.key("range.bin")
    store.storage.write(key, data)

    assert store.storage.read_range(key, 0, 10) == data[:10]
    assert store.storage.read_range(key, 65_000, 1000) == data[65_000:66_000]
    assert store.storage.read_range(key, 69_990, 100) == data[69_990:]  # short at the end
    assert store.storage.read_range(key, 80_000, 10) == b""  # past the end
    assert store.storage.read_head(key, 16) == data[:16]
    with store.storage.open_read(key) as stream:
        chunks = [stream.read(7_000) for _ in range(11)]
    assert b"".join(chunks) == data
    assert chunks[-1] == b""


def test_content_encoding_is_kept(store: Case) -> None:
    raw = payload(5_000)
    packed = gzip.compress(raw, mtime=0)
    key = store.key("media/audio_peaks.gz")
    store.storage.write(
        key, packed, content_type="application/octet-stream", content_encoding="gzip"
    )
    info = store.storage.head(key)
    assert info.content_encoding == "gzip"
    assert info.size == len(packed)
    # The stored bytes are the gzip stream itself: nothing decompressed on the way.
    assert gzip.decompress(store.storage.read_bytes(key)) == raw


def test_list_under_a_prefix(store: Case) -> None:
    wanted = {store.key(f"list/a/{n}.txt"): n * 10 + 1 for n in range(5)}
    for key, size in wanted.items():
        store.storage.write(key, payload(size))
    store.storage.write(store.key("list/b/other.txt"), b"x")
    store.storage.write(store.key("list/ab.txt"), b"xy")

    listing = store.storage.list(store.key("list/a/"))
    assert iter(listing) is listing  # a generator: pages are yielded as they come
    found = {info.key: info.size for info in listing}
    assert found == wanted
    everything = {info.key for info in store.storage.list(store.key("list/"))}
    assert everything == {*wanted, store.key("list/b/other.txt"), store.key("list/ab.txt")}
    assert list(store.storage.list(store.key("nothing-here/"))) == []


def test_list_folders_gives_one_entry_per_folder(store: Case) -> None:
    for name in ("f/one/a.txt", "f/one/deep/b.txt", "f/two/c.txt", "f/loose.txt"):
        store.storage.write(store.key(name), b"x")
    folders = list(store.storage.list_folders(store.key("f/")))
    assert folders == [store.key("f/one/"), store.key("f/two/")]
    assert list(store.storage.list_folders(store.key("f/one/"))) == [store.key("f/one/deep/")]
    assert list(store.storage.list_folders(store.key("nothing-here/"))) == []


# --- missing keys, delete, exists --------------------------------------------------------------


def test_missing_key_is_not_found(store: Case, tmp_path: Path) -> None:
    key = store.key("does/not/exist.jpg")
    calls: list[Callable[[], object]] = [
        lambda: store.storage.head(key),
        lambda: store.storage.read_bytes(key),
        lambda: store.storage.read_range(key, 0, 10),
        lambda: store.storage.download(key, tmp_path / "x"),
    ]
    for call in calls:
        with pytest.raises(NotFound) as caught:
            call()
        assert caught.value.reason == Reason.NOT_FOUND
        assert "exist.jpg" in str(caught.value)
    assert store.storage.exists(key) is False


def test_translated_errors_keep_the_provider_s_code(remote: Case) -> None:
    """`check` tells a rejected key from a missing permission by the provider's own code, which
    the translated error carries: no caller needs the SDK's exception."""
    key = remote.key("does/not/exist.jpg")
    for call in (lambda: remote.storage.head(key), lambda: remote.storage.read_range(key, 0, 10)):
        with pytest.raises(NotFound) as caught:
            call()
        assert caught.value.provider_code in {"404", "NoSuchKey", "BlobNotFound"}
        assert caught.value.__cause__ is None


def test_exists_and_delete(store: Case) -> None:
    key = store.key("probe/.mediaworker-check")
    store.storage.write(key, b"probe")
    assert store.storage.exists(key) is True
    store.storage.delete(key)
    assert store.storage.exists(key) is False
    store.storage.delete(key)  # deleting what is gone is not an error


# --- keys --------------------------------------------------------------------------------------


def test_awkward_keys_round_trip(store: Case) -> None:
    keys = [store.key(f"odd/{name}") for name in AWKWARD_NAMES]
    for i, key in enumerate(keys):
        store.storage.write(key, payload(100 + i, seed=key), content_type="image/jpeg")
    for i, key in enumerate(keys):
        assert store.storage.read_bytes(key) == payload(100 + i, seed=key)
        assert store.storage.head(key).size == 100 + i
    assert {info.key for info in store.storage.list(store.key("odd/"))} == set(keys)


def test_awkward_keys_sign_and_fetch(remote: Case) -> None:
    for name in AWKWARD_NAMES:
        key = remote.key(f"signed/{name}")
        remote.storage.write(key, name.encode(), content_type="text/plain")
        response = requests.get(remote.storage.sign(key, 60), timeout=10)
        assert response.status_code == 200, name
        assert response.content == name.encode()


@pytest.mark.parametrize("bad", ["../escape.txt", "data/../../escape.txt", "/etc/passwd", ""])
def test_local_refuses_keys_outside_its_root(tmp_path: Path, bad: str) -> None:
    root = tmp_path / "bucket"
    root.mkdir()
    (tmp_path / "escape.txt").write_text("outside")
    storage = LocalStorage(root, "demo")
    with pytest.raises(PermissionDenied):
        storage.write(bad, b"x")
    with pytest.raises(PermissionDenied):
        storage.read_bytes(bad)
    assert (tmp_path / "escape.txt").read_text() == "outside"


def test_local_refuses_a_symlink_out_of_its_root(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key.txt").write_text("secret")
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    storage = LocalStorage(root, "demo")
    with pytest.raises(PermissionDenied):
        storage.read_bytes("link/key.txt")
    with pytest.raises(PermissionDenied):
        storage.write("link/new.txt", b"x")
    assert not (outside / "new.txt").exists()
    assert all(not info.key.startswith("link") for info in storage.list(""))


def test_azure_keys_need_a_container(make_integration: MakeIntegration) -> None:
    settings, integration = make_integration("azure")
    storage = open_writable(integration, settings)
    with pytest.raises(PermissionDenied, match="container/path/to/blob"):
        storage.head("no-container-part")


# --- signed URLs -------------------------------------------------------------------------------


def test_signed_url_serves_the_bytes_to_a_plain_get(remote: Case) -> None:
    data = payload(20_000)
    key = remote.key("share/frame.png")
    remote.storage.write(key, data, content_type="image/png")
    response = requests.get(remote.storage.sign(key, 600), timeout=10)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Content-Type"] == "image/png"


def test_signed_url_lifetime_is_the_one_asked_and_capped(remote: Case) -> None:
    key = remote.key("x.jpg")
    if remote.kind == "azure":
        for asked, expected in ((90, 90), (10**6, MAX_SIGNED_URL_SECONDS)):
            before = int(time.time())
            expiry = parse_qs(urlsplit(remote.storage.sign(key, asked)).query)["se"][0]
            left = calendar.timegm(time.strptime(expiry, "%Y-%m-%dT%H:%M:%SZ")) - before
            assert expected - 1 <= left <= expected + 1
        return
    if remote.kind == "gcs":
        for asked, expected in ((90, 90), (10**6, MAX_SIGNED_URL_SECONDS)):
            query = parse_qs(urlsplit(remote.storage.sign(key, asked)).query)
            assert query["X-Goog-Expires"] == [str(expected)]
            assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
        return
    short = parse_qs(urlsplit(remote.storage.sign(key, 90)).query)
    capped = parse_qs(urlsplit(remote.storage.sign(key, 10**6)).query)
    assert short["X-Amz-Expires"] == ["90"]
    assert capped["X-Amz-Expires"] == [str(MAX_SIGNED_URL_SECONDS)]
    assert short["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]


@pytest.fixture
def strict_s3(s3rver_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Case:
    """S3Storage on s3rver, which (unlike moto's server) refuses expired presigned URLs."""
    access_key, secret = S3RVER_CREDENTIALS
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    table = {"provider": "s3", "bucket": S3RVER_BUCKET, "endpoint_url": s3rver_endpoint}
    settings = settings_from_dict({"integrations": {"strict": table}})
    integration = settings.integration("strict")
    return Case("s3", open_writable(integration, settings), integration, settings)


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_signed_url_stops_working_after_its_lifetime(
    kind: str, make_integration: MakeIntegration, request: pytest.FixtureRequest
) -> None:
    if kind == "s3":
        case: Case = request.getfixturevalue("strict_s3")
    else:
        settings, integration = make_integration("azure")
        case = Case(kind, open_writable(integration, settings), integration, settings)
    key = case.key(f"expiring/{time.monotonic_ns()} a+b#.jpg")
    case.storage.write(key, b"soon gone", content_type="image/jpeg")
    url = case.storage.sign(key, 2)
    assert requests.get(url, timeout=10).content == b"soon gone"
    time.sleep(3.2)
    expired = requests.get(url, timeout=10)
    assert expired.status_code == 403
    assert b"soon gone" not in expired.content


# --- dotted buckets, retries, denials ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["s3", "wasabi"])
def test_dotted_bucket_works_path_style(make_integration: MakeIntegration, kind: str) -> None:
    settings, integration = make_integration(kind, bucket=f"my.dotted.{kind}.bucket")
    assert integration.path_style is True
    storage = open_writable(integration, settings)
    assert isinstance(storage, S3Storage)
    assert storage.client.meta.config.s3 == {"addressing_style": "path"}
    key = "data/in a dotted bucket.jpg"
    storage.write(key, b"dots", content_type="image/jpeg")
    assert storage.read_bytes(key) == b"dots"
    url = storage.sign(key, 60)
    assert urlsplit(url).path.startswith(f"/{integration.bucket}/")
    assert requests.get(url, timeout=10).content == b"dots"


def test_clients_retry_a_bounded_number_of_times(make_integration: MakeIntegration) -> None:
    settings, s3_integration = make_integration("s3")
    s3 = open_writable(s3_integration, settings)
    assert isinstance(s3, S3Storage)
    config = s3.client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": MAX_ATTEMPTS}
    assert config.connect_timeout > 0 and config.read_timeout > 0

    settings, az_integration = make_integration("azure")
    azure = open_writable(az_integration, settings)
    assert isinstance(azure, AzureStorage)
    retry = azure.service._config.retry_policy
    assert type(retry).__name__ == "ExponentialRetry"
    assert retry.total_retries == RETRY_TOTAL
    assert retry.random_jitter_range > 0


def test_unreachable_s3_endpoint_is_storage_unavailable(make_integration: MakeIntegration):
    settings, integration = make_integration("s3")
    dead = integration.model_copy(update={"endpoint_url": f"http://127.0.0.1:{free_port()}"})
    worker = settings.worker
    storage = S3Storage(dead, worker)
    with pytest.raises(StorageUnavailable) as caught:
        storage.head("data/anything.jpg")
    assert caught.value.reason == Reason.STORAGE_UNAVAILABLE
    assert "testing" not in str(caught.value)


def test_azure_wrong_key_is_permission_denied(
    make_integration: MakeIntegration, azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, integration = make_integration("azure")
    key = f"{integration.prefix}/private.jpg"
    open_writable(integration, settings).write(key, b"private")
    wrong = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3Jvbmc9PQ=="
    monkeypatch.setenv("AZURE_STORAGE_KEY", wrong)
    denied = open_writable(integration, settings)
    for call in (lambda: denied.head(key), lambda: denied.read_bytes(key)):
        with pytest.raises(PermissionDenied) as caught:
            call()
        assert caught.value.reason == Reason.PERMISSION_DENIED
        assert wrong not in str(caught.value) and azurite.key not in str(caught.value)
        assert "sig=" not in str(caught.value)


def test_s3_refused_request_is_permission_denied(
    make_integration: MakeIntegration,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """moto's server enforces IAM once its auth is switched on: a user whose policy allows
    `s3:GetObject` on one folder only reads there, and is refused (403) elsewhere. Its
    head, download and sniffing work with that alone: no bucket-level call is needed."""
    settings, integration = make_integration("s3")
    bucket = integration.bucket
    storage = open_writable(integration, settings)
    storage.write("data/open/ok.jpg", b"allowed")
    storage.write("data/closed/no.jpg", b"denied")
    reader_id, reader_secret = moto_user(
        moto_endpoint,
        [
            {
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/data/open/*",
            }
        ],
    )

    with moto_enforcing_iam(moto_endpoint):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", reader_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", reader_secret)
        reader = open_writable(integration, settings)
        assert reader.read_bytes("data/open/ok.jpg") == b"allowed"
        assert reader.head("data/open/ok.jpg").size == len(b"allowed")
        assert reader.read_head("data/open/ok.jpg", 3) == b"all"
        assert reader.download("data/open/ok.jpg", tmp_path / "ok.jpg").size == 7
        assert (tmp_path / "ok.jpg").read_bytes() == b"allowed"
        with pytest.raises(PermissionDenied) as caught:
            reader.read_bytes("data/closed/no.jpg")
        assert "AccessDenied" in str(caught.value) and "data/closed/no.jpg" in str(caught.value)
        assert reader_secret not in str(caught.value) and reader_id not in str(caught.value)

        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000")
        with pytest.raises(PermissionDenied, match="InvalidAccessKeyId"):
            open_writable(integration, settings).read_bytes("data/open/ok.jpg")


def test_local_download_refuses_a_fifo_or_folder_without_blocking(tmp_path: Path) -> None:
    """The local backend opens the object once to copy it; what a hostile folder puts at the
    key instead of a file (a FIFO would block a plain open forever) fails as not found."""
    bucket = tmp_path / "bucket"
    (bucket / "in" / "folder.jpg").mkdir(parents=True)
    os.mkfifo(bucket / "in" / "pipe.jpg")
    storage = LocalStorage(bucket)
    outcomes: list[BaseException | None] = []

    def download_all() -> None:
        for key in ("in/pipe.jpg", "in/folder.jpg"):
            try:
                storage.download(key, tmp_path / "out" / "copy")
                outcomes.append(None)
            except BaseException as exc:  # collected for the asserts below
                outcomes.append(exc)

    thread = threading.Thread(target=download_all, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the download blocked"
    assert [type(exc) for exc in outcomes] == [NotFound, NotFound]
    assert not (tmp_path / "out" / "copy").exists()
