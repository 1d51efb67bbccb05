"""Read-only integrations on real servers (moto's S3 server, Azurite, fake-gcs-server), behind a
recording proxy.

The customer's round trip: `preextract` into a local folder, upload that folder and the sources
with a plain client, then the worker and `verify` on a read-only integration. The proxy's log is
the proof of SPEC 6: zero PUT/POST/DELETE/copy requests, reads only, and no listing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from azure.storage.blob import BlobServiceClient
from readonly_support import Sources, build_sources, files_under, problem_keys, read_registration
from readonly_support import run_cli as cli
from recording_proxy import RecordingProxy, recording_proxy
from servers import gcs_admin

from worker.config import Settings, settings_from_dict
from worker.items import Item
from worker.pipeline import process_item
from worker.storage import open_storage, open_writable
from worker.storage.base import ReadOnlyView

UNEXTRACTED = "slides/uploaded-later.tiff"


@dataclass
class Bucket:
    """One server's read-only integration `ro`, reached through a recording proxy."""

    kind: str
    sources: Sources
    dest: Path
    config: Path
    settings: Settings
    proxy: RecordingProxy
    client: Any
    """A plain SDK client straight to the server (not through the proxy), as a customer has."""
    container: str = ""

    def key(self, relative: str) -> str:
        """A bucket-relative key; on Azure it starts with the container."""
        return f"{self.container}/{relative}" if self.container else relative

    def delete(self, key: str) -> None:
        if self.kind == "s3":
            self.client.delete_object(Bucket=self.client.bucket, Key=key)
        elif self.kind == "gcs":
            self.client.blob(key).delete()
        else:
            container, _, blob = key.partition("/")
            self.client.get_blob_client(container, blob).delete_blob()

    def put(self, key: str, data: bytes) -> None:
        if self.kind == "s3":
            self.client.put_object(Bucket=self.client.bucket, Key=key, Body=data)
        elif self.kind == "gcs":
            self.client.blob(key).upload_from_string(data)
        else:
            container, _, blob = key.partition("/")
            self.client.get_blob_client(container, blob).upload_blob(data, overwrite=True)


