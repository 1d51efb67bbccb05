"""Per-item bounds shared by every command and the worker (SPEC sections 9 and 11).

- Time: `item_deadline` fails an item as `timeout` once `limits.item_timeout_seconds` have passed
  (the worker's Celery soft limit does the same in the queue). It interrupts Python code between
  two library calls; a decoder stuck inside one call is bounded by the sandbox that runs risky
  decoders (`worker.media.sandbox`).
- Memory: `check_allocation` refuses, before it is made, any allocation a header or an asset
  claims beyond `limits.max_item_memory_mb`, so hostile sizes fail as `too_large` instead of
  exhausting the host.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from worker.errors import ItemTimeout, TooLarge

if TYPE_CHECKING:
    from worker.config import Limits

MB = 1024**2


@contextmanager
def item_deadline(seconds: float, what: str) -> Iterator[None]:
    """Raise `ItemTimeout` in the main thread once `seconds` have passed (no-op elsewhere, and
    when an outer deadline is already running)."""
    usable = (
        seconds > 0
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )
    if not usable:
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise ItemTimeout(
            f"{what}: still running after limits.item_timeout_seconds ({seconds:.0f} s); raise"
            " the limit if items this large are expected"
        )

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def budget_bytes(limits: Limits) -> int:
    return int(limits.max_item_memory_mb * MB)


def check_allocation(what: str, claimed_bytes: int, limits: Limits) -> None:
    """`TooLarge` when `claimed_bytes` (what a header says decoding will need) is over budget."""
    if claimed_bytes > budget_bytes(limits):
        raise TooLarge(
            f"{what} would need {claimed_bytes / MB:,.0f} MB to decode, over the limit of"
            f" {limits.max_item_memory_mb:,} MB per item (limits.max_item_memory_mb); raise it"
            " if sources this large are expected"
        )
