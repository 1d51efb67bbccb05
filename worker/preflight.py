"""`mediaworker check`: a preflight that tries each capability for real and names the fix.

What a platform's troubleshooting pages have a customer do by hand, in one command: read a sample
key, write and delete a probe object under the prefix (never for a read-only integration), list
(needed for MIRAX slides), sign a URL and fetch it without credentials, and read the CORS rules
to say whether browsers at an origin can GET (and PUT) renditions. Every failed line carries the
fix: the policy action or Azure role that is missing, or the CORS rule to add.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from worker.config import Integration, Provider, Settings
from worker.errors import MediaWorkerError, NotFound, PermissionDenied
from worker.layout import probe_key
from worker.policy import (
    AZURE_CONTRIBUTOR,
    AZURE_DELEGATOR,
    AZURE_READER,
    cors_methods,
    s3_cors,
)
from worker.storage import open_storage, open_writable
from worker.storage.base import ReadableStorage, Storage

log = logging.getLogger(__name__)

SIGN_SECONDS = 300
FETCH_TIMEOUT = 15
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthenticationFailed",
    "InvalidClientTokenId",
}


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class CheckLine:
    capability: str
    outcome: Outcome
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "capability": self.capability,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "fix": self.fix,
        }


Fetcher = Callable[[str, str, dict[str, str]], tuple[int, dict[str, str]]]
"""(method, url, headers) -> (status, response headers); the network side, replaceable."""


def http_fetch(method: str, url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:
            response.read(1)
            return int(getattr(response, "status", 200) or 200), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers or {})


def error_code(exc: BaseException) -> str:
    """The provider's error code behind a translated error (the SDK error is its context)."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code"):
            return str(response["Error"]["Code"])
        code = getattr(seen, "error_code", None)
        if code:
            return str(getattr(code, "value", code))
        seen = seen.__cause__ or seen.__context__
    return ""


def _azure_shared_key() -> bool:
    """Whether the worker signs Azure requests with the account key (the chain's first two)."""
    return bool(
        os.environ.get("AZURE_STORAGE_CONNECTION_STRING") or os.environ.get("AZURE_STORAGE_KEY")
    )


class _Fixes:
    """The fix for a denied capability, in the provider's own terms."""

    def __init__(self, integration: Integration) -> None:
        self.integ = integration
        self.s3 = integration.provider.is_s3
        self.azure = integration.provider == Provider.AZURE
        self.gcs = integration.provider == Provider.GCS

    def credentials(self, code: str) -> str:
        if self.azure:
            return (
                f"the credentials were rejected ({code}): set AZURE_STORAGE_CONNECTION_STRING or"
                " AZURE_STORAGE_KEY to the account's current key, or sign the worker in"
            )
        return (
            f"the credentials were rejected ({code}): set AWS_ACCESS_KEY_ID and"
            " AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to a valid key for this bucket's account"
        )

    def denied(self, exc: BaseException, action: str, resource: str, role: str) -> str:
        code = error_code(exc)
        if code in _BAD_CREDENTIALS or (self.azure and _azure_shared_key() and code != ""):
            # With an account key, roles play no part: a refusal means the key is wrong.
            return self.credentials(code)
        policy = f"`mediaworker policy {self.integ.name}` prints it"
        if self.gcs:
            from worker.storage.gcs_setup import denied_fix

            return denied_fix(str(exc))
        if self.azure:
            return f"assign the worker the '{role}' role on container {self.integ.azure_container}"
        if self.s3:
            return f"allow {action} on {resource} in the bucket policy ({policy})"
        return f"give the worker's user permission to {action.split(':')[-1].lower()} {resource}"

    def object_arn(self, key: str) -> str:
        folder = posixpath.dirname(key)
        return f"arn:aws:s3:::{self.integ.bucket}/{folder + '/' if folder else ''}*"

    def prefix_arn(self) -> str:
        return f"arn:aws:s3:::{self.integ.bucket}/{self.integ.prefix}/*"


def run_checks(
    integration: Integration,
    settings: Settings,
    key: str | None = None,
    origin: str = "*",
    fetch: Fetcher = http_fetch,
) -> list[CheckLine]:
    """Every capability in order; a failure never stops the checks after it."""
    storage = open_storage(integration, settings)
    fixes = _Fixes(integration)
    lines: list[CheckLine] = []
    listed_line, listed_key = _check_list(storage, integration, fixes, key)
    sample = key or listed_key
    lines.append(_check_read(storage, sample, fixes))
    lines.append(_check_write(integration, settings, fixes))
    lines.append(listed_line)
    lines.append(_check_sign(storage, sample, fixes, fetch))
    lines.append(_check_cors(storage, integration, origin, fetch, sample))
    return lines


