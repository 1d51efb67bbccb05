"""S3 and S3-compatible storage (AWS, Wasabi, MinIO, ...) on boto3.

Only object calls are made (HeadObject, GetObject, PutObject, multipart uploads, DeleteObject,
and ListObjectsV2 when `list` is asked for), so an integration with partial bucket access works:
no HeadBucket, GetBucketLocation or ListBucket happens behind the pipeline's back. Transient
faults are retried by botocore's own retry modes (bounded, with backoff and jitter); what is left
after them goes through `_translate`, the one table from provider errors to `worker.errors`.
Messages name the integration and the key, never a credential or a signature.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from s3transfer.exceptions import RetriesExceededError
from s3transfer.manager import TransferManager
from s3transfer.subscribers import BaseSubscriber

from worker.config import MAX_SIGNED_URL_SECONDS, Integration, WorkerSettings
from worker.errors import MediaWorkerError, NotFound, PermissionDenied, StorageUnavailable
from worker.safety import region_problem
from worker.storage._stream import MappedStream, buffered
from worker.storage.base import Capability, Content, CorsRule, ObjectInfo, Storage

if TYPE_CHECKING:
    from worker.policy import PolicyRequest, Setup

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
"""Total attempts per request (botocore's standard mode: exponential backoff with jitter)."""
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60

_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchBucket", "NoSuchVersion"}
_DENIED = {
    "AccessDenied",
    "403",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "AccountProblem",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidObjectState",
}
_WRONG_REGION = {"PermanentRedirect", "301", "AuthorizationHeaderMalformed", "IllegalLocation"}
_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
    "PreconditionFailed",
    "412",
}

# --- configuration rules (the `aws`, `wasabi` and `s3` providers) ------------------------------

_BUCKET_CHARS = re.compile(r"^[a-z0-9.-]+$")


def bucket_problem(name: str) -> str | None:
    """The S3 naming rule a bucket name breaks (AWS's rules, which Wasabi and MinIO share)."""
    if not 3 <= len(name) <= 63:
        return "S3 bucket names are 3 to 63 characters long"
    if not _BUCKET_CHARS.match(name):
        return "S3 bucket names use only lowercase letters, digits, dots and hyphens"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return "S3 bucket names begin and end with a lowercase letter or a digit"
    if ".." in name or ".-" in name or "-." in name:
        return "S3 bucket names have no two adjacent dots, nor a dot next to a hyphen"
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return "S3 bucket names are not formatted as IP addresses"
    if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3")):
        return "S3 bucket names do not start with xn-- or sthree- nor end with -s3alias or --ol-s3"
    return None


def wasabi_endpoint(region: str) -> str:
    """Wasabi's documented regional service URLs: `s3.<region>.wasabisys.com`."""
    if region in ("", "us-east-1"):
        return "https://s3.wasabisys.com"
    return f"https://s3.{region}.wasabisys.com"


def _endpoint(integration: Integration) -> str | None:
    """`s3` needs the service's endpoint, `wasabi` derives it from the region, `aws` has its own."""
    provider, endpoint, region = integration.provider, integration.endpoint_url, integration.region
    if region and not endpoint and provider in ("aws", "wasabi"):
        problem = region_problem(region)  # the region becomes part of the endpoint's host name
        if problem:
            raise ValueError(f"field 'region': {region!r}: {problem}")
    if provider == "s3" and not endpoint:
        raise ValueError("field 'endpoint_url': provider 's3' needs the endpoint of the service")
    if provider == "wasabi" and not endpoint:
        if not region:
            raise ValueError("field 'region': a Wasabi integration needs its region")
        return wasabi_endpoint(region)
    return endpoint


# --- errors ----------------------------------------------------------------------------------


def _translate(exc: Exception, where: str, action: str) -> Exception:
    """The one table from boto3/botocore errors to the worker's error tree."""
    if isinstance(exc, MediaWorkerError):
        return exc
    if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, Exception):
        return _translate(exc.__context__, where, action)  # boto3 wraps the real ClientError
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return _translate_client_error(exc, where, action).with_code(code or status)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return PermissionDenied(
            f"{where}: no usable AWS credentials to {action}; set AWS_ACCESS_KEY_ID and"
            " AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, for the worker"
        )
    if isinstance(exc, (BotoConnectionError, HTTPClientError, RetriesExceededError, OSError)):
        return StorageUnavailable(
            f"{where}: could not {action}: the storage service did not answer after"
            f" {MAX_ATTEMPTS} attempts ({type(exc).__name__}); it is retried later"
        )
    if isinstance(exc, BotoCoreError):
        return StorageUnavailable(f"{where}: could not {action} ({type(exc).__name__})")
    return exc


