"""The image processor against every image fixture: pixels where a viewer shows them, sizes,
display copies only where a browser needs them, and the reason code of every broken input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from fixtures.images import (
    BASE,
    CMYK_QUADRANTS,
    GREEN,
    MARKED_SIZE,
    RED,
    SIXTEEN_BIT_GRAY,
    SIXTEEN_BIT_RGB,
    SMALL_SIZE,
    WHITE,
    generate_images,
    marked,
)
from worker.config import Limits
from worker.errors import PermanentError, Reason
from worker.layout import Rel, SlotLayout
from worker.media import THUMBNAIL_BOX, ImageResult
from worker.media.image import process_image, thumbnail_size
from worker.sink import StorageSink
from worker.storage.local import LocalStorage

Colour = tuple[int, int, int]
LAYOUT = SlotLayout("data", "item-1")
HALF_BLUE_ON_WHITE = (127, 127, 255)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_images(tmp_path_factory.mktemp("images"))


@dataclass
class Run:
    result: ImageResult
    root: Path
    """The slot folder the sink wrote into."""

    @property
    def written(self) -> set[str]:
        return {p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()}

    def open(self, rel: str) -> Image.Image:
        image = Image.open(self.root / rel)
        image.load()
        return image

    @property
    def thumbnail(self) -> Image.Image:
        return self.open(Rel.THUMBNAIL)


def run(sample: Path, tmp_path: Path, limits: Limits | None = None) -> Run:
    storage = LocalStorage(tmp_path / "bucket")
    with StorageSink(storage, LAYOUT) as sink:
        result = process_image(sample, sink, limits or Limits(), work_dir=tmp_path / "work")
    return Run(result, tmp_path / "bucket" / LAYOUT.root)


def colour_at(image: Image.Image, fx: float, fy: float) -> Colour:
    """The colour at a fraction of the width and height (the point, not an area)."""
    x = min(int(fx * image.width), image.width - 1)
    y = min(int(fy * image.height), image.height - 1)
    r, g, b = image.convert("RGB").getpixel((x, y))  # type: ignore[misc]
    return (r, g, b)


def assert_colour(image: Image.Image, fx: float, fy: float, expected: Colour, tol: int) -> None:
    actual = colour_at(image, fx, fy)
    assert all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True)), (
        f"at ({fx}, {fy}) of {image.size}: {actual}, expected {expected} +- {tol}"
    )


def assert_marked(image: Image.Image, tol: int) -> None:
    """Red top-left, green top-right, BASE elsewhere: the picture the way a viewer shows it."""
    assert_colour(image, 0.1, 0.1, RED, tol)
    assert_colour(image, 0.9, 0.1, GREEN, tol)
    for fx, fy in ((0.5, 0.5), (0.1, 0.9), (0.9, 0.9), (0.5, 0.1)):
        assert_colour(image, fx, fy, BASE, tol)


# --- every readable kind: marks where a viewer shows them ------------------------------------

MARKED = {
    # name: (displayed size, display extension or None, tolerance)
    **{f"jpeg_exif_orientation_{n}": (MARKED_SIZE, None, 8) for n in range(1, 9)},
    "jpeg_baseline": (MARKED_SIZE, None, 8),
    "jpeg_progressive": (MARKED_SIZE, None, 8),
    "png_rgb": (SMALL_SIZE, None, 3),
    "png_icc_broken": (SMALL_SIZE, None, 3),
    "webp": (SMALL_SIZE, None, 10),
    "gif_animated": (SMALL_SIZE, None, 10),
    "bmp": (SMALL_SIZE, "jpg", 8),
    "tiff": (SMALL_SIZE, "jpg", 8),
    "tiff_orientation_6": (SMALL_SIZE, "jpg", 8),
    "tiff_multipage": (SMALL_SIZE, "jpg", 8),
    "heic": (SMALL_SIZE, "jpg", 14),
    "avif": (SMALL_SIZE, "jpg", 14),
}


@pytest.mark.parametrize("name", sorted(MARKED))
def test_marks_land_where_a_viewer_shows_them(
    name: str, samples: dict[str, Path], tmp_path: Path
) -> None:
    size, display_ext, tol = MARKED[name]
    out = run(samples[name], tmp_path)

    assert (out.result.width, out.result.height) == size
    thumbnail = out.thumbnail
    assert thumbnail.format == "JPEG"
    assert thumbnail.size == thumbnail_size(size)
    assert thumbnail.width <= THUMBNAIL_BOX[0] and thumbnail.height <= THUMBNAIL_BOX[1]
    assert_marked(thumbnail, tol)
    if display_ext is None:
        assert out.written == {Rel.THUMBNAIL}
        assert out.result.display_rel is None
    else:
        assert out.result.display_rel == Rel.display(display_ext)
        assert out.written == {Rel.THUMBNAIL, Rel.display(display_ext)}
        display = out.open(Rel.display(display_ext))
        assert display.size == size
        assert_marked(display, tol)


def test_large_jpeg_thumbnail_is_reduced_to_fit_the_box(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    out = run(samples["jpeg_exif_orientation_6"], tmp_path)
    assert out.thumbnail.size == (267, 200)  # 800x600 as displayed, fit into 356x200


def test_gray_jpeg_stays_gray(samples: dict[str, Path], tmp_path: Path) -> None:
    thumbnail = run(samples["jpeg_gray"], tmp_path).thumbnail
    luma = lambda c: round(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])  # noqa: E731
    assert thumbnail.mode == "L"
    assert_colour(thumbnail, 0.1, 0.1, (luma(RED),) * 3, 6)
    assert_colour(thumbnail, 0.9, 0.1, (luma(GREEN),) * 3, 6)
    assert_colour(thumbnail, 0.5, 0.5, (luma(BASE),) * 3, 6)


# --- colour: CMYK, 16-bit, ICC profiles, alpha -----------------------------------------------


def test_cmyk_jpeg_gives_srgb_and_a_display_copy(samples: dict[str, Path], tmp_path: Path) -> None:
    out = run(samples["jpeg_cmyk"], tmp_path)
    assert out.result.display_rel == Rel.display("jpg")
    centres = ((0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75))
    for image in (out.thumbnail, out.open(Rel.display("jpg"))):
        assert image.mode == "RGB"
        for (fx, fy), (_, srgb) in zip(centres, CMYK_QUADRANTS, strict=True):
            assert_colour(image, fx, fy, srgb, 8)


@pytest.mark.parametrize("name", ["png_16bit", "tiff_16bit"])
def test_16bit_rgb_keeps_its_colours(name: str, samples: dict[str, Path], tmp_path: Path) -> None:
    out = run(samples[name], tmp_path)
    assert out.result.display_rel == Rel.display("jpg")
    (_, left), (_, right) = SIXTEEN_BIT_RGB
    for image in (out.thumbnail, out.open(Rel.display("jpg"))):
        assert_colour(image, 0.25, 0.5, left, 6)
        assert_colour(image, 0.75, 0.5, right, 6)


@pytest.mark.parametrize("name", ["png_16bit_gray", "tiff_16bit_gray"])
def test_16bit_gray_keeps_its_range(name: str, samples: dict[str, Path], tmp_path: Path) -> None:
    out = run(samples[name], tmp_path)
    assert out.result.display_rel == Rel.display("jpg")
    (_, left), (_, right) = SIXTEEN_BIT_GRAY
    for image in (out.thumbnail, out.open(Rel.display("jpg"))):
        assert_colour(image, 0.25, 0.5, (left,) * 3, 4)
        assert_colour(image, 0.75, 0.5, (right,) * 3, 4)


@pytest.mark.parametrize("name", ["png_icc_swapped", "jpeg_icc_swapped"])
def test_icc_profile_is_converted_to_srgb(
    name: str, samples: dict[str, Path], tmp_path: Path
) -> None:
    """Pixels (255, 0, 0) under a profile whose red primary is sRGB's green are sRGB green."""
    out = run(samples[name], tmp_path)
    assert out.written == {Rel.THUMBNAIL}  # browsers apply profiles themselves
    assert_colour(out.thumbnail, 0.25, 0.5, (0, 255, 0), 6)
    assert_colour(out.thumbnail, 0.75, 0.5, (0, 0, 255), 6)


