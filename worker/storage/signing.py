"""A cache of signed URLs that never hands back one about to expire (SPEC section 2).

Signing is cheap for S3 but a user-delegation SAS costs a request, and viewers ask for the same
keys again and again. A cached URL is returned only while it still has at least
`min_remaining_seconds` of life; otherwise a fresh one is signed. Lifetimes are capped at
`MAX_SIGNED_URL_SECONDS` (4 hours), and an expired URL is never returned whatever the settings.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from worker.config import MAX_SIGNED_URL_SECONDS


class Signer(Protocol):
    def sign(self, key: str, expires_seconds: int) -> str: ...


class SignedUrlCache:
    def __init__(
        self,
        storage: Signer,
        min_remaining_seconds: float,
        clock: Callable[[], float] = time.time,
        max_entries: int = 10_000,
    ) -> None:
        self._storage = storage
        self._min_remaining = max(0.0, float(min_remaining_seconds))
        self._clock = clock
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, int], tuple[str, float]] = OrderedDict()
        """(key, lifetime) -> (url, the clock time it expires at), least recently used first."""

    def get(self, key: str, expires_seconds: int) -> str:
        """A URL for `key` valid for `expires_seconds` (at most 4 hours) when freshly signed;
        a cached one only while its remaining life is at least the configured minimum."""
        lifetime = max(1, min(int(expires_seconds), MAX_SIGNED_URL_SECONDS))
        entry = (key, lifetime)
        with self._lock:
            cached = self._entries.get(entry)
            if cached is not None:
                url, expires_at = cached
                remaining = expires_at - self._clock()
                if remaining > 0 and remaining >= self._min_remaining:
                    self._entries.move_to_end(entry)
                    return url
                del self._entries[entry]
        # Counted from before the request, in whole seconds as signatures carry their times,
        # so the expiry recorded is never later than the real one.
        signed_at = math.floor(self._clock())
        url = self._storage.sign(key, lifetime)
        with self._lock:
            self._entries[entry] = (url, signed_at + lifetime)
            self._entries.move_to_end(entry)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return url

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
