"""Shared fixtures: real storage servers (moto's S3 server, Azurite, fake-gcs-server) and
integrations on them.

- `moto_endpoint`: URL of a moto S3 server started for the session.
- `azurite`: an `Azurite` (account, key, blob_endpoint, connection_string) started for the session.
- `s3rver_endpoint`: URL of s3rver, an S3 server that refuses expired presigned URLs.
- `gcs_endpoint`: URL of fake-gcs-server, with a throwaway service-account key file in
  `GOOGLE_APPLICATION_CREDENTIALS` for the session (`gcs_account` describes it).
- `make_integration(kind, readonly=, prefix=, bucket=)`: a fresh bucket/container and the
  `(Settings, Integration)` naming it; kind is "local", "s3", "aws", "wasabi", "azure" or "gcs".
- `backend`: an open writable `Storage`, parametrized `[local]`, `[s3]`, `[azure]`.

Servers start only when a test asks for them, and stop at the end of the session.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from azure.storage.blob import BlobServiceClient
from gcs_credentials import ServiceAccount, throwaway_service_account
from servers import (
    S3RVER_BUCKET,
    Azurite,
    azurite_server,
    fake_gcs_server,
    gcs_admin,
    moto_server,
    s3rver_server,
)

from worker.config import Integration, Settings, settings_from_dict
from worker.storage import open_writable
from worker.storage.base import Storage

MakeIntegration = Callable[..., tuple[Settings, Integration]]

_AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_CLEARED_ENV = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "STORAGE_EMULATOR_HOST",
    "API_ENDPOINT_OVERRIDE",
)


@pytest.fixture(scope="session", autouse=True)
def _storage_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Test credentials only, whatever the developer's shell holds: nothing can reach a real
    account, and boto3 reads no profile from the home folder."""
    empty = tmp_path_factory.mktemp("aws-config") / "none"
    with pytest.MonkeyPatch.context() as mp:
        for name in _CLEARED_ENV:
            mp.delenv(name, raising=False)
        for name, value in _AWS_TEST_ENV.items():
            mp.setenv(name, value)
        mp.setenv("AWS_CONFIG_FILE", str(empty))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
        mp.setenv("CLOUDSDK_CONFIG", str(empty.parent))  # no gcloud login is found
        yield


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite, with its account key in AZURE_STORAGE_KEY for the session (the worker's
    credential chain finds it there, as it would a real account's key)."""
    with (
        azurite_server(tmp_path_factory.mktemp("azurite")) as server,
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setenv("AZURE_STORAGE_KEY", server.key)
        yield server


@pytest.fixture(scope="session")
def s3rver_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A stricter S3 server (refuses expired presigned URLs) holding one bucket,
    `servers.S3RVER_BUCKET`; its credentials are `servers.S3RVER_CREDENTIALS`."""
    with s3rver_server(tmp_path_factory.mktemp("s3rver"), S3RVER_BUCKET) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def gcs_account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceAccount]:
    """A throwaway service account, found by the worker through GOOGLE_APPLICATION_CREDENTIALS."""
    with (
        throwaway_service_account(tmp_path_factory.mktemp("gcs-account")) as account,
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(account.key_file))
        yield account


@pytest.fixture(scope="session")
def gcs_endpoint(
    tmp_path_factory: pytest.TempPathFactory, gcs_account: ServiceAccount
) -> Iterator[str]:
    with fake_gcs_server(tmp_path_factory.mktemp("fake-gcs")) as endpoint:
        yield endpoint


_counter = itertools.count(1)


def _fresh_name(kind: str) -> str:
    return f"mw-{kind}-{next(_counter)}-{uuid.uuid4().hex[:8]}"


def _s3_table(kind: str, endpoint: str, bucket: str | None) -> dict[str, Any]:
    name = bucket or _fresh_name(kind)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    provider = {"s3": "s3", "aws": "aws", "wasabi": "wasabi"}[kind]
    return {"provider": provider, "bucket": name, "region": "us-east-1", "endpoint_url": endpoint}


def _azure_table(server: Azurite, container: str | None, prefix: str | None) -> dict[str, Any]:
    name = container or _fresh_name("az")
    service = BlobServiceClient.from_connection_string(server.connection_string)
    service.create_container(name)
    folder = "data" if prefix is None else prefix.strip("/")
    return {
        "provider": "azure",
        "bucket": server.account,
        "endpoint_url": server.blob_endpoint,
        "prefix": f"{name}/{folder}" if folder else name,
    }


def _gcs_table(endpoint: str, bucket: str | None) -> dict[str, Any]:
    name = bucket or _fresh_name("gcs")
    gcs_admin(endpoint).create_bucket(name)
    return {"provider": "gcs", "bucket": name, "endpoint_url": endpoint}


@pytest.fixture(scope="session")
def make_integration(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> MakeIntegration:
    """A factory: each call makes a fresh bucket (S3 kinds, on the moto server; gcs, on
    fake-gcs-server), container (azure, on Azurite) or root folder (local), and returns
    `(Settings, Integration)`.

    `bucket` names the bucket (S3) or the container (azure); `prefix` is the integration's
    prefix (azure: the folder inside the container, default `data`). Servers start on first use.
    """

    def make(
        kind: str, *, readonly: bool = False, prefix: str | None = None, bucket: str | None = None
    ) -> tuple[Settings, Integration]:
        table: dict[str, Any]
        if kind == "local":
            table = {"provider": "local", "root": str(tmp_path_factory.mktemp("local-bucket"))}
        elif kind in ("s3", "aws", "wasabi"):
            table = _s3_table(kind, request.getfixturevalue("moto_endpoint"), bucket)
        elif kind == "azure":
            table = _azure_table(request.getfixturevalue("azurite"), bucket, prefix)
        elif kind == "gcs":
            table = _gcs_table(request.getfixturevalue("gcs_endpoint"), bucket)
        else:
            raise ValueError(f"unknown integration kind {kind!r}")
        if prefix is not None and kind != "azure":
            table["prefix"] = prefix
        table["readonly"] = readonly
        name = f"{kind}{next(_counter)}"
        work_dir = tmp_path_factory.mktemp("work")
        settings = settings_from_dict(
            {"integrations": {name: table}, "worker": {"work_dir": str(work_dir)}}, None
        )
        return settings, settings.integration(name)

    return make


@pytest.fixture(params=["local", "s3", "azure"], ids=["local", "s3", "azure"])
def backend(request: pytest.FixtureRequest, make_integration: MakeIntegration) -> Storage:
    """An open writable storage on a fresh bucket of each backend."""
    settings, integration = make_integration(request.param)
    return open_writable(integration, settings)
