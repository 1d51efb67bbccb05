"""`mediaworker check`: a preflight that tries each capability for real and names the fix.

What a platform's troubleshooting pages have a customer do by hand, in one command: read a sample
key, write and delete a probe object under the prefix (never for a read-only integration), list
(needed for MIRAX slides), sign a URL and fetch it without credentials, and read the CORS rules
to say whether browsers at an origin can GET (and PUT) renditions. Every failed line carries the
fix, in the provider's terms, from its backend (`denied_fix`, `cors_fix`): the policy action or
role that is missing, the key that was rejected, or the CORS rule to add.
"""

from __future__ import annotations

import logging
import posixpath
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from worker.config import Integration, Settings
from worker.errors import MediaWorkerError, NotFound, PermissionDenied
from worker.layout import probe_key
from worker.policy import cors_methods
from worker.storage import open_storage, open_writable
from worker.storage.base import Capability, CorsRule, ReadableStorage, Storage
from worker.storage.registry import backend_class

log = logging.getLogger(__name__)

SIGN_SECONDS = 300
FETCH_TIMEOUT = 15


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


class _Fixes:
    """The fix for a refused capability, in the provider's own terms (from its backend)."""

    def __init__(self, integration: Integration) -> None:
        self.integ = integration
        self.backend = backend_class(integration.provider)

    def denied(self, exc: Exception, capability: Capability, key: str) -> str:
        return self.backend.denied_fix(self.integ, capability, key, exc)

    def cors(self, origin: str, missing: list[str]) -> str:
        return self.backend.cors_fix(self.integ, origin, missing)


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
    lines.append(_check_cors(storage, integration, origin, fixes))
    return lines


def _check_list(
    storage: ReadableStorage, integ: Integration, fixes: _Fixes, key: str | None
) -> tuple[CheckLine, str | None]:
    # The sample's own folder, as a MIRAX slide's folder is listed; else the bucket's root.
    folder = posixpath.dirname(key) if key else ""
    where = folder + "/" if folder else fixes.backend.listing_root(integ)
    try:
        sample = None
        for info in storage.list(where):
            if not posixpath.basename(info.key).startswith(".mediaworker-check-"):
                sample = info.key
                break
    except PermissionDenied as exc:
        fix = fixes.denied(exc, "list", where)
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
        fix = fixes.denied(exc, "read", key)
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
        fix = fixes.denied(exc, "write", probe)
        return CheckLine("write", Outcome.FAILED, f"writing under {integ.prefix}/ was refused", fix)
    except MediaWorkerError as exc:
        return CheckLine("write", Outcome.FAILED, str(exc), "check the endpoint and network")
    try:
        storage.delete(probe)
    except PermissionDenied as exc:
        fix = fixes.denied(exc, "delete", probe)
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
        fix = fixes.denied(exc, "sign", key)
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
    detail = f"the signed URL answered HTTP {status}"
    # The URL carries the signing credentials' rights: they must be allowed to read the key.
    fix = f"{fixes.denied(PermissionDenied(detail), 'read', key)}; the worker's clock must be right"
    return CheckLine("sign", Outcome.FAILED, detail, fix)


# --- CORS ------------------------------------------------------------------------------------


def _origin_matches(pattern: str, origin: str) -> bool:
    if pattern == "*":
        return True
    if "*" in pattern:
        head, _, tail = pattern.partition("*")
        return origin.startswith(head) and origin.endswith(tail)
    return pattern.rstrip("/").lower() == origin.rstrip("/").lower()


def allowed_methods(rules: list[CorsRule], origin: str) -> set[str]:
    methods: set[str] = set()
    for rule in rules:
        if any(_origin_matches(p, origin) for p in rule.origins):
            methods |= {m.upper() for m in rule.methods}
    return methods


def _check_cors(
    storage: ReadableStorage, integ: Integration, origin: str, fixes: _Fixes
) -> CheckLine:
    try:
        rules = storage.read_cors()
    except NotImplementedError:
        detail = f"a {integ.provider} integration has no CORS rules"
        return CheckLine("cors", Outcome.SKIPPED, detail)
    except PermissionDenied as exc:
        return CheckLine("cors", Outcome.FAILED, str(exc), fixes.cors(origin, ["GET"]))
    except MediaWorkerError as exc:
        return CheckLine("cors", Outcome.FAILED, str(exc), "check the endpoint and network")
    needed = [m for m in cors_methods(origin, integ.readonly) if m != "HEAD"]
    allowed = allowed_methods(rules, origin)
    missing = [m for m in needed if m not in allowed]
    if not rules:
        return CheckLine(
            "cors",
            Outcome.FAILED,
            "no CORS rules: browsers cannot load renditions",
            fixes.cors(origin, needed),
        )
    if missing:
        can = ", ".join(sorted(allowed)) or "nothing"
        detail = f"browsers at {origin} can {can}; {', '.join(missing)} not allowed"
        return CheckLine("cors", Outcome.FAILED, detail, fixes.cors(origin, missing))
    verb = "GET" if integ.readonly else "GET and PUT"
    return CheckLine("cors", Outcome.OK, f"browsers at {origin} can {verb} the renditions")


def all_ok(lines: list[CheckLine]) -> bool:
    return all(line.outcome != Outcome.FAILED for line in lines)
