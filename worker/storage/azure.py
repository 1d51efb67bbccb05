"""Azure Blob Storage on azure-storage-blob.

A key's first component is its container (`example_container/example_folder/file.jpeg`); the
integration's `bucket` is the storage account. Credentials come from the standard chain, in
this order: `AZURE_STORAGE_CONNECTION_STRING`, the account key in `AZURE_STORAGE_KEY`, then
`DefaultAzureCredential` (managed identity, environment, Azure CLI login...).

Only blob calls are made while processing (no container-level call except `list`), transient
faults are retried by the SDK's `ExponentialRetry` (bounded, with jitter), and what is left goes
through `_translate`, the one table from SDK errors to `worker.errors`. The SDK's messages are
never passed on: an authentication failure echoes the request's signature.

Bytes are read as stored: the SDK's automatic gunzip of `Content-Encoding: gzip` blobs is turned
off (`decompress=False`), so `audio_peaks.gz` reads back as the gzip stream it is, its size
matches `head`, and byte ranges stay meaningful.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import (
    BlobClient,
    BlobProperties,
    BlobSasPermissions,
    BlobServiceClient,
    ContentSettings,
    ExponentialRetry,
    generate_blob_sas,
)

from worker.config import MAX_SIGNED_URL_SECONDS, Integration, WorkerSettings
from worker.errors import MediaWorkerError, NotFound, PermissionDenied, StorageUnavailable
from worker.storage._stream import MappedStream, buffered
from worker.storage.base import Capability, Content, CorsRule, ObjectInfo, Storage

if TYPE_CHECKING:
    from worker.policy import PolicyRequest, Setup

log = logging.getLogger(__name__)

RETRY_TOTAL = 4
"""Retries per request after the first attempt (exponential backoff from 1 s, with jitter)."""
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
_SAS_CLOCK_SKEW = timedelta(minutes=5)
"""A SAS starts a little in the past, so a server whose clock runs behind accepts it at once."""

_NOT_FOUND = {"BlobNotFound", "ContainerNotFound", "ResourceNotFound"}
_DENIED = {"AuthorizationFailure", "AuthenticationFailed", "AuthorizationPermissionMismatch"}

_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


def prefix_problem(prefix: str) -> str | None:
    expected = "Azure prefixes have the form 'container-name/folder-name' (or 'container-name')"
    if prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
        return f"{expected}, with no leading, trailing or doubled '/'"
    container = prefix.split("/", 1)[0]
    if not _CONTAINER.match(container):
        return (
            f"{expected}; container {container!r} breaks Azure's rule: 3 to 63 lowercase letters,"
            " digits and single hyphens, starting and ending with a letter or digit"
        )
    return None


def _translate(exc: Exception, where: str, action: str) -> Exception:
    """The one table from azure-core/azure-storage-blob errors to the worker's error tree."""
    if isinstance(exc, MediaWorkerError):
        return exc
    code = str(getattr(exc, "error_code", "") or "")
    status = int(getattr(exc, "status_code", 0) or 0)
    translated = _translated(exc, code, status, where, action)
    if isinstance(translated, MediaWorkerError):
        translated.with_code(code or status)
    return translated


def _translated(exc: Exception, code: str, status: int, where: str, action: str) -> Exception:
    if isinstance(exc, ResourceNotFoundError) or code in _NOT_FOUND or status == 404:
        return NotFound(f"{where} does not exist ({code or status}); check the key and container")
    if isinstance(exc, ClientAuthenticationError) and not status:
        return PermissionDenied(
            f"{where}: no usable Azure credentials to {action}; set"
            " AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_KEY, or sign in for"
            " DefaultAzureCredential (managed identity, `az login`)"
        )
    if isinstance(exc, ClientAuthenticationError) or code in _DENIED or status in (401, 403):
        return PermissionDenied(
            f"{where}: access denied to {action} ({code or status}); check the account key or"
            " the role assignments (see `mediaworker policy`)"
        )
    transient = (ServiceRequestError, ServiceResponseError, ResourceModifiedError)
    if isinstance(exc, transient) or status >= 500 or status in (408, 409, 412, 429):
        return StorageUnavailable(
            f"{where}: the service could not {action} ({code or status or type(exc).__name__})"
            f" after {RETRY_TOTAL} retries; it is retried later"
        )
    if isinstance(exc, HttpResponseError):
        return PermissionDenied(f"{where}: the service refused to {action} ({code or status})")
    if isinstance(exc, (AzureError, OSError)):
        return StorageUnavailable(f"{where}: could not {action} ({type(exc).__name__})")
    return exc


