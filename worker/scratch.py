"""Scratch folders for sources and intermediate files (SPEC section 11).

Each item gets a folder private to the worker user (mode 0700) named after the process that made
it (`mw-<pid>-<label>-<random>`). The pipeline removes it on every exit path; SIGTERM is turned
into an ordinary exit (`exit_on_sigterm`) so those paths run; and whatever a killed process left
(its pid no longer runs) is removed the next time a command or worker starts (`remove_stale`).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "mw-"


def make(base: Path | None, label: str) -> Path:
    """A new private folder under `base` (the system's temp folder when None)."""
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-{label}-", dir=base))
    path.chmod(0o700)  # mkdtemp's mode already; said again so no umask or copy changes it
    return path


def remove_stale(base: Path | None) -> int:
    """Remove the scratch folders of processes that no longer run; returns how many."""
    root = Path(base) if base is not None else Path(tempfile.gettempdir())
    removed = 0
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    for entry in entries:
        pid = _owner_pid(entry)
        if pid is not None and not _running(pid):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d scratch folders left by processes that were killed", removed)
    return removed


def _owner_pid(entry: os.DirEntry[str]) -> int | None:
    if not entry.name.startswith(PREFIX) or not entry.is_dir(follow_symlinks=False):
        return None
    try:
        if entry.stat(follow_symlinks=False).st_uid != os.getuid():
            return None
        return int(entry.name[len(PREFIX) :].split("-", 1)[0])
    except (OSError, ValueError):
        return None


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit in the main thread, so `finally` blocks remove scratch."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
