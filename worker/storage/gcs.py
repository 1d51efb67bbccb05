"""Google Cloud Storage on google-cloud-storage (the JSON API).

Credentials come only from Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`
(a service-account key file), the attached service account or workload identity, or the
`gcloud auth application-default login` user. `endpoint_url` points the client at another
endpoint (an emulator, a private endpoint); the same credentials are sent there.

Only object calls are made while processing (get, media download, insert, delete; `list` only
for the folder of a MIRAX or DICOM slide). Transient faults (429, 5xx, resets, a token endpoint
that does not answer) are retried by the library's `Retry` with exponential backoff and jitter,
bounded by `RETRY_SECONDS`; what is left goes through `_translate`, the one table from library
errors to `worker.errors`. A refusal names the IAM permission the request needed.

Bytes are read as stored: every download asks for the raw object (`Accept-Encoding: gzip`), so
`audio_peaks.gz`, stored with `Content-Encoding: gzip`, is not transcoded by the service nor
decompressed by the client; its size matches `head` and byte ranges stay meaningful.

Signed URLs are V4. With a service-account key (a key file) they are signed locally with its
private key; otherwise (workload identity, the VM's service account, a user login) the library
asks the IAM Credentials API's `signBlob` for the signature, which needs the worker's service
account to hold `iam.serviceAccounts.signBlob` on itself (the Service Account Token Creator role).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import google.auth
import requests
from google.api_core import exceptions as api
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth
from google.auth.credentials import Credentials, Signing
from google.auth.transport.requests import Request as AuthRequest
from google.cloud import storage
from google.cloud.storage.fileio import BlobReader
from google.cloud.storage.retry import DEFAULT_RETRY
from google.resumable_media import DataCorruption, InvalidResponse

from worker.config import MAX_SIGNED_URL_SECONDS, Integration, WorkerSettings
from worker.errors import MediaWorkerError, NotFound, PermissionDenied, StorageUnavailable
from worker.storage._stream import MappedStream, buffered
from worker.storage.base import Capability, Content, CorsRule, ObjectInfo, Storage

if TYPE_CHECKING:
    from worker.policy import PolicyRequest, Setup

log = logging.getLogger(__name__)

RETRY_SECONDS = 60.0
"""Total time spent retrying one request (backoff from 0.5 s doubling to 8 s, with jitter)."""
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
_CHUNK = 256 * 1024
"""Resumable upload chunks are multiples of 256 KiB (the service's rule)."""

GET = "storage.objects.get"
CREATE = "storage.objects.create"
DELETE = "storage.objects.delete"
LIST = "storage.objects.list"
SIGN_BLOB = "iam.serviceAccounts.signBlob"

_BUCKET_CHARS = re.compile(r"^[a-z0-9._-]+$")
_GOOGLE_LOOKALIKE = re.compile(r"g[o0][o0]g[l1]e")


def bucket_problem(name: str) -> str | None:
    """The Cloud Storage naming rule a bucket name breaks (its documented bucket-name rules)."""
    if not _BUCKET_CHARS.match(name):
        return "GCS bucket names use only lowercase letters, digits, dashes, underscores and dots"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return "GCS bucket names begin and end with a lowercase letter or a digit"
    if not 3 <= len(name) <= (222 if "." in name else 63):
        return "GCS bucket names are 3 to 63 characters long (up to 222 with dots)"
    if any(not 1 <= len(part) <= 63 for part in name.split(".")):
        return "GCS bucket names have dot-separated parts of 1 to 63 characters"
    if re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,3}){3}", name):
        return "GCS bucket names are not IP addresses in dotted-decimal notation"
    if name.startswith("goog") or _GOOGLE_LOOKALIKE.search(name):
        return "GCS bucket names do not start with 'goog' nor contain 'google' or a look-alike"
    return None


_NO_CREDENTIALS = (
    "no usable Google credentials (Application Default Credentials): set"
    " GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, attach a service account"
    " (workload identity), or run `gcloud auth application-default login`"
)


