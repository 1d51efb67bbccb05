"""DICOM whole-slide images, locally: the series is chosen and checked from the instances'
headers (missing levels and instances named as `slide_incomplete`, header claims held to the
limits, other series and path-like names left out), and the slide processor writes the layout."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from fixtures.dicom import LAYOUT, MISSING_LEVEL, generate_dicom, level_name
from worker.config import Limits
from worker.errors import CorruptMedia, Reason, SlideIncomplete, TooLarge, UnsupportedFormat
from worker.fetch import fetch_source, item_keys, source_key
from worker.items import Item, ItemType
from worker.layout import Rel
from worker.media import dicom
from worker.media.slide import process_slide
from worker.media.sniff import sniff
from worker.pipeline import detect_type
from worker.storage.local import LocalStorage

SERIES_FILES = {level_name(n) for n in range(LAYOUT.levels)} | {"label.dcm", "macro.dcm"}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_dicom(tmp_path_factory.mktemp("dicom"))


def _bucket(root: Path, folder: Path, under: str = "scans/case") -> LocalStorage:
    shutil.copytree(folder, root / under)
    return LocalStorage(root)


class _Sink:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def put_bytes(self, rel: str, data: bytes, content_type: str, encoding: str | None = None):
        self.files[rel] = data

    def put_file(self, rel: str, path: Path, content_type: str, *args: object, **kw: object):
        self.files[rel] = path.read_bytes()


def test_a_dcm_file_or_folder_sniffs_as_a_slide(fixtures: dict[str, Path], tmp_path: Path) -> None:
    head = (fixtures["series"] / "level-0.dcm").read_bytes()[:4096]
    assert sniff(head, "renamed.bin") == ItemType.SLIDE
    assert sniff(b"\0" * 200, "scans/x.DCM") == ItemType.SLIDE
    # A folder key is routed (enqueue sniffs `auto` items) without reading it.
    storage = _bucket(tmp_path / "bucket", fixtures["series"])
    folder_item = Item(integration="local", key="scans/case/")
    assert detect_type(folder_item, storage) == ItemType.SLIDE


def test_the_complete_series_passes_and_its_thumbnail_shows_the_marks(
    fixtures: dict[str, Path],
) -> None:
    sink = _Sink()
    result = process_slide(fixtures["series"] / "level-0.dcm", sink, Limits())
    assert (result.width, result.height, result.level_count) == (1024, 768, LAYOUT.levels)
    assert (result.mpp_x, result.objective_power, result.vendor) == (0.25, 20.0, "dicom")
    assert sorted(result.associated) == ["label", "macro"]
    thumbnail = Image.open(io.BytesIO(sink.files[Rel.THUMBNAIL]))
    assert thumbnail.size == (267, 200)
    for mark in LAYOUT.marks:
        x, y = mark.center
        pixel = thumbnail.getpixel((x * 267 // 1024, y * 200 // 768))
        assert all(abs(a - b) <= 30 for a, b in zip(pixel, mark.rgb, strict=True)), mark.name
    label = Image.open(io.BytesIO(sink.files[Rel.associated("label")]))
    assert all(abs(a - b) <= 12 for a, b in zip(label.getpixel((5, 5)), LAYOUT.label, strict=True))


def test_a_missing_level_fails_as_slide_incomplete_naming_it(fixtures: dict[str, Path]) -> None:
    width, height = LAYOUT.level_size(MISSING_LEVEL)
    with pytest.raises(SlideIncomplete) as caught:
        process_slide(fixtures["missing_level"] / "level-0.dcm", _Sink(), Limits())
    assert caught.value.reason == Reason.SLIDE_INCOMPLETE
    assert f"level {width}x{height} (downsample 2) is missing" in str(caught.value)


def test_a_level_short_of_tiles_names_the_instance_and_the_counts(
    fixtures: dict[str, Path],
) -> None:
    with pytest.raises(SlideIncomplete, match=r"level-0\.dcm\) holds 43 of the 48 tiles"):
        dicom.check_dicom_complete(fixtures["short_of_frames"] / "level-1.dcm", Limits())


def test_a_missing_concatenation_part_is_named() -> None:
    def part(n: int) -> dicom.Instance:
        return dicom.Instance(
            f"l0-{n}.dcm", 1, dicom.WSI_SOP_CLASS, "s", "VOLUME", (256, 256), 6, (1024, 768),
            "c", n, 3, True,
        )  # fmt: skip

    assert dicom._missing_parts([part(1), part(3)]) == [
        "level 1024x768 lacks instance 2 of its 3 (concatenation)"
    ]
    assert dicom._missing_parts([part(1), part(2), part(3)]) == []


def test_header_claims_are_held_to_the_limits_before_opening(fixtures: dict[str, Path]) -> None:
    with pytest.raises(TooLarge, match="10000000x10000000 pixel image"):
        process_slide(fixtures["huge_claim"] / "level-0.dcm", _Sink(), Limits())
    with pytest.raises(TooLarge, match=r"claims \d+x\d+ pixel tiles, over the limit of 10,000"):
        dicom.check_dicom_complete(
            fixtures["series"] / "level-0.dcm", Limits(max_image_pixels=100 * 100)
        )


def test_a_frame_count_bomb_is_refused_before_opening(fixtures: dict[str, Path]) -> None:
    with pytest.raises(CorruptMedia, match="claims 2,147,483,647 frames"):
        process_slide(fixtures["frame_bomb"] / "level-1.dcm", _Sink(), Limits())


def test_a_header_longer_than_the_bounded_read_is_refused(
    fixtures: dict[str, Path], tmp_path: Path
) -> None:
    storage = _bucket(tmp_path / "bucket", fixtures["long_header"])
    with pytest.raises(CorruptMedia, match=r"level-0\.dcm: its DICOM header runs past the first"):
        fetch_source(storage, "scans/case/level-1.dcm", tmp_path / "work")


def test_a_dicom_file_that_is_not_a_slide_is_unsupported(fixtures: dict[str, Path]) -> None:
    with pytest.raises(UnsupportedFormat, match="not a whole-slide image"):
        process_slide(fixtures["not_wsi"] / "ct.dcm", _Sink(), Limits())


def test_an_instance_key_fetches_only_its_own_series(
    fixtures: dict[str, Path], tmp_path: Path
) -> None:
    storage = _bucket(tmp_path / "bucket", fixtures["two_series"])
    # Path-like and nested names in the folder are never fetched, even as instances of it.
    nested = tmp_path / "bucket/scans/case/sub"
    nested.mkdir()
    shutil.copyfile(fixtures["series"] / "level-0.dcm", nested / "level-0.dcm")
    shutil.copyfile(fixtures["series"] / "label.dcm", tmp_path / "bucket/scans/case/..\\x.dcm")
    local, info = fetch_source(storage, "scans/case/level-2.dcm", tmp_path / "work")
    assert local.name == "level-2.dcm" and info.key == "scans/case/level-2.dcm"
    assert {p.name for p in local.parent.iterdir()} == SERIES_FILES

    local, _ = fetch_source(storage, "scans/case/other-level-0.dcm", tmp_path / "work2")
    assert {p.name for p in local.parent.iterdir()} == {f"other-{n}" for n in SERIES_FILES}


def test_a_folder_key_stands_for_its_one_series(fixtures: dict[str, Path], tmp_path: Path) -> None:
    storage = _bucket(tmp_path / "bucket", fixtures["series"])
    assert source_key(storage, "scans/case/") == "scans/case/level-0.dcm"
    local, _ = fetch_source(storage, "scans/case/", tmp_path / "work")
    assert local.name == "level-0.dcm"
    assert {p.name for p in local.parent.iterdir()} == SERIES_FILES


def test_a_folder_of_two_series_is_refused_naming_an_instance_of_each(
    fixtures: dict[str, Path], tmp_path: Path
) -> None:
    storage = _bucket(tmp_path / "bucket", fixtures["two_series"])
    with pytest.raises(UnsupportedFormat) as caught:
        source_key(storage, "scans/case/")
    assert "holds 2 DICOM slide series" in str(caught.value)
    assert "scans/case/label.dcm" in str(caught.value)
    assert "scans/case/other-label.dcm" in str(caught.value)


def test_a_key_that_is_not_dicom_fails_as_corrupt(tmp_path: Path) -> None:
    (tmp_path / "bucket/scans").mkdir(parents=True)
    (tmp_path / "bucket/scans/fake.dcm").write_bytes(b"not dicom at all" * 20)
    with pytest.raises(CorruptMedia, match="no DICM marker"):
        fetch_source(LocalStorage(tmp_path / "bucket"), "scans/fake.dcm", tmp_path / "work")


def test_listed_instances_of_one_folder_are_one_item() -> None:
    keys = ["a/x.jpg", "s/level-0.dcm", "s/label.dcm", "root.dcm", "top.dcm", "m.mrxs", "m/i.dat"]
    assert item_keys(keys) == ["a/x.jpg", "m.mrxs", "root.dcm", "s/"]
