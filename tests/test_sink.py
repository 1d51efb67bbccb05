"""The sink behind every processor: a lone output is written by the thread that closes it (no
hand-off to a writer thread for a small image's only file), more outputs go to the writers, and
neither the bound on pending writes nor an error can hang it or leave a held output behind."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from worker.errors import PermissionDenied
from worker.layout import SlotLayout
from worker.sink import StorageSink
from worker.storage.base import Content
from worker.storage.local import LocalStorage

LAYOUT = SlotLayout("data", "item1")


class ThreadRecordingStorage(LocalStorage):
    """Local storage that notes which thread wrote each key."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writers: dict[str, str] = {}

    def put(self, key: str, data: bytes | Path, content: Content) -> None:
        self.writers[key] = threading.current_thread().name
        super().put(key, data, content)


def test_a_lone_output_is_written_by_the_closing_thread(tmp_path: Path) -> None:
    storage = ThreadRecordingStorage(tmp_path)
    with StorageSink(storage, LAYOUT) as sink:
        sink.put_bytes("thumbnail.jpg", b"jpeg", "image/jpeg")
        assert storage.writers == {}, "held until close"
    key = LAYOUT.key("thumbnail.jpg")
    assert storage.writers == {key: threading.current_thread().name}
    assert (tmp_path / key).read_bytes() == b"jpeg"
    assert (sink.count, sink.total_bytes) == (1, 4)


def test_a_second_output_sends_both_to_the_writers(tmp_path: Path) -> None:
    storage = ThreadRecordingStorage(tmp_path)
    with StorageSink(storage, LAYOUT) as sink:
        sink.put_bytes("a.jpg", b"a", "image/jpeg")
        sink.put_bytes("b.jpg", b"bb", "image/jpeg")
    assert sorted(storage.writers) == [LAYOUT.key("a.jpg"), LAYOUT.key("b.jpg")]
    assert all(name.startswith("sink") for name in storage.writers.values())
    assert (sink.count, sink.total_bytes) == (2, 3)


@pytest.mark.parametrize("max_pending", [1, 2])
def test_producers_on_several_threads_finish_under_a_tight_bound(
    tmp_path: Path, max_pending: int
) -> None:
    storage = LocalStorage(tmp_path)
    with StorageSink(storage, LAYOUT, concurrency=2, max_pending=max_pending) as sink:

        def produce(thread: int) -> None:
            for n in range(25):
                sink.put_bytes(f"t{thread}/{n}.bin", bytes([thread, n]), "x/y")

        threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads), "a producer hung"
    assert sink.count == 100
    assert (tmp_path / LAYOUT.key("t3/24.bin")).read_bytes() == bytes([3, 24])


def test_a_failed_processor_drops_the_held_output_and_its_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "bucket")
    spooled = tmp_path / "segment.ts"
    spooled.write_bytes(b"ts")
    with pytest.raises(RuntimeError), StorageSink(storage, LAYOUT) as sink:
        sink.put_file("hls/low/0.ts", spooled, "video/mp2t", delete_after=True)
        raise RuntimeError("decoder failed")
    assert not spooled.exists(), "the spooled file is removed"
    assert not (tmp_path / "bucket" / LAYOUT.key("hls/low/0.ts")).exists()
    assert sink.count == 0


def test_a_failed_lone_write_is_raised_by_close(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the item's folder should be")
    sink = StorageSink(LocalStorage(tmp_path), LAYOUT)
    sink.put_bytes("thumbnail.jpg", b"jpeg", "image/jpeg")
    with pytest.raises(PermissionDenied, match="refusing to write"):
        sink.close()
    assert sink.count == 0
