"""A readable stream over an SDK's download body that raises only `worker.errors`.

An SDK's body can fail mid-read (a reset, a read timeout) long after the request that opened it
succeeded, so the backend's error table has to apply to every read, not only to the request.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Protocol


class _Body(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class MappedStream(io.RawIOBase):
    """Reads `body`, translating any exception with `translate`; `close` releases the body."""

    def __init__(
        self,
        body: _Body,
        translate: Callable[[Exception], Exception],
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._body = body
        self._translate = translate
        self._on_close = on_close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        try:
            chunk = self._body.read(len(view))
        except Exception as exc:
            raise self._translate(exc) from None
        view[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        if not self.closed and self._on_close is not None:
            self._on_close()
        super().close()


def buffered(stream: MappedStream, size: int = 1024 * 1024) -> io.BufferedReader:
    """Reads of any size, in large network-friendly chunks."""
    return io.BufferedReader(stream, size)