def _translate(exc: Exception, where: str, action: str, permission: str) -> Exception:
    """The one table from google-cloud-storage / google-auth errors to the worker's tree; the
    provider's code kept is the HTTP status (the JSON API's reasons are not stable)."""
    if isinstance(exc, MediaWorkerError):
        return exc
    status = _status(exc)
    translated = _translated(exc, status, where, action, permission)
    if isinstance(translated, MediaWorkerError):
        translated.with_code(status)
    return translated


def _translated(exc: Exception, status: int, where: str, action: str, permission: str) -> Exception:
    if isinstance(exc, auth.DefaultCredentialsError):
        return PermissionDenied(f"{where}: {_NO_CREDENTIALS}")
    # The service's own message is left out on purpose: it can echo request details.
    if status == 404:
        return NotFound(f"{where} does not exist (404); check the key and bucket")
    if status in (401, 403):
        return PermissionDenied(
            f"{where}: access denied to {action} ({status}): the worker's identity needs"
            f" {permission} on the bucket (see `mediaworker policy`)"
        )
    if isinstance(exc, auth.RefreshError) and not getattr(exc, "retryable", False):
        return PermissionDenied(f"{where}: the credentials were refused; {_NO_CREDENTIALS}")
    transient = (
        api.RetryError,
        auth.TransportError,
        auth.RefreshError,
        requests.RequestException,
        DataCorruption,
        OSError,
    )
    if status >= 500 or status in (408, 409, 412, 429) or isinstance(exc, transient):
        return StorageUnavailable(
            f"{where}: the service could not {action} ({status or type(exc).__name__}) after"
            f" {RETRY_SECONDS:.0f} s of retries; it is retried later"
        )
    if status:
        return PermissionDenied(f"{where}: the service refused to {action} ({status})")
    return exc


def _status(exc: Exception) -> int:
    if isinstance(exc, api.RetryError) and isinstance(exc.cause, Exception):
        return _status(exc.cause)  # the last attempt's answer
    if isinstance(exc, api.GoogleAPICallError):
        return int(exc.code or 0)
    if isinstance(exc, InvalidResponse):
        return int(getattr(exc.response, "status_code", 0) or 0)
    return 0


SCOPES = (
    "https://www.googleapis.com/auth/devstorage.read_write",
    "https://www.googleapis.com/auth/iam",  # signBlob, when signing without a key file
)


def adc_credentials(integration: Integration) -> Credentials:
    """Application Default Credentials (see the module's docstring); never from the config."""
    try:
        credentials, _ = google.auth.default(scopes=list(SCOPES))
    except auth.DefaultCredentialsError:
        raise PermissionDenied(f"integration {integration.name!r}: {_NO_CREDENTIALS}") from None
    return credentials


def gcs_client(integration: Integration, credentials: Credentials) -> storage.Client:
    """A client at `endpoint_url` when one is set, else Google's endpoint."""
    options = (
        ClientOptions(api_endpoint=integration.endpoint_url) if integration.endpoint_url else None
    )
    # project=None: object calls need no project, and none is looked up from the metadata server.
    return storage.Client(project=None, credentials=credentials, client_options=options)


def _info(blob: storage.Blob) -> ObjectInfo:
    return ObjectInfo(
        key=blob.name,
        size=int(blob.size or 0),
        etag=str(blob.etag or "").strip('"') or None,
        content_type=blob.content_type,
        content_encoding=blob.content_encoding,
        last_modified=blob.updated,
    )


