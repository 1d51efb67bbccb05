"""The signed-URL cache against a fake clock: reuse only with enough life left, never expired."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import requests

from worker.config import MAX_SIGNED_URL_SECONDS, Integration, Settings
from worker.storage import open_writable
from worker.storage.signing import SignedUrlCache


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingSigner:
    """Signs with the time and lifetime in the URL, so each fresh signature differs."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def sign(self, key: str, expires_seconds: int) -> str:
        with self.lock:
            self.calls.append((key, expires_seconds))
            return f"https://signed/{key}?at={self.clock()}&expires={expires_seconds}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def signer(clock: FakeClock) -> CountingSigner:
    return CountingSigner(clock)


def test_reuses_a_url_while_it_has_the_minimum_life_left(
    clock: FakeClock, signer: CountingSigner
) -> None:
    cache = SignedUrlCache(signer, min_remaining_seconds=900, clock=clock)
    first = cache.get("a.jpg", 3600)
    clock.now += 3600 - 900  # exactly the minimum left: still good
    assert cache.get("a.jpg", 3600) == first
    assert len(signer.calls) == 1

    clock.now += 1  # one second less than the minimum: signed again
    second = cache.get("a.jpg", 3600)
    assert second != first
    assert len(signer.calls) == 2
    assert cache.get("a.jpg", 3600) == second


def test_never_returns_an_expired_url_even_with_no_minimum(
    clock: FakeClock, signer: CountingSigner
) -> None:
    cache = SignedUrlCache(signer, min_remaining_seconds=0, clock=clock)
    first = cache.get("a.jpg", 60)
    clock.now += 59
    assert cache.get("a.jpg", 60) == first
    clock.now += 1  # expired at this instant
    assert cache.get("a.jpg", 60) != first
    assert len(signer.calls) == 2


def test_lifetime_is_capped_at_four_hours(clock: FakeClock, signer: CountingSigner) -> None:
    cache = SignedUrlCache(signer, min_remaining_seconds=900, clock=clock)
    cache.get("a.jpg", 24 * 3600)
    assert signer.calls == [("a.jpg", MAX_SIGNED_URL_SECONDS)]
    # Counted from the capped lifetime: after 4 h minus 15 min it is signed again.
    clock.now += MAX_SIGNED_URL_SECONDS - 900 + 1
    cache.get("a.jpg", 24 * 3600)
    assert len(signer.calls) == 2


def test_expiry_is_counted_from_the_whole_second_before_signing(signer: CountingSigner) -> None:
    """Signatures carry whole seconds: a URL signed at t=100.9 expires at 100 + lifetime."""
    clock = FakeClock(100.9)
    signer.clock = clock
    cache = SignedUrlCache(signer, min_remaining_seconds=10, clock=clock)
    first = cache.get("a.jpg", 60)
    clock.now = 100 + 60 - 10  # exactly 10 s left by the signature's own clock
    assert cache.get("a.jpg", 60) == first
    clock.now += 0.5
    assert cache.get("a.jpg", 60) != first


def test_keys_and_lifetimes_are_cached_apart(clock: FakeClock, signer: CountingSigner) -> None:
    cache = SignedUrlCache(signer, min_remaining_seconds=60, clock=clock)
    a = cache.get("a.jpg", 600)
    b = cache.get("b.jpg", 600)
    a_long = cache.get("a.jpg", 3600)
    assert len({a, b, a_long}) == 3
    assert cache.get("a.jpg", 600) == a
    assert cache.get("b.jpg", 600) == b
    assert signer.calls == [("a.jpg", 600), ("b.jpg", 600), ("a.jpg", 3600)]


def test_a_minimum_longer_than_the_lifetime_signs_every_time(
    clock: FakeClock, signer: CountingSigner
) -> None:
    cache = SignedUrlCache(signer, min_remaining_seconds=900, clock=clock)
    cache.get("a.jpg", 300)
    cache.get("a.jpg", 300)
    assert len(signer.calls) == 2


def test_entries_are_bounded(clock: FakeClock, signer: CountingSigner) -> None:
    cache = SignedUrlCache(signer, min_remaining_seconds=0, clock=clock, max_entries=3)
    for name in "abcd":
        cache.get(f"{name}.jpg", 600)
    assert len(cache) == 3
    cache.get("b.jpg", 600)  # still cached
    assert len(signer.calls) == 4
    cache.get("a.jpg", 600)  # the oldest was dropped: signed again
    assert len(signer.calls) == 5


def test_concurrent_callers_get_valid_urls(clock: FakeClock, signer: CountingSigner) -> None:
    cache = SignedUrlCache(signer, min_remaining_seconds=60, clock=clock)
    results: list[str] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        for i in range(200):
            url = cache.get(f"k{(index + i) % 7}.jpg", 600)
            with lock:
                results.append(url)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 1600
    assert {url.split("?")[0] for url in results} == {f"https://signed/k{n}.jpg" for n in range(7)}
    # The clock stood still, so after the first signature of each key all were reused.
    assert len(signer.calls) <= 7 * 8
    assert len(cache) == 7


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_cached_urls_from_a_real_backend_fetch_the_object(
    kind: str, make_integration: Callable[..., tuple[Settings, Integration]]
) -> None:
    settings, integration = make_integration(kind)
    storage = open_writable(integration, settings)
    storage.write("data/view.jpg", b"pixels", content_type="image/jpeg")
    cache = SignedUrlCache(storage, settings.worker.signed_url_min_remaining_seconds)
    url = cache.get("data/view.jpg", 3600)
    assert cache.get("data/view.jpg", 3600) == url
    assert requests.get(url, timeout=10).content == b"pixels"