def _translate_client_error(exc: ClientError, where: str, action: str) -> MediaWorkerError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    # The service's own message is left out on purpose: some echo request details.
    if code in _NOT_FOUND or status == 404:
        return NotFound(f"{where} does not exist ({code or status}); check the key and bucket")
    if code in _WRONG_REGION or status == 301:
        return PermissionDenied(
            f"{where}: the service refused to {action} ({code or status}): the bucket is in"
            " another region than the integration's `region`/`endpoint_url`; fix the config"
        )
    if code in _DENIED or status in (401, 403):
        return PermissionDenied(
            f"{where}: access denied to {action} ({code or status}); check the worker's"
            " credentials and that the bucket policy allows it (see `mediaworker policy`)"
        )
    if code in _TRANSIENT or status >= 500 or status in (408, 409, 429):
        return StorageUnavailable(
            f"{where}: the service could not {action} ({code or status}) after"
            f" {MAX_ATTEMPTS} attempts; it is retried later"
        )
    return PermissionDenied(f"{where}: the service refused to {action} ({code or status})")


def client_config(integration: Integration, settings: WorkerSettings) -> Config:
    """Bounded retries with backoff and jitter, timeouts, and path-style for dotted buckets."""
    options: dict[str, Any] = {
        "signature_version": "s3v4",
        "retries": {"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        "connect_timeout": CONNECT_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
        "max_pool_connections": settings.write_concurrency + settings.download_concurrency + 4,
        "s3": {"addressing_style": "path" if integration.path_style else "auto"},
    }
    if integration.provider != "aws":
        # S3-compatible services (Wasabi, older MinIO, Ceph) reject the CRC checksums that
        # recent botocore adds to every request by default.
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    return Config(**options)


class _KnownObject(BaseSubscriber):
    """Hands s3transfer the size and ETag we already have, so it makes no HeadObject of its own
    and pins every ranged GET to that ETag (IfMatch): the download is one consistent version."""

    def __init__(self, size: int, etag: str) -> None:
        self._size = size
        self._etag = etag

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self._size)
        future.meta.provide_object_etag(self._etag)


