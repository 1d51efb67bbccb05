"""The Deep Zoom pyramid against OpenSlide's own `DeepZoomGenerator` (254 px tiles, 1 px overlap,
the same `limit_bounds`): the same levels, tiles and descriptor, the same pixels at full
resolution and, within JPEG noise, at the levels built by halving."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from fixtures.slides import generate_slides, write_jpeg_tiff
from worker.layout import Rel
from worker.media import deepzoom, jpegtiff
from worker.media.deepzoom import OVERLAP, TILE_JPEG_QUALITY, TILE_SIZE, deep_zoom, write_pyramid
from worker.media.slide import background_rgb, open_slide

MEAN_TOLERANCE = 5.0
"""Mean absolute difference per channel of a halved-level tile. JPEG noise and the resampling
filter (a 2x2 box here; OpenSlide reads the slide's own level, resized with Lanczos where the
slide lacks one) stay well below it on these slides."""
OFF = 24
"""A channel value off by more than this is wrong, not noise (as in the slide processor tests)..."""
OFF_SHARE = 0.03
"""... except at marks' edges (JPEG ringing, Lanczos overshoot): at most this share of values."""


class MemorySink:
    def __init__(self) -> None:
        self.outputs: dict[str, bytes] = {}

    def put_bytes(
        self, rel: str, data: bytes, content_type: str, content_encoding: str | None = None
    ) -> None:
        self.outputs[rel] = data


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    dest = tmp_path_factory.mktemp("slides")
    return {
        **generate_slides(dest),
        "jpeg_tiff": write_jpeg_tiff(dest / "jpeg" / "ycbcr.tiff"),
        "rgb_jpeg_tiff": write_jpeg_tiff(dest / "jpeg" / "rgb.tiff", rgb_jpeg=True),
        "svs": write_jpeg_tiff(dest / "jpeg" / "aperio.svs", aperio=True),
    }


CASES = [
    ("mirax", False),
    ("mirax", True),
    ("tiled_tiff", False),
    ("jpeg_tiff", False),
    ("rgb_jpeg_tiff", False),
    ("svs", False),
]
DIRECT = {"jpeg_tiff": "YCbCr", "rgb_jpeg_tiff": "RGB", "svs": "YCbCr"}
"""Slides whose full-resolution JPEG tiles are decoded without OpenSlide -> their JPEG colour
space; the others (MIRAX, a deflate TIFF) are read through OpenSlide."""


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-bounds-{c[1]}")
def pyramid(request: pytest.FixtureRequest, slides: dict[str, Path]):  # type: ignore[no-untyped-def]
    """(our tiles, OpenSlide's generator) for one slide, the slide kept open for the test."""
    name, limit_bounds = request.param
    with open_slide(slides[name]) as slide:
        sink = MemorySink()
        plan = deep_zoom(slide, limit_bounds)
        count = write_pyramid(
            slide, plan, sink, lambda *_: None, background_rgb(slide), path=slides[name]
        )
        generator = DeepZoomGenerator(slide, TILE_SIZE, OVERLAP, limit_bounds=limit_bounds)
        yield sink.outputs, generator, plan, count


@pytest.mark.parametrize("name", ["mirax", "tiled_tiff", "jpeg_tiff", "rgb_jpeg_tiff", "svs"])
def test_plain_jpeg_tiffs_are_decoded_directly_and_the_rest_through_openslide(
    slides: dict[str, Path], name: str
) -> None:
    """The pixel checks below then cover both readers."""
    with open_slide(slides[name]) as slide:
        vendor = slide.properties["openslide.vendor"]
        assert vendor == {"svs": "aperio", "mirax": "mirax"}.get(name, "generic-tiff")
        direct = jpegtiff.open_level0(slides[name], slide)
        assert (direct and direct.jpeg_mode) == DIRECT.get(name)
        if direct:
            direct.close()


def test_geometry_and_descriptor_match_openslide(pyramid) -> None:  # type: ignore[no-untyped-def]
    outputs, generator, plan, count = pyramid
    assert plan.level_dimensions == list(generator.level_dimensions)
    assert plan.level_tiles == list(generator.level_tiles)
    assert outputs[Rel.DZI].decode() == generator.get_dzi("jpeg")
    expected = {
        Rel.tile(level, col, row)
        for level, (cols, rows) in enumerate(generator.level_tiles)
        for col in range(cols)
        for row in range(rows)
    }
    assert set(outputs) - {Rel.DZI} == expected
    assert count == generator.tile_count == sum(plan.tiles_per_level)


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=TILE_JPEG_QUALITY)
    return out.getvalue()


def test_full_resolution_tiles_are_openslides_pixels(pyramid) -> None:  # type: ignore[no-untyped-def]
    """Read from the slide as OpenSlide reads it and composited the same way: the same bytes."""
    outputs, generator, _, _ = pyramid
    top = generator.level_count - 1
    cols, rows = generator.level_tiles[top]
    for col, row in [(0, 0), (cols // 2, rows // 2), (cols - 1, rows - 1), (cols - 1, 0)]:
        assert outputs[Rel.tile(top, col, row)] == _jpeg(generator.get_tile(top, (col, row)))


@pytest.mark.parametrize("below_top", [1, 2, 4])
def test_halved_levels_match_openslide_within_jpeg_noise(pyramid, below_top: int) -> None:  # type: ignore[no-untyped-def]
    outputs, generator, _, _ = pyramid
    level = generator.level_count - 1 - below_top
    cols, rows = generator.level_tiles[level]
    for address in [(col, row) for col in range(cols) for row in range(rows)]:
        expected = generator.get_tile(level, address)
        with Image.open(io.BytesIO(outputs[Rel.tile(level, *address)])) as tile:
            assert tile.size == generator.get_tile_dimensions(level, address)
            # OpenSlide's own tile can be a pixel short of the size it declares (it resizes
            # keeping the aspect ratio): compare ours at that size.
            ours = tile.convert("RGB").resize(expected.size, Image.Resampling.BOX)
        difference = np.abs(np.asarray(ours, np.int16) - np.asarray(expected, np.int16))
        assert difference.mean() <= MEAN_TOLERANCE, (level, address, difference.mean())
        assert (difference > OFF).mean() <= OFF_SHARE, (level, address)


@pytest.mark.parametrize(("name", "limit_bounds"), [("jpeg_tiff", False), ("mirax", True)])
def test_a_wide_slide_made_in_stripes_has_the_same_tiles(
    slides: dict[str, Path], name: str, limit_bounds: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stripes narrower than the slide, and a small whole level, give the bytes of the pyramid
    made in one piece: halving and tile edges agree across stripe boundaries."""

    def pyramid() -> dict[str, bytes]:
        with open_slide(slides[name]) as slide:
            sink = MemorySink()
            plan = deep_zoom(slide, limit_bounds)
            background = background_rgb(slide)
            write_pyramid(slide, plan, sink, lambda *_: None, background, path=slides[name])
            return sink.outputs

    whole = pyramid()
    monkeypatch.setattr(deepzoom, "STRIPE_WIDTH", 600)
    monkeypatch.setattr(deepzoom, "WHOLE_LEVEL_BYTES", 400 * 1024)
    with open_slide(slides[name]) as slide:
        size = deep_zoom(slide, limit_bounds).size
    depth, stripes = deepzoom.plan_stripes(*size)
    assert len(stripes) >= 2 and depth >= 2, (depth, stripes)
    striped = pyramid()
    assert striped.keys() == whole.keys()
    assert [rel for rel in whole if striped[rel] != whole[rel]] == []
