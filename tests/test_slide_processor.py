"""The slide processor against generated slides whose content is known: a MIRAX slide with
coloured marks, unscanned areas, PNG and JPEG levels and three data files; a generic tiled TIFF;
and MIRAX slides each missing one part."""

from __future__ import annotations

import math
import re
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image

from fixtures.slides import (
    BROKEN,
    MARKS_LAYOUT,
    TIFF_BACKGROUND,
    TIFF_MARK,
    TIFF_MPP,
    TIFF_SIZE,
    generate_slides,
)
from worker.config import Limits
from worker.errors import CorruptMedia, MiraxIncomplete, Reason, TooLarge, UnsupportedFormat
from worker.layout import Rel, SlotLayout
from worker.media import SlideResult
from worker.media import slide as slide_module
from worker.media.slide import fit, open_slide, process_slide, thumbnail
from worker.sink import StorageSink
from worker.storage.local import LocalStorage

TOLERANCE = 24
"""Per channel: JPEG tiles and resampling blur colours a little, never this much."""
DZI_NS = "{http://schemas.microsoft.com/deepzoom/2008}"


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_slides(tmp_path_factory.mktemp("slides"))


class Processed:
    """The outputs of one `process_slide` run, read back from a local bucket."""

    def __init__(self, root: Path, layout: SlotLayout, result: SlideResult) -> None:
        self.folder = root / layout.root
        self.result = result

    def path(self, rel: str) -> Path:
        return self.folder / rel

    def image(self, rel: str) -> Image.Image:
        with Image.open(self.path(rel)) as image:
            return image.convert("RGB")

    def tiles(self) -> dict[int, set[tuple[int, int]]]:
        found: dict[int, set[tuple[int, int]]] = {}
        for tile in self.path(Rel.TILES_DIR).glob("*/*.jpeg"):
            col, row = map(int, re.fullmatch(r"(\d+)_(\d+)", tile.stem).groups())  # type: ignore[union-attr]
            found.setdefault(int(tile.parent.name), set()).add((col, row))
        return found


def run(path: Path, root: Path, limits: Limits | None = None, **kwargs: object) -> Processed:
    layout = SlotLayout("data", "item-" + path.parent.name)
    with StorageSink(LocalStorage(root), layout) as sink:
        result = process_slide(path, sink, limits or Limits(), **kwargs)  # type: ignore[arg-type]
    return Processed(root, layout, result)


@pytest.fixture(scope="module")
def mirax(slides: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Processed:
    return run(slides["mirax"], tmp_path_factory.mktemp("bucket"))


def close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = TOLERANCE) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def deep_zoom_geometry(width: int, height: int, tile: int = 254) -> list[tuple[int, int]]:
    """Tiles across and down per Deep Zoom level, from the format's definition: level N-1 is
    full size, each level below halves it (rounding up) down to 1x1."""
    levels = math.ceil(math.log2(max(width, height))) + 1
    counts = []
    for level in range(levels):
        scale = 2 ** (levels - 1 - level)
        w, h = math.ceil(width / scale), math.ceil(height / scale)
        counts.append((math.ceil(w / tile), math.ceil(h / tile)))
    return counts


# --- MIRAX: payload fields -------------------------------------------------------------------


def test_mirax_payload_fields(mirax: Processed) -> None:
    r = mirax.result
    assert (r.width, r.height) == (MARKS_LAYOUT.width, MARKS_LAYOUT.height)
    assert r.level_count == MARKS_LAYOUT.levels
    assert r.mpp_x == pytest.approx(MARKS_LAYOUT.mpp)
    assert r.mpp_y == pytest.approx(MARKS_LAYOUT.mpp)
    assert r.objective_power == MARKS_LAYOUT.objective
    assert r.vendor == "mirax"
    assert sorted(r.associated) == sorted(MARKS_LAYOUT.associated)


# --- MIRAX: thumbnail --------------------------------------------------------------------------


def test_thumbnail_fits_the_box_with_the_slide_aspect(mirax: Processed) -> None:
    thumb = mirax.image(Rel.THUMBNAIL)
    assert thumb.size == fit((MARKS_LAYOUT.width, MARKS_LAYOUT.height))
    assert thumb.height == 200 and thumb.width <= 356