def _check_list(
    storage: ReadableStorage, integ: Integration, fixes: _Fixes, key: str | None
) -> tuple[CheckLine, str | None]:
    # The sample's own folder, as a MIRAX slide's folder is listed; else the bucket's root.
    folder = posixpath.dirname(key) if key else ""
    if folder:
        where = folder + "/"
    else:
        where = integ.azure_container + "/" if integ.provider == Provider.AZURE else ""
    try:
        sample = None
        for info in storage.list(where):
            if not posixpath.basename(info.key).startswith(".mediaworker-check-"):
                sample = info.key
                break
    except PermissionDenied as exc:
        fix = fixes.denied(
            exc,
            "s3:ListBucket",
            f"arn:aws:s3:::{integ.bucket} (condition s3:prefix on the item folders)",
            AZURE_READER,
        )
        line = CheckLine(
            "list",
            Outcome.FAILED,
            "listing was refused; needed only for MIRAX slides (NAME.mrxs + NAME/)",
            fix,
        )
        return line, None
    except MediaWorkerError as exc:
        return CheckLine("list", Outcome.FAILED, str(exc), "check the endpoint and bucket"), None
    found = f"first key {sample}" if sample else "the bucket is empty"
    return CheckLine("list", Outcome.OK, f"listing works ({found}); MIRAX slides can be read"), (
        sample
    )


def _check_read(storage: ReadableStorage, key: str | None, fixes: _Fixes) -> CheckLine:
    if not key:
        return CheckLine(
            "read", Outcome.SKIPPED, "no sample key (listing gave none)", "pass --key KEY"
        )
    try:
        # GET first: a refused HEAD has no body, so it cannot say which error it was.
        storage.read_range(key, 0, 1024)
        info = storage.head(key)
    except NotFound:
        return CheckLine("read", Outcome.FAILED, f"{key} does not exist", "pass --key with an item")
    except PermissionDenied as exc:
        fix = fixes.denied(exc, "s3:GetObject", fixes.object_arn(key), AZURE_READER)
        return CheckLine("read", Outcome.FAILED, f"reading {key} was refused", fix)
    except MediaWorkerError as exc:
        return CheckLine("read", Outcome.FAILED, str(exc), "check the endpoint and network")
    return CheckLine("read", Outcome.OK, f"read {key} ({info.size} bytes)")


def _check_write(integ: Integration, settings: Settings, fixes: _Fixes) -> CheckLine:
    if integ.readonly:
        return CheckLine("write", Outcome.SKIPPED, "read-only integration: nothing is written")
    storage: Storage = open_writable(integ, settings)
    probe = probe_key(integ.prefix, uuid.uuid4().hex[:12])
    try:
        storage.write(probe, b"mediaworker check\n", "text/plain")
    except PermissionDenied as exc:
        fix = fixes.denied(exc, "s3:PutObject", fixes.prefix_arn(), AZURE_CONTRIBUTOR)
        return CheckLine("write", Outcome.FAILED, f"writing under {integ.prefix}/ was refused", fix)
    except MediaWorkerError as exc:
        return CheckLine("write", Outcome.FAILED, str(exc), "check the endpoint and network")
    try:
        storage.delete(probe)
    except PermissionDenied as exc:
        fix = fixes.denied(exc, "s3:DeleteObject", fixes.prefix_arn(), AZURE_CONTRIBUTOR)
        detail = f"wrote {probe} but deleting it was refused (remove it by hand)"
        return CheckLine("write", Outcome.FAILED, detail, fix)
    return CheckLine("write", Outcome.OK, f"wrote and deleted {probe}")


def _check_sign(
    storage: ReadableStorage, key: str | None, fixes: _Fixes, fetch: Fetcher
) -> CheckLine:
    if not key:
        return CheckLine("sign", Outcome.SKIPPED, "no sample key to sign", "pass --key KEY")
    try:
        url = storage.sign(key, SIGN_SECONDS)
    except PermissionDenied as exc:
        fix = fixes.denied(exc, "s3:GetObject", fixes.object_arn(key), AZURE_DELEGATOR)
        return CheckLine("sign", Outcome.FAILED, "signing a URL was refused", fix)
    try:
        status, _ = fetch("GET", url, {"Range": "bytes=0-0"})
    except OSError as exc:
        return CheckLine(
            "sign",
            Outcome.FAILED,
            f"the signed URL could not be fetched ({type(exc).__name__})",
            "browsers must reach the storage endpoint; check endpoint_url and the network",
        )
    if status in (200, 206):
        return CheckLine("sign", Outcome.OK, f"a signed URL for {key} fetches without credentials")
    fix = (
        "the signing credentials must be allowed to read the key (s3:GetObject / the Reader"
        " role), and the worker's clock must be right"
    )
    return CheckLine("sign", Outcome.FAILED, f"the signed URL answered HTTP {status}", fix)


