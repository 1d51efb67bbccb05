"""The trust boundary (SPEC section 11): what hostile bucket content may not do to the host.

- Names found inside a source (a MIRAX index's data files, ...) are plain file names of the
  source's own folder, or the item is refused (`plain_file_name`).
- What reaches a user (a result message) never reveals the host: scratch paths are cut out
  (`scrub_host`), and our own faults become `internal_error` with a short id that the log line
  holding the traceback also carries (`internal_error`).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from worker.errors import InternalError

_PLAIN_FILE = re.compile(r"[^/\\\x00-\x1f\x7f]{1,255}")


def plain_file_name(name: str) -> bool:
    """Whether `name` is one file of the folder it is read from: no folder, no `..`, not
    absolute, no URL (`file:`, `http:`: a colon cannot name a folder on its own, but a scheme
    is never a file name a scanner writes), no control character."""
    return (
        bool(_PLAIN_FILE.fullmatch(name))
        and name not in (".", "..")
        and ":" not in name
        and name.strip() == name
    )


def internal_error(log: logging.Logger, doing: str) -> InternalError:
    """Log the exception being handled with its traceback under a short id, and return the
    error a user sees: it says the fault is ours and carries the same id."""
    error_id = uuid.uuid4().hex[:12]
    log.error("internal error %s while %s", error_id, doing, exc_info=True)
    return InternalError(
        f"internal error {error_id}: mediaworker failed while {doing}; this is a fault of"
        f" mediaworker or of the worker's setup, not of the media. Report it with the id"
        f" {error_id} (the worker's log holds the details)"
    )


def host_paths(*extra: Path | str | None) -> list[str]:
    """Folders of this host that may appear in a library's error text: scratch space first."""
    paths = [str(p) for p in extra if p]
    paths += [tempfile.gettempdir(), str(Path.home())]
    return sorted({p.rstrip("/") for p in paths if p and p != "/"}, key=len, reverse=True)


def scrub_host(message: str, paths: Iterable[str]) -> str:
    """`message` without any of the host `paths` (longest first), so a decoder's error text that
    names a scratch file says only the file's name."""
    for path in paths:
        if path in message:
            message = re.sub(re.escape(path) + r"(/[^\s'\"()]*/)?/?", "", message)
    return message


# --- configuration values that could point a worker at its own host --------------------------

_METADATA_V4 = ipaddress.ip_network("169.254.0.0/16")
_METADATA_V6 = ipaddress.ip_address("fd00:ec2::254")
_METADATA_NAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")


def endpoint_problem(url: str) -> str | None:
    """Why `url` may not be a storage endpoint: http(s) only, never a cloud metadata address
    (link-local 169.254.0.0/16, AWS's fd00:ec2::254), whose answers hold the host's credentials."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host name"
    host = parts.hostname.lower().rstrip(".")
    if host in _METADATA_NAMES:
        return f"{host} is a cloud metadata service, never a storage endpoint"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in _METADATA_V4 or address == _METADATA_V6:
        return f"{host} is a link-local cloud metadata address, never a storage endpoint"
    return None


def region_problem(region: str) -> str | None:
    """Why `region` is not shaped like a region name (`eu-central-2`, `us-east-1`, ...)."""
    if _REGION.fullmatch(region):
        return None
    return "regions are shaped like 'eu-central-2': lowercase words joined by '-', then a number"