def _thumb_pixel(thumb: Image.Image, x: int, y: int) -> tuple[int, ...]:
    scale = thumb.width / MARKS_LAYOUT.width
    return thumb.getpixel((int(x * scale), int(y * scale)))  # type: ignore[return-value]


@pytest.mark.parametrize("mark", MARKS_LAYOUT.marks, ids=lambda m: m.name)
def test_thumbnail_shows_each_mark_in_its_place(mirax: Processed, mark) -> None:  # type: ignore[no-untyped-def]
    thumb = mirax.image(Rel.THUMBNAIL)
    assert close(_thumb_pixel(thumb, *mark.center), mark.rgb)


def test_thumbnail_shows_tissue_between_marks(mirax: Processed) -> None:
    thumb = mirax.image(Rel.THUMBNAIL)
    assert close(_thumb_pixel(thumb, 1344, 1088), MARKS_LAYOUT.tissue)


@pytest.mark.parametrize(("x", "y"), [(1792, 768), (1900, 100), (256, 1280)])
def test_unscanned_areas_show_the_background_colour_not_black(
    mirax: Processed, x: int, y: int
) -> None:
    """OpenSlide returns these transparent; dropping alpha would paint them black."""
    assert not MARKS_LAYOUT.scanned_at(x, y)
    assert close(_thumb_pixel(mirax.image(Rel.THUMBNAIL), x, y), MARKS_LAYOUT.background)