# --- CORS ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorsRuleView:
    origins: tuple[str, ...]
    methods: tuple[str, ...]


def _origin_matches(pattern: str, origin: str) -> bool:
    if pattern == "*":
        return True
    if "*" in pattern:
        head, _, tail = pattern.partition("*")
        return origin.startswith(head) and origin.endswith(tail)
    return pattern.rstrip("/").lower() == origin.rstrip("/").lower()


def allowed_methods(rules: list[CorsRuleView], origin: str) -> set[str]:
    methods: set[str] = set()
    for rule in rules:
        if any(_origin_matches(p, origin) for p in rule.origins):
            methods |= {m.upper() for m in rule.methods}
    return methods


def read_cors_rules(storage: ReadableStorage, integ: Integration) -> list[CorsRuleView]:
    """The bucket's (S3, GCS) or the blob service's (Azure) CORS rules; [] when none are set."""
    inner: Any = getattr(storage, "_inner", storage)
    if integ.provider == Provider.GCS:
        from worker.storage.gcs_setup import read_cors

        return [CorsRuleView(origins, methods) for origins, methods in read_cors(inner)]
    if integ.provider.is_s3:
        from botocore.exceptions import ClientError

        try:
            response = inner.client.get_bucket_cors(Bucket=integ.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchCORSConfiguration":
                return []
            raise PermissionDenied(
                f"could not read the CORS rules ({error_code(exc)}); s3:GetBucketCORS is needed"
                " for this check only"
            ) from exc
        return [
            CorsRuleView(tuple(r.get("AllowedOrigins", [])), tuple(r.get("AllowedMethods", [])))
            for r in response.get("CORSRules", [])
        ]
    if integ.provider != Provider.AZURE:
        return []
    properties = inner.service.get_service_properties()
    return [
        CorsRuleView(_split_csv(rule.allowed_origins), _split_csv(rule.allowed_methods))
        for rule in properties.get("cors") or []
    ]


def _split_csv(value: str | list[str]) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(v.strip() for v in items if v.strip())


def _cors_fix(integ: Integration, origin: str, missing: list[str]) -> str:
    methods = " ".join(cors_methods(origin, integ.readonly))
    if integ.provider == Provider.GCS:
        from worker.storage.gcs_setup import cors_fix

        return cors_fix(integ.bucket, origin, integ.readonly)
    if integ.provider == Provider.AZURE:
        return (
            f"az storage cors add --services b --account-name {integ.bucket} --origins {origin}"
            f" --methods {methods} OPTIONS --allowed-headers '*' --exposed-headers '*'"
            " --max-age 3600"
        )
    rules = json.dumps(s3_cors(origin, integ.readonly), separators=(",", ":"))
    return (
        f"add a CORS rule allowing {', '.join(missing)} from {origin}: aws s3api put-bucket-cors"
        f" --bucket {integ.bucket} --cors-configuration '{rules}'"
    )


def _check_cors(
    storage: ReadableStorage, integ: Integration, origin: str, fetch: Fetcher, key: str | None
) -> CheckLine:
    if integ.provider == Provider.LOCAL:
        return CheckLine("cors", Outcome.SKIPPED, "a local folder has no CORS rules")
    try:
        rules = read_cors_rules(storage, integ)
    except PermissionDenied as exc:
        return CheckLine("cors", Outcome.FAILED, str(exc), _cors_fix(integ, origin, ["GET"]))
    except MediaWorkerError as exc:
        return CheckLine("cors", Outcome.FAILED, str(exc), "check the endpoint and network")
    except Exception as exc:  # the SDK's own error for the service-properties call
        code = error_code(exc) or type(exc).__name__
        return CheckLine(
            "cors",
            Outcome.FAILED,
            f"could not read the CORS rules ({code})",
            "the account key or an Owner/Contributor role on the account can read them",
        )
    needed = [m for m in cors_methods(origin, integ.readonly) if m != "HEAD"]
    allowed = allowed_methods(rules, origin)
    missing = [m for m in needed if m not in allowed]
    if not rules:
        return CheckLine(
            "cors",
            Outcome.FAILED,
            "no CORS rules: browsers cannot load renditions",
            _cors_fix(integ, origin, needed),
        )
    if missing:
        can = ", ".join(sorted(allowed)) or "nothing"
        detail = f"browsers at {origin} can {can}; {', '.join(missing)} not allowed"
        return CheckLine("cors", Outcome.FAILED, detail, _cors_fix(integ, origin, missing))
    verb = "GET" if integ.readonly else "GET and PUT"
    return CheckLine("cors", Outcome.OK, f"browsers at {origin} can {verb} the renditions")


def all_ok(lines: list[CheckLine]) -> bool:
    return all(line.outcome != Outcome.FAILED for line in lines)
