"""The trust boundary (SPEC section 11): what hostile bucket content may not do to the host.

- Names found inside a source (a MIRAX index's data files, ...) are plain file names of the
  source's own folder, or the item is refused (`plain_file_name`).
- What reaches a user (a result message) never reveals the host: scratch paths are cut out
  (`scrub_host`), and our own faults become `internal_error` with a short id that the log line
  holding the traceback also carries (`internal_error`).
"""

from __future__ import annotations

import logging
import re
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

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
