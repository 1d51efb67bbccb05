"""MIRAX: the completeness check names each missing part before OpenSlide's vague errors, and
fetching a `.mrxs` key lists its folder and downloads all of it (bounded, concurrently) from a
real local bucket; a denied listing names the permission to grant."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openslide
import pytest

from fixtures.slides import BROKEN, MARKS_LAYOUT, generate_slides
from worker.errors import CorruptMedia, MiraxIncomplete, PermissionDenied, Reason, TooLarge
from worker.fetch import fetch_source
from worker.kinds.mirax import mirax_prefix
from worker.media.mirax import check_mirax_complete, parse_slidedat
from worker.storage.base import ObjectInfo
from worker.storage.local import LocalStorage

SLIDE_KEY = "scans/2024/marks.mrxs"


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_slides(tmp_path_factory.mktemp("slides"))


def _bucket_with(root: Path, mrxs: Path, key: str = SLIDE_KEY) -> LocalStorage:
    """A local bucket holding one MIRAX slide (its .mrxs and whatever its folder holds)."""
    target = root / key
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mrxs, target)
    if mrxs.with_suffix("").is_dir():
        shutil.copytree(mrxs.with_suffix(""), target.with_suffix(""))
    return LocalStorage(root)


# --- Slidedat.ini and the completeness check --------------------------------------------------


def test_slidedat_names_the_index_and_every_data_file(slides: dict[str, Path]) -> None:
    info = parse_slidedat(slides["mirax"].with_suffix("") / "Slidedat.ini")
    assert info.index_file == "Index.dat"
    assert info.data_files == ("Data0000.dat", "Data0001.dat", "Data0002.dat")
    assert info.zoom_levels == MARKS_LAYOUT.levels
    assert info.nonhier_records == len(MARKS_LAYOUT.associated)


def test_complete_slide_passes_and_openslide_reads_it(slides: dict[str, Path]) -> None:
    check_mirax_complete(slides["mirax"])
    with openslide.OpenSlide(slides["mirax"]) as slide:
        assert slide.dimensions == (MARKS_LAYOUT.width, MARKS_LAYOUT.height)
        red = MARKS_LAYOUT.marks[0]
        pixel = slide.read_region(red.center, 0, (1, 1)).getpixel((0, 0))
        assert all(abs(a - e) <= 16 for a, e in zip(pixel[:3], red.rgb, strict=True))  # type: ignore[index]


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_broken_slide_names_its_missing_part(slides: dict[str, Path], case: str) -> None:
    with pytest.raises(MiraxIncomplete) as caught:
        check_mirax_complete(slides[case])
    message = str(caught.value)
    assert caught.value.reason == Reason.MIRAX_INCOMPLETE
    part = "folder marks/ is missing" if case == "broken_no_folder" else f"marks/{BROKEN[case]}"
    assert part in message
    assert "marks.mrxs" in message


def test_truncated_data_file_reports_its_size_against_the_index(slides: dict[str, Path]) -> None:
    with pytest.raises(MiraxIncomplete, match=r"Data0000\.dat is truncated \(\d+ bytes"):
        check_mirax_complete(slides["broken_truncated"])


def test_every_missing_part_is_named_at_once(slides: dict[str, Path], tmp_path: Path) -> None:
    mrxs = tmp_path / "marks.mrxs"
    shutil.copyfile(slides["mirax"], mrxs)
    shutil.copytree(slides["mirax"].with_suffix(""), tmp_path / "marks")
    for part in ("Index.dat", "Data0000.dat", "Data0002.dat"):
        (tmp_path / "marks" / part).unlink()
    with pytest.raises(MiraxIncomplete) as caught:
        check_mirax_complete(mrxs)
    for part in ("Index.dat", "Data0000.dat", "Data0002.dat"):
        assert f"marks/{part} is missing" in str(caught.value)
    assert "Data0001.dat" not in str(caught.value)


def test_unreadable_slidedat_is_corrupt_media(slides: dict[str, Path], tmp_path: Path) -> None:
    mrxs = tmp_path / "marks.mrxs"
    shutil.copyfile(slides["mirax"], mrxs)
    (tmp_path / "marks").mkdir()
    (tmp_path / "marks" / "Slidedat.ini").write_text("[GENERAL]\nSLIDE_ID = x\n")
    with pytest.raises(CorruptMedia, match=r"Slidedat\.ini"):
        check_mirax_complete(mrxs)


# --- fetching from a bucket --------------------------------------------------------------------


def test_mirax_prefix_is_the_folder_beside_the_mrxs() -> None:
    assert mirax_prefix("scans/2024/marks.mrxs") == "scans/2024/marks/"
    assert mirax_prefix("marks.mrxs") == "marks/"


def test_fetch_lists_and_downloads_the_whole_folder(
    slides: dict[str, Path], tmp_path: Path
) -> None:
    storage = _bucket_with(tmp_path / "bucket", slides["mirax"])
    local, info = fetch_source(storage, SLIDE_KEY, tmp_path / "work")
    assert local.name == "marks.mrxs" and local.is_file()
    assert info.key == SLIDE_KEY
    assert info.size == slides["mirax"].stat().st_size
    source_folder = slides["mirax"].with_suffix("")
    expected = sorted(p.name for p in source_folder.iterdir())
    assert sorted(p.name for p in local.with_suffix("").iterdir()) == expected
    for name in expected:
        assert (local.with_suffix("") / name).read_bytes() == (source_folder / name).read_bytes()
    check_mirax_complete(local)


def test_fetch_of_a_slide_without_its_folder_names_the_folder(
    slides: dict[str, Path], tmp_path: Path
) -> None:
    storage = _bucket_with(tmp_path / "bucket", slides["broken_no_folder"])
    with pytest.raises(MiraxIncomplete, match="scans/2024/marks/"):
        fetch_source(storage, SLIDE_KEY, tmp_path / "work")
    assert not (tmp_path / "work" / "source").exists()


def test_fetch_then_check_names_a_data_file_missing_in_the_bucket(
    slides: dict[str, Path], tmp_path: Path
) -> None:
    storage = _bucket_with(tmp_path / "bucket", slides["broken_no_datafile"])
    local, _ = fetch_source(storage, SLIDE_KEY, tmp_path / "work")
    with pytest.raises(MiraxIncomplete, match=r"marks/Data0001\.dat is missing"):
        check_mirax_complete(local)


class DenyingListStorage(LocalStorage):
    """A bucket where the credentials may read objects but not list (no s3:ListBucket)."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        raise PermissionDenied(f"{self.integration}: AccessDenied listing {prefix}")