class S3Storage(Storage):
    """The `aws`, `wasabi` and `s3` providers: one API, their differences are configuration."""

    @classmethod
    def configure(cls, integration: Integration) -> dict[str, Any]:
        kind = "an S3" if integration.provider != "wasabi" else "a Wasabi"
        if not integration.bucket:
            raise ValueError(f"field 'bucket': {kind} integration needs a bucket name")
        problem = bucket_problem(integration.bucket)
        if problem:
            raise ValueError(f"field 'bucket': {integration.bucket!r}: {problem}")
        return {
            **super().configure(integration),
            "endpoint_url": _endpoint(integration),
            # Virtual-host HTTPS does not cover dotted names.
            "path_style": integration.path_style or "." in integration.bucket,
        }

    @classmethod
    def denied_fix(
        cls, integration: Integration, capability: Capability, key: str, exc: Exception
    ) -> str:
        from worker.storage.s3_setup import denied_fix

        return denied_fix(integration, capability, key, getattr(exc, "provider_code", ""))

    @classmethod
    def cors_fix(cls, integration: Integration, origin: str, missing: list[str]) -> str:
        from worker.storage.s3_setup import cors_fix

        return cors_fix(integration, origin, missing)

    @classmethod
    def setup(cls, request: PolicyRequest) -> Setup:
        from worker.storage.s3_setup import s3_setup

        return s3_setup(request)

    def read_cors(self) -> list[CorsRule]:
        """The bucket's CORS rules; needs s3:GetBucketCORS (for `check` only)."""
        action = "read the CORS rules (s3:GetBucketCORS)"
        try:
            response = self.client.get_bucket_cors(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchCORSConfiguration":
                return []
            raise _translate(exc, self._where(""), action) from None
        except Exception as exc:
            raise _translate(exc, self._where(""), action) from None
        return [
            CorsRule(tuple(r.get("AllowedOrigins", [])), tuple(r.get("AllowedMethods", [])))
            for r in response.get("CORSRules", [])
        ]

    def __init__(self, integration: Integration, settings: WorkerSettings) -> None:
        self.integration = integration.name
        self.bucket = integration.bucket
        region = integration.region or ("us-east-1" if integration.endpoint_url else None)
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=integration.endpoint_url,
            region_name=region,
            config=client_config(integration, settings),
        )
        log.debug(
            "integration %r: S3 client for bucket %r at %s (region %s, addressing %s)",
            self.integration,
            self.bucket,
            integration.endpoint_url or "AWS",
            region or "from the environment",
            "path-style" if integration.path_style else "auto",
        )
        # Multipart uploads need parts of at least 5 MiB; ranged downloads may be smaller.
        part = max(settings.download_part_bytes, 5 * 1024**2)
        self.transfer_config = TransferConfig(
            multipart_threshold=part,
            multipart_chunksize=part,
            max_concurrency=settings.download_concurrency,
        )

    def _where(self, key: str) -> str:
        return f"integration {self.integration!r}: s3://{self.bucket}/{key}"

    def _call(self, action: str, key: str, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise _translate(exc, self._where(key), action) from None

    def head(self, key: str) -> ObjectInfo:
        response = self._call("read", key, "head_object", Key=key)
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            etag=str(response.get("ETag", "")).strip('"') or None,
            content_type=response.get("ContentType"),
            content_encoding=response.get("ContentEncoding"),
            last_modified=response.get("LastModified"),
        )

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}"
            )
            return response["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""  # starts past the end: nothing there, as with a file
            raise _translate(exc, self._where(key), "read") from None
        except Exception as exc:
            raise _translate(exc, self._where(key), "read") from None

    def open_read(self, key: str) -> BinaryIO:
        body = self._call("read", key, "get_object", Key=key)["Body"]
        where = self._where(key)
        stream = MappedStream(body, lambda exc: _translate(exc, where, "read"), body.close)
        return buffered(stream)  # type: ignore[return-value]

    def download(self, key: str, dest: Path) -> ObjectInfo:
        """Concurrent ranged GETs (s3transfer) pinned to the ETag of the version we headed."""
        info = self.head(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        raw_etag = f'"{info.etag}"' if info.etag else ""
        try:
            with TransferManager(self.client, self.transfer_config) as manager:
                future = manager.download(
                    self.bucket, key, str(dest), subscribers=[_KnownObject(info.size, raw_etag)]
                )
                future.result()
        except Exception as exc:
            raise _translate(exc, self._where(key), "download") from None
        return info

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix)
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"],
                        size=int(item["Size"]),
                        etag=str(item.get("ETag", "")).strip('"') or None,
                        last_modified=item.get("LastModified"),
                    )
        except Exception as exc:
            raise _translate(exc, self._where(prefix), "list (s3:ListBucket)") from None

    def list_folders(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/")
        try:
            for page in pages:
                for entry in page.get("CommonPrefixes", []):
                    yield entry["Prefix"]
        except Exception as exc:
            raise _translate(exc, self._where(prefix), "list (s3:ListBucket)") from None

    def sign(self, key: str, expires_seconds: int) -> str:
        """A presigned GET; its lifetime is capped at 4 hours (SPEC section 2)."""
        lifetime = max(1, min(int(expires_seconds), MAX_SIGNED_URL_SECONDS))
        try:
            return str(
                self.client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=lifetime
                )
            )
        except Exception as exc:
            raise _translate(exc, self._where(key), "sign a URL") from None

    def put(self, key: str, data: bytes | Path, content: Content) -> None:
        extra: dict[str, str] = {"ContentType": content.type}
        if content.encoding:
            extra["ContentEncoding"] = content.encoding
        if isinstance(data, Path):
            # upload_file switches to concurrent multipart uploads for large files.
            try:
                self.client.upload_file(
                    str(data), self.bucket, key, ExtraArgs=extra, Config=self.transfer_config
                )
            except Exception as exc:
                raise _translate(exc, self._where(key), "write") from None
        else:
            self._call("write", key, "put_object", Key=key, Body=data, **extra)

    def delete(self, key: str) -> None:
        self._call("delete", key, "delete_object", Key=key)
