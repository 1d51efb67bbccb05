"""The bounded, concurrent writer that stands behind a processor's `Sink`.

Outputs are uploaded by a small thread pool (one per process, shared by its sinks) while the
processor keeps decoding. A producer that runs ahead blocks once `max_pending` outputs or
`max_pending_bytes` bytes are waiting, so memory stays flat however long the input is. The
first failed write stops further writes and is raised to the producer at its next `put_*` and
again by `close()`.

The first output is held back until a second one comes: an item with a single output (a small
image's thumbnail) has it written by the thread that closes the sink, as handing one small write
to another thread and waiting for it costs more than the write itself.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

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


class _Write(NamedTuple):
    rel: str
    data: bytes | Path
    size: int
    weight: int
    """What it counts against the byte budget: its size when held in memory, else 0."""
    content_type: str
    content_encoding: str | None
    delete_after: bool

    def discard(self) -> None:
        if self.delete_after and isinstance(self.data, Path):
            self.data.unlink(missing_ok=True)


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
        self._held: _Write | None = None
        """The first output's write, until a second output or `close()` (module docstring)."""
        self._submitted = 0

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
        write = _Write(rel, data, size, weight, content_type, content_encoding, delete_after)
        with self._cond:
            if self._held is not None:  # a second output: the first goes to the writers too
                self._pool.submit(self._write, self._held)
                self._held = None
            self._cond.wait_for(lambda: self._error is not None or self._has_room(weight))
            self._raise_if_failed()
            self._pending += 1
            self._pending_bytes += weight
            self._submitted += 1
            if self._submitted == 1:
                # Nothing else is pending, so no producer can be waiting for room behind it.
                self._held = write
                return
        self._pool.submit(self._write, write)

    def _take_held(self) -> _Write | None:
        with self._cond:
            held, self._held = self._held, None
        return held

    def _has_room(self, weight: int) -> bool:
        if self._pending == 0:
            return True
        return (
            self._pending < self._max_pending
            and self._pending_bytes + weight <= self._max_pending_bytes
        )

    def _write(self, write: _Write) -> None:
        try:
            if self._error is None:
                self.storage.write(
                    self.layout.key(write.rel),
                    write.data,
                    write.content_type,
                    write.content_encoding,
                )
                self.recorded.add(write.rel)
                with self._cond:
                    self.total_bytes += write.size
                    self.count += 1
        except BaseException as exc:
            with self._cond:
                if self._error is None:
                    self._error = exc
        finally:
            write.discard()
            self._done(write)

    def _done(self, write: _Write) -> None:
        with self._cond:
            self._pending -= 1
            self._pending_bytes -= write.weight
            self._cond.notify_all()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Wait for every write; raise the first failure, if any."""
        held = self._take_held()
        if held is not None:
            self._write(held)
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
            held = self._take_held()
            with self._cond:
                self._error = self._error or exc
            if held is not None:  # never started, and not to be written now
                held.discard()
                self._done(held)
            with self._cond:
                self._cond.wait_for(lambda: self._pending == 0)