class _S3Client:
    """boto3's S3 client with its bucket, for `Bucket`'s two helpers."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.inner = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.bucket = bucket

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


Extracted = tuple[Path, Sources, Path]
"""The folder standing for the bucket, its sources, and their pre-extraction."""


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Extracted]:
    """Sources and their pre-extraction, made once per (container, prefix): the S3 and GCS
    buckets, which have no container, hold the same files."""
    made: dict[tuple[str, str], Extracted] = {}

    def get(container: str, prefix: str) -> Extracted:
        if (container, prefix) not in made:
            base = tmp_path_factory.mktemp("readonly")
            sources = build_sources(base / "bucket", base / "scratch", under=container)
            dest = base / "out"
            code, _ = cli("preextract", str(sources.root), "--out", str(dest), "--prefix", prefix)
            assert code == 0
            # A source the customer uploads after pre-extracting: the bucket has it, the
            # layout not.
            (base / "bucket" / _key(container, UNEXTRACTED)).write_bytes(
                (base / "bucket" / sources.keys["tiff"]).read_bytes()
            )
            made[container, prefix] = (base, sources, dest)
        return made[container, prefix]

    return get


@pytest.fixture(scope="module", params=["s3", "azure", "gcs"])
def bucket(
    request: pytest.FixtureRequest,
    extracted: Callable[[str, str], Extracted],
    make_integration: Any,
) -> Iterator[Bucket]:
    kind = request.param
    _, integration = make_integration(kind, readonly=True)
    container = integration.azure_container if kind == "azure" else ""
    base, sources, dest = extracted(container, integration.prefix)
    client = _upload(
        kind, request, integration.bucket if kind != "azure" else "", sources.root, dest
    )
    upstream = _upstream(kind, request)
    with recording_proxy(upstream) as proxy:
        table = _readonly_table(integration.model_dump(mode="json"), proxy.url, upstream)
        config = base / f"mediaworker-{kind}.toml"
        config.write_text(_toml(table))
        settings = settings_from_dict({"integrations": {"ro": table}})
        yield Bucket(kind, sources, dest, config, settings, proxy, client, container)


def _upstream(kind: str, request: pytest.FixtureRequest) -> str:
    if kind == "azure":
        return str(request.getfixturevalue("azurite").blob_endpoint)
    return str(request.getfixturevalue("gcs_endpoint" if kind == "gcs" else "moto_endpoint"))


def _key(container: str, relative: str) -> str:
    return f"{container}/{relative}" if container else relative


def _upload(kind: str, request: pytest.FixtureRequest, name: str, *folders: Path) -> Any:
    """Upload every file of the folders, keys = relative paths, with a plain client."""
    files = {key: path for folder in folders for key, path in files_under(folder).items()}
    files.pop("registration.jsonl", None)
    if kind == "s3":
        client = _S3Client(request.getfixturevalue("moto_endpoint"), name)
        for key, path in files.items():
            client.upload_file(str(path), name, key)
        return client
    if kind == "gcs":
        bucket = gcs_admin(request.getfixturevalue("gcs_endpoint")).bucket(name)
        for key, path in files.items():
            bucket.blob(key).upload_from_filename(str(path))
        return bucket
    service = BlobServiceClient.from_connection_string(
        request.getfixturevalue("azurite").connection_string
    )
    for key, path in files.items():
        container, _, blob = key.partition("/")
        with path.open("rb") as data:
            service.get_blob_client(container, blob).upload_blob(data, overwrite=True)
    return service


def _readonly_table(integration: dict[str, Any], proxy_url: str, upstream: str) -> dict[str, Any]:
    table = {
        k: v
        for k, v in integration.items()
        if k in ("provider", "bucket", "region", "prefix") and v
    }
    # The account path (Azurite's `/devstoreaccount1`) stays; only the host changes.
    path = upstream.split("//", 1)[1].partition("/")[2]
    table["endpoint_url"] = f"{proxy_url}/{path}" if path else proxy_url
    table["readonly"] = True
    return table


def _toml(table: dict[str, Any]) -> str:
    lines = ["[integrations.ro]"]
    for k, v in table.items():
        lines.append(f"{k} = {json.dumps(v)}")  # JSON strings and booleans are valid TOML
    return "\n".join(lines) + "\n"


def _assert_only_reads(proxy: RecordingProxy) -> None:
    assert proxy.writes() == []
    reads = proxy.reads()
    assert reads and {r.method for r in reads} <= {"GET", "HEAD"}
    # No listing either: a reader with only object read access can verify.
    listing = ("list-type", "comp=list", "/o?")  # S3, Azure, GCS (`/storage/v1/b/B/o?prefix=`)
    assert not [r for r in reads if any(mark in r.path for mark in listing)]


def test_worker_on_readonly_integration_only_reads(bucket: Bucket) -> None:
    storage = open_storage(bucket.settings.integration("ro"), bucket.settings)
    assert isinstance(storage, ReadOnlyView)
    bucket.proxy.clear()
    keys = [*bucket.sources.keys.values(), bucket.key(UNEXTRACTED), bucket.key("missing.jpg")]
    results = {k: process_item(Item(integration="ro", key=k), bucket.settings) for k in keys}
    for key in bucket.sources.keys.values():
        assert results[key].status == "ok", results[key].message
    for key in (bucket.key(UNEXTRACTED), bucket.key("missing.jpg")):
        assert results[key].status == "missing_assets"
        assert any(p.key.endswith("metadata.json") for p in results[key].problems)
    _assert_only_reads(bucket.proxy)


def test_payload_keys_are_storage_keys(bucket: Bucket) -> None:
    payloads = read_registration(bucket.dest / "registration.jsonl")
    assert sorted(payloads) == sorted(bucket.sources.keys.values())
    for key, payload in payloads.items():
        if bucket.container:
            # Azure: keys include the container, as the registering platform signs them.
            assert key.startswith(bucket.container + "/")
        assert payload["storage_thumbnail_key"].startswith(bucket.key("data/"))


def test_verify_names_exactly_the_damaged_keys(bucket: Bucket) -> None:
    registration = str(bucket.dest / "registration.jsonl")
    config = ("--config", str(bucket.config))
    bucket.proxy.clear()
    code, results = cli("verify", "ro", "--from-file", registration, *config)
    assert code == 0 and {r["status"] for r in results} == {"ok"}, results
    _assert_only_reads(bucket.proxy)

    payloads = read_registration(bucket.dest / "registration.jsonl")
    video = payloads[bucket.sources.keys["video"]]
    image = payloads[bucket.sources.keys["jpeg_exif_orientation_6"]]
    low_section = video["storage_low_quality_sections_key_prefix"] + "/000000011.jpg"
    thumbnail = image["storage_thumbnail_key"]
    index = video["hls_segments"]["high_quality"]["index"]
    segment = [line for line in index.splitlines() if line.endswith(".ts")][-1]
    bucket.delete(low_section)
    bucket.delete(segment)
    bucket.put(thumbnail, (bucket.dest / thumbnail).read_bytes()[:200])

    bucket.proxy.clear()
    code, results = cli("verify", "ro", "--from-file", registration, *config)
    assert code == 1
    assert problem_keys(results) == {low_section, thumbnail, segment}
    _assert_only_reads(bucket.proxy)


def test_preextract_reads_straight_from_the_bucket(bucket: Bucket, tmp_path: Path) -> None:
    """SOURCE may be the integration itself (`NAME:KEY_PREFIX`): read-only access is enough."""
    bucket.proxy.clear()
    out = tmp_path / "out"
    source = "ro:" + bucket.key("slides/")
    code, results = cli("preextract", source, "--out", str(out), "--config", str(bucket.config))
    assert code == 0, results
    expected = {bucket.sources.keys["mirax"], bucket.sources.keys["tiff"], bucket.key(UNEXTRACTED)}
    assert {r["key"] for r in results} == expected
    for payload in read_registration(out / "registration.jsonl").values():
        assert (out / payload["storage_thumbnail_key"]).stat().st_size > 0
    assert bucket.proxy.writes() == []


def test_the_proxy_would_see_a_write(bucket: Bucket) -> None:
    """The zero-write assertions mean something: a write through the same proxy is recorded."""
    storage = open_writable(bucket.settings.integration("ro"), bucket.settings)
    bucket.proxy.clear()
    probe = bucket.key("probe/written.txt")
    storage.write(probe, b"probe")
    storage.delete(probe)
    upload = "POST" if bucket.kind == "gcs" else "PUT"  # a GCS upload is a POST
    assert [r.method for r in bucket.proxy.writes()] == [upload, "DELETE"]