def test_broken_icc_profile_is_ignored_with_a_warning(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    out = run(samples["png_icc_broken"], tmp_path)
    assert any("colour profile" in w for w in out.result.warnings)


@pytest.mark.parametrize("name", ["png_alpha", "webp_lossless_alpha", "tiff_alpha"])
def test_alpha_is_composited_on_white(name: str, samples: dict[str, Path], tmp_path: Path) -> None:
    thumbnail = run(samples[name], tmp_path).thumbnail
    assert thumbnail.mode == "RGB"
    assert_colour(thumbnail, 1 / 6, 0.5, RED, 4)
    assert_colour(thumbnail, 0.5, 0.5, HALF_BLUE_ON_WHITE, 4)
    assert_colour(thumbnail, 5 / 6, 0.5, WHITE, 2)


def test_display_copy_keeps_alpha_as_png(samples: dict[str, Path], tmp_path: Path) -> None:
    out = run(samples["tiff_alpha"], tmp_path)
    assert out.result.display_rel == Rel.display("png")
    display = out.open(Rel.display("png"))
    assert display.mode == "RGBA"
    assert display.size == SMALL_SIZE
    alphas = [display.getpixel((int(f * display.width), 100))[3] for f in (1 / 6, 0.5, 5 / 6)]  # type: ignore[index]
    assert alphas == [255, 128, 0]


def test_palette_transparency_is_white(samples: dict[str, Path], tmp_path: Path) -> None:
    out = run(samples["png_palette"], tmp_path)
    assert out.written == {Rel.THUMBNAIL}
    assert_colour(out.thumbnail, 0.1, 0.1, RED, 3)
    assert_colour(out.thumbnail, 0.9, 0.1, GREEN, 3)
    assert_colour(out.thumbnail, 0.25, 0.75, BASE, 3)
    assert_colour(out.thumbnail, 0.75, 0.75, WHITE, 3)


# --- bad input -------------------------------------------------------------------------------

BROKEN = {
    "empty": (Reason.CORRUPT_MEDIA, "empty"),
    "truncated_jpeg": (Reason.CORRUPT_MEDIA, "truncated"),
    "corrupt_png": (Reason.CORRUPT_MEDIA, "damaged"),
    "random_bytes": (Reason.UNSUPPORTED_FORMAT, "not an image"),
    "text": (Reason.UNSUPPORTED_FORMAT, "not an image"),
    "bomb_png": (Reason.TOO_LARGE, "20000x15000"),
    "bomb_jpeg": (Reason.TOO_LARGE, "3600 megapixels"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_bad_input_fails_with_its_reason(
    name: str, samples: dict[str, Path], tmp_path: Path
) -> None:
    reason, words = BROKEN[name]
    with pytest.raises(PermanentError) as caught:
        run(samples[name], tmp_path)
    assert caught.value.reason == reason
    assert words in str(caught.value)
    assert samples[name].name in str(caught.value)  # the user learns which file
    assert not (tmp_path / "bucket" / LAYOUT.root).exists()


def test_pixel_limit_is_configurable_and_checked_before_decoding(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(PermanentError) as caught:
        run(samples["jpeg_baseline"], tmp_path, Limits(max_image_pixels=400_000))
    assert caught.value.reason == Reason.TOO_LARGE
    assert "800x600" in str(caught.value)
    assert not (tmp_path / "bucket").exists()


def test_progress_reaches_its_total(samples: dict[str, Path], tmp_path: Path) -> None:
    calls: list[tuple[str, int, int | None]] = []
    storage = LocalStorage(tmp_path / "bucket")
    with StorageSink(storage, LAYOUT) as sink:
        process_image(samples["bmp"], sink, Limits(), lambda *a: calls.append(a))
    assert calls[0] == ("image", 0, 2)
    assert calls[-1] == ("image", 2, 2)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((4000, 3000), (267, 200)),
        ((12000, 9000), (267, 200)),
        ((1920, 1080), (356, 200)),
        ((200, 1000), (40, 200)),
        ((356, 200), (356, 200)),
        ((120, 80), (120, 80)),
        ((100_000, 10), (356, 1)),
    ],
)
def test_thumbnail_size_fits_the_box(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert thumbnail_size(size) == expected


# --- memory: a JPEG thumbnail is decoded DCT-scaled, never at full size ----------------------

_MEASURE = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from worker.config import Limits
    from worker.layout import SlotLayout
    from worker.media.image import process_image
    from worker.sink import StorageSink
    from worker.storage.local import LocalStorage

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with StorageSink(LocalStorage(Path(sys.argv[2])), SlotLayout("data", "big")) as sink:
        result = process_image(Path(sys.argv[1]), sink, Limits())
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(before, after, result.width, result.height)
    """
)


def test_large_jpeg_thumbnail_never_decodes_full_size(tmp_path: Path) -> None:
    source = tmp_path / "big.jpg"
    marked((8000, 6000)).save(source, quality=80)  # 48 MP: 144 MB if decoded at full size
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(source), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    before_kib, after_kib, width, height = map(int, done.stdout.split())
    assert (width, height) == (8000, 6000)
    assert (after_kib - before_kib) * 1024 < 20 * 1024**2
    thumbnail = Image.open(tmp_path / "out" / SlotLayout("data", "big").key(Rel.THUMBNAIL))
    assert thumbnail.size == (267, 200)
    assert_marked(thumbnail, 8)