def test_thumbnail_read_in_strips_matches_one_read(
    slides: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slides without a small level are read in bounded strips; the seams must not show."""
    with open_slide(slides["mirax"]) as slide:
        whole = thumbnail(slide, MARKS_LAYOUT.background)
        monkeypatch.setattr(slide_module, "STRIP_PIXELS", 20_000)
        strips = thumbnail(slide, MARKS_LAYOUT.background)
    assert strips.size == whole.size
    difference = np.abs(np.asarray(whole, np.int16) - np.asarray(strips, np.int16))
    assert difference.max() <= 8


# --- MIRAX: Deep Zoom --------------------------------------------------------------------------


def test_dzi_describes_254px_tiles_with_1px_overlap(mirax: Processed) -> None:
    root = ElementTree.parse(mirax.path(Rel.DZI)).getroot()
    assert root.tag == f"{DZI_NS}Image"
    assert root.get("TileSize") == "254" and root.get("Overlap") == "1"
    assert root.get("Format") == "jpeg"
    size = root.find(f"{DZI_NS}Size")
    assert size is not None
    assert (int(size.get("Width", 0)), int(size.get("Height", 0))) == (2048, 1536)


def test_tile_count_per_level_follows_deep_zoom_geometry(mirax: Processed) -> None:
    expected = deep_zoom_geometry(MARKS_LAYOUT.width, MARKS_LAYOUT.height)
    tiles = mirax.tiles()
    assert sorted(tiles) == list(range(len(expected)))
    for level, (cols, rows) in enumerate(expected):
        assert tiles[level] == {(c, r) for c in range(cols) for r in range(rows)}, level
    assert mirax.result.dzi_levels == len(expected)
    assert mirax.result.tile_count == sum(c * r for c, r in expected)


def test_tiles_carry_their_overlap(mirax: Processed) -> None:
    top = len(deep_zoom_geometry(MARKS_LAYOUT.width, MARKS_LAYOUT.height)) - 1
    assert mirax.image(Rel.tile(top, 0, 0)).size == (255, 255)
    assert mirax.image(Rel.tile(top, 1, 1)).size == (256, 256)
    last_col = MARKS_LAYOUT.width // 254
    assert mirax.image(Rel.tile(top, last_col, 0)).size == (
        MARKS_LAYOUT.width - last_col * 254 + 1,
        255,
    )


def _full_res_pixel(mirax: Processed, x: int, y: int) -> tuple[int, ...]:
    top = len(deep_zoom_geometry(MARKS_LAYOUT.width, MARKS_LAYOUT.height)) - 1
    col, row = x // 254, y // 254
    left = col * 254 - (1 if col else 0)
    upper = row * 254 - (1 if row else 0)
    return mirax.image(Rel.tile(top, col, row)).getpixel((x - left, y - upper))  # type: ignore[return-value]


@pytest.mark.parametrize("mark", MARKS_LAYOUT.marks, ids=lambda m: m.name)
def test_full_resolution_tiles_show_the_marks(mirax: Processed, mark) -> None:  # type: ignore[no-untyped-def]
    assert close(_full_res_pixel(mirax, *mark.center), mark.rgb)


def test_full_resolution_tiles_show_background_where_unscanned(mirax: Processed) -> None:
    assert close(_full_res_pixel(mirax, 1800, 700), MARKS_LAYOUT.background)
    assert close(_full_res_pixel(mirax, 200, 1300), MARKS_LAYOUT.background)


def test_associated_images_are_written_as_jpeg(mirax: Processed) -> None:
    for name, rgb in MARKS_LAYOUT.associated.items():
        image = mirax.image(Rel.associated(name))
        assert image.size == (240, 120)
        assert close(image.getpixel((120, 60)), rgb)  # type: ignore[arg-type]


def test_progress_reports_every_tile(slides: dict[str, Path], tmp_path: Path) -> None:
    seen: list[tuple[str, int, int | None]] = []
    processed = run(slides["mirax"], tmp_path, progress=lambda *a: seen.append(a))
    tiles = [event for event in seen if event[0] == "tiles"]
    assert tiles[0] == ("tiles", 0, processed.result.tile_count)
    assert tiles[-1] == ("tiles", processed.result.tile_count, processed.result.tile_count)


# --- generic tiled TIFF ------------------------------------------------------------------------


def test_tiled_tiff(slides: dict[str, Path], tmp_path: Path) -> None:
    processed = run(slides["tiled_tiff"], tmp_path)
    r = processed.result
    assert (r.width, r.height) == TIFF_SIZE
    assert r.level_count == 3
    assert r.vendor == "generic-tiff"
    assert r.mpp_x == pytest.approx(TIFF_MPP)
    thumb = processed.image(Rel.THUMBNAIL)
    assert thumb.size == fit(TIFF_SIZE)
    scale = thumb.width / TIFF_SIZE[0]
    cx, cy = TIFF_MARK.center
    assert close(thumb.getpixel((int(cx * scale), int(cy * scale))), TIFF_MARK.rgb)  # type: ignore[arg-type]
    assert close(thumb.getpixel((int(800 * scale), int(600 * scale))), TIFF_BACKGROUND)  # type: ignore[arg-type]
    assert processed.tiles().keys() == set(range(len(deep_zoom_geometry(*TIFF_SIZE))))


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_mirax_fails_as_mirax_incomplete_naming_the_part(
    slides: dict[str, Path], tmp_path: Path, case: str
) -> None:
    with pytest.raises(MiraxIncomplete) as caught:
        run(slides[case], tmp_path)
    assert caught.value.reason == Reason.MIRAX_INCOMPLETE
    part = BROKEN[case] if case != "broken_no_folder" else "marks/"
    assert part in str(caught.value)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.jpeg"))


def test_not_a_slide_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "notes.svs"
    path.write_text("not a slide\n")
    with pytest.raises(UnsupportedFormat) as caught:
        run(path, tmp_path)
    assert "notes.svs" in str(caught.value)


def test_damaged_tiff_is_corrupt_media(slides: dict[str, Path], tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.tiff"
    data = bytearray(slides["tiled_tiff"].read_bytes())
    # Keep the header and directories, destroy the compressed tile data that follows them.
    for i in range(400, len(data) - 4000):
        data[i] = 0x55
    damaged.write_bytes(bytes(data))
    with pytest.raises(CorruptMedia) as caught:
        run(damaged, tmp_path)
    assert "damaged.tiff" in str(caught.value)


def test_slide_over_the_pixel_limit_is_too_large(slides: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(TooLarge) as caught:
        run(slides["mirax"], tmp_path, limits=Limits(max_slide_pixels=1_000_000))
    assert "max_slide_pixels" in str(caught.value)
