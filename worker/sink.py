"""The bounded, concurrent writer that stands behind a processor's `Sink`.

Outputs are uploaded by a small thread pool (one per process, shared by its sinks) while the
processor keeps decoding. A producer that runs ahead blocks once `max_pending` outputs or
`max_pending_bytes` bytes are waiting, so memory stays flat however long the input is. The
first failed write stops further writes and is raised to the producer at its next `put_*` and
again by `close()`.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from worker.assets import Asset, AssetRecorder
from worker.layout import SlotLayout
from worker.storage.base import Storage

log = logging.getLogger(__name__)


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _writers(concurrency: int) -> ThreadPoolExecutor:
    """This process's writer threads, shared by its sinks: starting and joining threads for
    every item costs a small image more than writing it. Keyed by pid too, as a forked pool
    process inherits the dict but not the threads."""
    key = (os.getpid(), concurrency)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = ThreadPoolExecutor(concurrency, thread_name_prefix="sink")
        return _POOLS[key]


class StorageSink:
    def __init__(
        self,
        storage: Storage,
        layout: SlotLayout,
        concurrency: int = 8,
        max_pending: int = 32,
        max_pending_bytes: int = 128 * 1024**2,
    ) -> None:
        self.storage = storage
        self.layout = layout
        self.recorded = AssetRecorder()
        """Every output written so far, in the compact form (nothing kept per file)."""
        self.total_bytes = 0
        self.count = 0
        self._pool = _writers(concurrency)
        self._cond = threading.Condition()
        self._pending = 0
        self._pending_bytes = 0
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        self._error: BaseException | None = None

    def put_bytes(
        self, rel: str, data: bytes, content_type: str, content_encoding: str | None = None
    ) -> None:
        self._submit(rel, data, len(data), content_type, content_encoding, delete_after=False)

    def put_file(
        self,
        rel: str,
        path: Path,
        content_type: str,
        content_encoding: str | None = None,
        delete_after: bool = False,
    ) -> None:
        size = path.stat().st_size
        self._submit(rel, path, size, content_type, content_encoding, delete_after)

    def _submit(
        self,
        rel: str,
        data: bytes | Path,
        size: int,
        content_type: str,
        content_encoding: str | None,
        delete_after: bool,
    ) -> None:
        # Only bytes held in memory count against the byte budget; files wait on disk.
        weight = size if isinstance(data, bytes) else 0
        with self._cond:
            self._cond.wait_for(lambda: self._error is not None or self._has_room(weight))
            self._raise_if_failed()
            self._pending += 1
            self._pending_bytes += weight
        self._pool.submit(
            self._write, rel, data, size, weight, content_type, content_encoding, delete_after
        )

    def _has_room(self, weight: int) -> bool:
        if self._pending == 0:
            return True
        return (
            self._pending < self._max_pending
            and self._pending_bytes + weight <= self._max_pending_bytes
        )

    def _write(
        self,
        rel: str,
        data: bytes | Path,
        size: int,
        weight: int,
        content_type: str,
        content_encoding: str | None,
        delete_after: bool,
    ) -> None:
        try:
            if self._error is None:
                key = self.layout.key(rel)
                self.storage.write(key, data, content_type, content_encoding)
                self.recorded.add(rel)
                with self._cond:
                    self.total_bytes += size
                    self.count += 1
        except BaseException as exc:
            with self._cond:
                if self._error is None:
                    self._error = exc
        finally:
            if delete_after and isinstance(data, Path):
                data.unlink(missing_ok=True)
            with self._cond:
                self._pending -= 1
                self._pending_bytes -= weight
                self._cond.notify_all()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Wait for every write; raise the first failure, if any."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending == 0)
        self._raise_if_failed()

    def assets(self) -> list[Asset]:
        """The storage keys written, in the compact form of `worker.assets`."""
        return self.recorded.assets(self.layout.key)

    def __enter__(self) -> StorageSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            with self._cond:
                self._error = self._error or exc
                self._cond.wait_for(lambda: self._pending == 0)