def test_denied_listing_names_s3_listbucket_and_the_azure_role(
    slides: dict[str, Path], tmp_path: Path
) -> None:
    _bucket_with(tmp_path / "bucket", slides["mirax"])
    storage = DenyingListStorage(tmp_path / "bucket")
    with pytest.raises(PermissionDenied) as caught:
        fetch_source(storage, SLIDE_KEY, tmp_path / "work")
    message = str(caught.value)
    assert caught.value.reason == Reason.PERMISSION_DENIED
    assert "s3:ListBucket" in message and "scans/2024/marks/" in message
    assert "Storage Blob Data Reader" in message
    assert not (tmp_path / "work" / "source").exists()


class CountingStorage(LocalStorage):
    """Records how many downloads run at once (each made slow enough to overlap)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.keys: list[str] = []

    def download(self, key: str, dest: Path) -> ObjectInfo:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.keys.append(key)
        try:
            time.sleep(0.05)
            return super().download(key, dest)
        finally:
            with self._lock:
                self.running -= 1


@pytest.mark.parametrize("concurrency", [1, 3])
def test_downloads_run_concurrently_within_the_bound(
    slides: dict[str, Path], tmp_path: Path, concurrency: int
) -> None:
    storage = CountingStorage(tmp_path / "bucket")
    _bucket_with(tmp_path / "bucket", slides["mirax"])
    fetch_source(storage, SLIDE_KEY, tmp_path / "work", concurrency=concurrency)
    parts = len(list(slides["mirax"].with_suffix("").iterdir()))
    assert len(storage.keys) == parts + 1
    assert storage.peak == min(concurrency, parts + 1)


def test_fetch_refuses_a_folder_over_the_byte_limit(
    slides: dict[str, Path], tmp_path: Path
) -> None:
    storage = _bucket_with(tmp_path / "bucket", slides["mirax"])
    with pytest.raises(TooLarge, match="max_source_bytes"):
        fetch_source(storage, SLIDE_KEY, tmp_path / "work", max_bytes=10_000)
    assert not (tmp_path / "work" / "source").exists()


def test_fetch_of_a_single_file_source(slides: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    (root / "wsi").mkdir(parents=True)
    shutil.copyfile(slides["tiled_tiff"], root / "wsi" / "pyramid.tiff")
    local, info = fetch_source(LocalStorage(root), "wsi/pyramid.tiff", tmp_path / "work")
    assert local.read_bytes() == slides["tiled_tiff"].read_bytes()
    assert info.size == slides["tiled_tiff"].stat().st_size