class GcsStorage(Storage):
    @classmethod
    def configure(cls, integration: Integration) -> dict[str, Any]:
        if not integration.bucket:
            raise ValueError("field 'bucket': a GCS integration needs a bucket name")
        problem = bucket_problem(integration.bucket)
        if problem:
            raise ValueError(f"field 'bucket': {integration.bucket!r}: {problem}")
        if integration.region:
            raise ValueError("field 'region': a GCS bucket has its own location; remove it")
        endpoint = integration.endpoint_url
        if endpoint and not endpoint.startswith(("http://", "https://")):
            raise ValueError("field 'endpoint_url': it must be an http:// or https:// URL")
        return super().configure(integration)

    @classmethod
    def denied_fix(
        cls, integration: Integration, capability: Capability, key: str, exc: Exception
    ) -> str:
        from worker.storage.gcs_setup import denied_fix

        return denied_fix(str(exc))  # the backend's message names the IAM permission

    @classmethod
    def cors_fix(cls, integration: Integration, origin: str, missing: list[str]) -> str:
        from worker.storage.gcs_setup import cors_fix

        return cors_fix(integration.bucket, origin, integration.readonly)

    @classmethod
    def setup(cls, request: PolicyRequest) -> Setup:
        from worker.storage.gcs_setup import gcs_setup

        return gcs_setup(request)

    def read_cors(self) -> list[CorsRule]:
        """The bucket's CORS rules; needs storage.buckets.get (for `check` only)."""
        try:
            bucket = self.client.get_bucket(self.bucket.name, timeout=self.timeout)
        except Exception as exc:
            raise self._fail(exc, "", "read the CORS rules", "storage.buckets.get") from None
        return [
            CorsRule(tuple(r.get("origin", [])), tuple(r.get("method", [])))
            for r in bucket.cors or []
        ]

    def __init__(self, integration: Integration, settings: WorkerSettings) -> None:
        self.integration = integration.name
        self.credentials = adc_credentials(integration)
        self.client = gcs_client(integration, self.credentials)
        self.bucket = self.client.bucket(integration.bucket)  # a handle: no request
        self.endpoint = integration.endpoint_url
        self.part = max(_CHUNK, settings.download_part_bytes // _CHUNK * _CHUNK)
        self.concurrency = settings.download_concurrency
        self.retry = DEFAULT_RETRY.with_delay(initial=0.5, maximum=8.0).with_timeout(RETRY_SECONDS)
        self.timeout = (CONNECT_TIMEOUT, READ_TIMEOUT)

    def _where(self, key: str) -> str:
        return f"integration {self.integration!r}: gs://{self.bucket.name}/{key}"

    def _fail(self, exc: Exception, key: str, action: str, permission: str) -> Exception:
        return _translate(exc, self._where(key), action, permission)

    def _get(self, key: str, action: str) -> storage.Blob:
        """The object's metadata (one JSON API GET); `NotFound` when absent."""
        try:
            blob = self.bucket.get_blob(key, retry=self.retry, timeout=self.timeout)
        except Exception as exc:
            raise self._fail(exc, key, action, GET) from None
        if blob is None:
            missing = f"{self._where(key)} does not exist (404); check the key and bucket"
            raise NotFound(missing).with_code(404)
        return blob

    def head(self, key: str) -> ObjectInfo:
        return _info(self._get(key, "read"))

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            return bytes(
                self.bucket.blob(key).download_as_bytes(
                    start=start,
                    end=start + length - 1,
                    raw_download=True,
                    retry=self.retry,
                    timeout=self.timeout,
                )
            )
        except api.RequestRangeNotSatisfiable:
            return b""  # starts past the end: nothing there, as with a file
        except Exception as exc:
            raise self._fail(exc, key, "read", GET) from None

    def open_read(self, key: str) -> BinaryIO:
        """Reads of `part` bytes each; the first response's generation pins the later ones, so
        a large object replaced mid-read never mixes two versions."""
        reader = BlobReader(
            self.bucket.blob(key), chunk_size=self.part, retry=self.retry, raw_download=True
        )
        where = self._where(key)
        stream = MappedStream(reader, lambda exc: _translate(exc, where, "read", GET), reader.close)
        return buffered(stream)  # type: ignore[return-value]

    def download(self, key: str, dest: Path) -> ObjectInfo:
        """Concurrent ranged reads of the generation we headed (a replaced object fails the
        read as transient rather than mixing versions)."""
        blob = self._get(key, "download")
        info = _info(blob)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"")
        starts = range(0, info.size, self.part)
        try:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="gcs-get") as pool:
                list(pool.map(lambda start: self._download_part(blob, dest, start), starts))
        except Exception as exc:
            raise self._fail(exc, key, "download", GET) from None
        return info

    def _download_part(self, blob: storage.Blob, dest: Path, start: int) -> None:
        end = min(start + self.part, int(blob.size or 0)) - 1
        pinned = {"if_generation_match": blob.generation, "raw_download": True}
        with dest.open("r+b") as out:
            out.seek(start)
            blob.download_to_file(
                out, start=start, end=end, retry=self.retry, timeout=self.timeout, **pinned
            )

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            for blob in self.client.list_blobs(
                self.bucket, prefix=prefix, retry=self.retry, timeout=self.timeout
            ):
                yield _info(blob)
        except Exception as exc:
            raise self._fail(exc, prefix, "list", LIST) from None

    def list_folders(self, prefix: str) -> Iterator[str]:
        try:
            blobs = self.client.list_blobs(
                self.bucket, prefix=prefix, delimiter="/", retry=self.retry, timeout=self.timeout
            )
            for page in blobs.pages:
                yield from sorted(page.prefixes)
        except Exception as exc:
            raise self._fail(exc, prefix, "list", LIST) from None

    def sign(self, key: str, expires_seconds: int) -> str:
        """A V4 signed GET, capped at 4 hours (SPEC section 2): with the key of a key file, else
        through IAM signBlob (see the module's docstring)."""
        lifetime = max(1, min(int(expires_seconds), MAX_SIGNED_URL_SECONDS))
        options: dict[str, Any] = {
            "version": "v4",
            "method": "GET",
            "expiration": timedelta(seconds=lifetime),
        }
        if self.endpoint:
            options["api_access_endpoint"] = self.endpoint
        try:
            if not isinstance(self.credentials, Signing):
                options.update(self._sign_blob_options())
            return str(self.bucket.blob(key).generate_signed_url(**options))
        except Exception as exc:
            raise self._fail(exc, key, "sign a URL", SIGN_BLOB) from None

    def _sign_blob_options(self) -> dict[str, str]:
        """No private key: the service account's e-mail and a token, for IAM signBlob."""
        if not self.credentials.valid:
            self.credentials.refresh(AuthRequest())
        email = getattr(self.credentials, "service_account_email", None)
        if not email or not self.credentials.token:
            raise PermissionDenied(
                f"integration {self.integration!r}: signing a URL needs a service account (a key"
                " file in GOOGLE_APPLICATION_CREDENTIALS, or an attached service account with"
                " roles/iam.serviceAccountTokenCreator on itself); a user login cannot sign"
            )
        return {"service_account_email": str(email), "access_token": str(self.credentials.token)}

    def put(self, key: str, data: bytes | Path, content: Content) -> None:
        """One request up to 8 MiB; larger files go as a resumable upload in `part` chunks.
        Retried although unconditional: writing the same output twice is harmless here."""
        blob = self.bucket.blob(key, chunk_size=self.part)
        blob.content_encoding = content.encoding
        options = {"content_type": content.type, "retry": self.retry, "timeout": self.timeout}
        try:
            if isinstance(data, Path):
                blob.upload_from_filename(str(data), **options)
            else:
                blob.upload_from_string(data, **options)
        except Exception as exc:
            needed = f"{CREATE} (and {DELETE} to replace an existing object)"
            raise self._fail(exc, key, "write", needed) from None

    def delete(self, key: str) -> None:
        try:
            self.bucket.blob(key).delete(retry=self.retry, timeout=self.timeout)
        except api.NotFound:
            return
        except Exception as exc:
            raise self._fail(exc, key, "delete", DELETE) from None