def _client_options(settings: WorkerSettings) -> dict[str, Any]:
    part = max(settings.download_part_bytes, 4 * 1024**2)
    return {
        "retry_policy": ExponentialRetry(
            initial_backoff=1, increment_base=3, retry_total=RETRY_TOTAL, random_jitter_range=1
        ),
        "connection_timeout": CONNECT_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
        "max_single_get_size": part,
        "max_chunk_get_size": part,
        "max_single_put_size": part,
        "max_block_size": min(part, 100 * 1024**2),
    }


def service_client(integration: Integration, settings: WorkerSettings) -> BlobServiceClient:
    """The account's client from the standard credential chain (see the module's docstring)."""
    options = _client_options(settings)
    connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection_string:
        service = BlobServiceClient.from_connection_string(connection_string, **options)
        if service.account_name != integration.bucket:
            log.warning(
                "integration %r names account %r but AZURE_STORAGE_CONNECTION_STRING is for"
                " account %r, which is used",
                integration.name,
                integration.bucket,
                service.account_name,
            )
        return service
    account_url = integration.endpoint_url or f"https://{integration.bucket}.blob.core.windows.net"
    key = os.environ.get("AZURE_STORAGE_KEY")
    if key:
        credential: Any = {"account_name": integration.bucket, "account_key": key}
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return BlobServiceClient(account_url, credential=credential, **options)


def _split_csv(value: str | list[str]) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(v.strip() for v in items if v.strip())


def _info(key: str, props: BlobProperties) -> ObjectInfo:
    settings = props.content_settings
    return ObjectInfo(
        key=key,
        size=int(props.size),
        etag=str(props.etag or "").strip('"') or None,
        content_type=settings.content_type if settings else None,
        content_encoding=settings.content_encoding if settings else None,
        last_modified=props.last_modified,
    )


class AzureStorage(Storage):
    @classmethod
    def configure(cls, integration: Integration) -> dict[str, Any]:
        account = integration.bucket
        if not account:
            raise ValueError("field 'bucket': an Azure integration needs the storage account name")
        if not _ACCOUNT.match(account) and not integration.endpoint_url:
            raise ValueError(
                f"field 'bucket': {account!r}: Azure storage account names are 3 to 24"
                " lowercase letters and digits"
            )
        prefix = cls.prefix_of(integration.prefix)
        problem = prefix_problem(prefix)
        if problem:
            raise ValueError(f"field 'prefix': {integration.prefix!r}: {problem}")
        return {"prefix": prefix}

    @classmethod
    def prefix_of(cls, text: str) -> str:
        """`container/folder` as given (checked by `configure`); blank is `data`."""
        return text.strip() or "data"

    @classmethod
    def listing_root(cls, integration: Integration) -> str:
        return integration.azure_container + "/"  # a key's first component is its container

    @classmethod
    def denied_fix(
        cls, integration: Integration, capability: Capability, key: str, exc: Exception
    ) -> str:
        from worker.storage.azure_setup import denied_fix

        return denied_fix(integration, capability, getattr(exc, "provider_code", ""))

    @classmethod
    def cors_fix(cls, integration: Integration, origin: str, missing: list[str]) -> str:
        from worker.storage.azure_setup import cors_fix

        return cors_fix(integration, origin)

    @classmethod
    def setup(cls, request: PolicyRequest) -> Setup:
        from worker.storage.azure_setup import azure_setup

        return azure_setup(request)

    def read_cors(self) -> list[CorsRule]:
        """The blob service's CORS rules; reading them needs the account key or an Owner or
        Contributor role on the account (for `check` only)."""
        try:
            properties = self.service.get_service_properties()
        except Exception as exc:
            where = f"integration {self.integration!r}: azure://{self.account}"
            action = "read the CORS rules (the account key or an Owner/Contributor role can)"
            raise _translate(exc, where, action) from None
        return [
            CorsRule(_split_csv(rule.allowed_origins), _split_csv(rule.allowed_methods))
            for rule in properties.get("cors") or []
        ]

    def __init__(self, integration: Integration, settings: WorkerSettings) -> None:
        self.integration = integration.name
        self.service = service_client(integration, settings)
        self.concurrency = settings.download_concurrency
        self.write_concurrency = max(1, min(settings.write_concurrency, 4))

    @property
    def account(self) -> str:
        return str(self.service.account_name)

    def _split(self, key: str) -> tuple[str, str]:
        container, _, blob = key.partition("/")
        if not container or not blob or key.startswith("/"):
            raise PermissionDenied(
                f"integration {self.integration!r}: key {key!r} is not of the form"
                " 'container/path/to/blob'"
            )
        return container, blob

    def _where(self, key: str) -> str:
        return f"integration {self.integration!r}: azure://{self.account}/{key}"

    def _blob(self, key: str) -> BlobClient:
        container, blob = self._split(key)
        return self.service.get_blob_client(container, blob)

    def head(self, key: str) -> ObjectInfo:
        try:
            return _info(key, self._blob(key).get_blob_properties())
        except Exception as exc:
            raise _translate(exc, self._where(key), "read") from None

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            return bytes(
                self._blob(key)
                .download_blob(offset=start, length=length, decompress=False)
                .readall()
            )
        except HttpResponseError as exc:
            if exc.error_code == "InvalidRange":
                return b""  # starts past the end: nothing there, as with a file
            raise _translate(exc, self._where(key), "read") from None
        except Exception as exc:
            raise _translate(exc, self._where(key), "read") from None

    def open_read(self, key: str) -> BinaryIO:
        where = self._where(key)
        try:
            downloader = self._blob(key).download_blob(decompress=False)
        except Exception as exc:
            raise _translate(exc, where, "read") from None
        stream = MappedStream(downloader, lambda exc: _translate(exc, where, "read"))
        return buffered(stream)  # type: ignore[return-value]

    def download(self, key: str, dest: Path) -> ObjectInfo:
        """Concurrent ranged GETs; the SDK pins every range to the first response's ETag, and
        that response's properties are the info returned (no separate HEAD to race with)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            downloader = self._blob(key).download_blob(
                max_concurrency=self.concurrency, decompress=False
            )
            with dest.open("wb") as out:
                downloader.readinto(out)
        except Exception as exc:
            raise _translate(exc, self._where(key), "download") from None
        return _info(key, downloader.properties)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Blobs under `container/name-prefix`; a prefix without '/' lists that container."""
        container, _, name_prefix = prefix.partition("/")
        try:
            blobs = self.service.get_container_client(container).list_blobs(
                name_starts_with=name_prefix or None
            )
            for props in blobs:
                yield _info(f"{container}/{props.name}", props)
        except Exception as exc:
            raise _translate(exc, self._where(prefix), "list") from None

    def list_folders(self, prefix: str) -> Iterator[str]:
        container, _, name_prefix = prefix.partition("/")
        try:
            entries = self.service.get_container_client(container).walk_blobs(
                name_starts_with=name_prefix or None, delimiter="/"
            )
            for entry in entries:
                if entry.name.endswith("/"):  # a BlobPrefix: a folder, not a blob
                    yield f"{container}/{entry.name}"
        except Exception as exc:
            raise _translate(exc, self._where(prefix), "list") from None

    def sign(self, key: str, expires_seconds: int) -> str:
        """An account-key SAS when a key is configured, else a user-delegation SAS (which needs
        the Storage Blob Delegator role); read-only, capped at 4 hours (SPEC section 2)."""
        container, blob = self._split(key)
        lifetime = max(1, min(int(expires_seconds), MAX_SIGNED_URL_SECONDS))
        now = datetime.now(UTC)
        expiry = now + timedelta(seconds=lifetime)
        sas_args: dict[str, Any] = {
            "account_name": self.account,
            "container_name": container,
            "blob_name": blob,
            "permission": BlobSasPermissions(read=True),
            "start": now - _SAS_CLOCK_SKEW,
            "expiry": expiry,
        }
        account_key = getattr(self.service.credential, "account_key", None)
        try:
            if account_key:
                sas = generate_blob_sas(account_key=account_key, **sas_args)
            else:
                delegation = self.service.get_user_delegation_key(now - _SAS_CLOCK_SKEW, expiry)
                sas = generate_blob_sas(user_delegation_key=delegation, **sas_args)
        except Exception as exc:
            raise _translate(
                exc, self._where(key), "sign a URL (user delegation needs Storage Blob Delegator)"
            ) from None
        return f"{self._blob(key).url}?{sas}"

    def put(self, key: str, data: bytes | Path, content: Content) -> None:
        settings = ContentSettings(content_type=content.type, content_encoding=content.encoding)
        blob = self._blob(key)
        try:
            if isinstance(data, Path):
                with data.open("rb") as stream:
                    blob.upload_blob(
                        stream,
                        length=data.stat().st_size,
                        overwrite=True,
                        content_settings=settings,
                        max_concurrency=self.write_concurrency,
                    )
            else:
                blob.upload_blob(data, overwrite=True, content_settings=settings)
        except Exception as exc:
            raise _translate(exc, self._where(key), "write") from None

    def delete(self, key: str) -> None:
        try:
            self._blob(key).delete_blob()
        except ResourceNotFoundError:
            return
        except Exception as exc:
            raise _translate(exc, self._where(key), "delete") from None
