"""Whole-slide images through OpenSlide: thumbnail, Deep Zoom pyramid, associated images, fields.

`path` is a local slide: one file of any format OpenSlide reads (SVS, NDPI, generic tiled TIFF,
...), or the file a multi-file slide is opened by with its other files beside it (MIRAX, DICOM),
checked first by its format's check (`worker.kinds.registry.check_local`). The thumbnail reads
the level closest to its size in bounded strips, so its work grows with the thumbnail, not the
slide; the Deep Zoom pyramid reads the slide once, at full resolution, in bands
(`worker.media.deepzoom`).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openslide
from openslide import OpenSlide, OpenSlideError, OpenSlideUnsupportedFormatError
from PIL import Image, ImageCms

from worker.config import Limits
from worker.errors import CorruptMedia, TooLarge, UnsupportedFormat
from worker.layout import Rel
from worker.media import (
    DISPLAY_QUALITY,
    THUMBNAIL_BOX,
    THUMBNAIL_QUALITY,
    ProgressCallback,
    Sink,
    SlideResult,
    fit_thumbnail,
    no_progress,
)
from worker.media.deepzoom import deep_zoom, write_pyramid

log = logging.getLogger(__name__)

STRIP_PIXELS = 16 * 1024**2
"""Pixels read at once for the thumbnail (64 MB as RGBA): bounds memory on poorly tiered slides."""
TILE_CACHE_BYTES = 4 * 1024**2
"""OpenSlide's decoded-tile cache. Its default (32 MB) fills on any large slide, so a big slide
peaked 30+ MB above a small one; 4 MB keeps the neighbouring source tiles that the Deep Zoom
tiles' overlap reads again, at about the same speed (bench/RESULTS-slides.md)."""


def process_slide(
    path: Path,
    sink: Sink,
    limits: Limits,
    progress: ProgressCallback = no_progress,
    limit_bounds: bool = False,
    checked: bool = False,
) -> SlideResult:
    """Write `thumbnail.jpg`, the Deep Zoom pyramid and `associated/<name>.jpg` for one slide.
    Its format's checks (completeness, header claims) run first, unless already `checked`."""
    if not checked:
        from worker.kinds.registry import check_local

        check_local(path, limits)
    with open_slide(path) as slide, openslide_errors(path, "reading"):
        _check_size(path, slide, limits)
        background = background_rgb(slide)
        to_srgb = _srgb_transform(slide)
        progress("thumbnail", 0, 1)
        sink.put_bytes(Rel.THUMBNAIL, _jpeg(thumbnail(slide, background, to_srgb)), "image/jpeg")
        progress("thumbnail", 1, 1)
        associated = _write_associated(slide, sink, background, to_srgb)
        pyramid = deep_zoom(slide, limit_bounds)
        tiles = write_pyramid(slide, pyramid, sink, progress, background, to_srgb, path=path)
        return _result(slide, pyramid.level_count, tiles, associated)


@contextmanager
def open_slide(path: Path) -> Iterator[OpenSlide]:
    """Open with OpenSlide, translating its errors; closes the slide afterwards."""
    if OpenSlide.detect_format(path) is None:
        raise UnsupportedFormat(
            f"{path.name} is not a whole-slide image OpenSlide can read (MIRAX .mrxs, DICOM, SVS,"
            " NDPI, generic tiled TIFF, ...); a plain image should be registered as type 'image'"
        )
    with openslide_errors(path, "opening"):
        slide = OpenSlide(path)
        slide.set_cache(openslide.OpenSlideCache(TILE_CACHE_BYTES))
    try:
        yield slide
    finally:
        slide.close()


@contextmanager
def openslide_errors(path: Path, doing: str) -> Iterator[None]:
    """Translate OpenSlide's errors into the worker's (OpenSlide raises one class for all)."""
    try:
        yield
    except OpenSlideUnsupportedFormatError as exc:
        raise UnsupportedFormat(
            f"{path.name}: OpenSlide does not support this slide ({exc}); convert it to a"
            " pyramidal tiled TIFF or upload it in its scanner's native format"
        ) from None
    except OpenSlideError as exc:
        raise CorruptMedia(
            f"{path.name}: the slide is damaged or incomplete, OpenSlide failed {doing} it"
            f" ({exc}); upload it again from the scanner's export"
        ) from None


def _check_size(path: Path, slide: OpenSlide, limits: Limits) -> None:
    width, height = slide.dimensions
    if width * height > limits.max_slide_pixels:
        raise TooLarge(
            f"{path.name} is {width}x{height} pixels, over the limit of {limits.max_slide_pixels:,}"
            " pixels per slide (limits.max_slide_pixels); raise it if this slide is expected"
        )


def background_rgb(slide: OpenSlide) -> tuple[int, int, int]:
    """The slide's background colour (white when the format does not say)."""
    value = slide.properties.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR, "ffffff")
    try:
        return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
    except ValueError:
        return 255, 255, 255


def _srgb_transform(slide: OpenSlide) -> ImageCms.ImageCmsTransform | None:
    """Browsers assume sRGB: slides with an embedded colour profile are converted to it."""
    profile = slide.color_profile
    if profile is None:
        return None
    return ImageCms.buildTransform(profile, ImageCms.createProfile("sRGB"), "RGB", "RGB")


fit = fit_thumbnail


def thumbnail(
    slide: OpenSlide,
    background: tuple[int, int, int],
    to_srgb: ImageCms.ImageCmsTransform | None = None,
    box: tuple[int, int] = THUMBNAIL_BOX,
) -> Image.Image:
    """The whole slide fitting `box`, from the level closest to that size, composited on the
    background colour (never by dropping alpha: unscanned areas would turn black)."""
    out_w, out_h = fit(slide.dimensions, box)
    level = slide.get_best_level_for_downsample(slide.dimensions[0] / out_w)
    level_w, level_h = slide.level_dimensions[level]
    scale = slide.level_downsamples[level]
    step = level_h / out_h
    rows_per_strip = max(1, int(STRIP_PIXELS // (level_w * step)))
    result = Image.new("RGB", (out_w, out_h), background)
    for top in range(0, out_h, rows_per_strip):
        bottom = min(out_h, top + rows_per_strip)
        # Read a few rows beyond the strip so the resampling filter sees across its edges.
        y0 = max(0, math.floor(top * step) - 3)
        y1 = min(level_h, math.ceil(bottom * step) + 3)
        region = slide.read_region((0, round(y0 * scale)), level, (level_w, y1 - y0))
        flat = Image.new("RGB", region.size, background)
        flat.paste(region, mask=region)
        source_box = (0.0, top * step - y0, float(level_w), bottom * step - y0)
        strip = flat.resize((out_w, bottom - top), Image.Resampling.LANCZOS, box=source_box)
        result.paste(strip, (0, top))
    return ImageCms.applyTransform(result, to_srgb) if to_srgb else result


def _write_associated(
    slide: OpenSlide,
    sink: Sink,
    background: tuple[int, int, int],
    to_srgb: ImageCms.ImageCmsTransform | None,
) -> list[str]:
    names = []
    for name, image in sorted(slide.associated_images.items()):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, background)
        flat.paste(rgba, mask=rgba)
        if to_srgb:
            flat = ImageCms.applyTransform(flat, to_srgb)
        sink.put_bytes(Rel.associated(name), _jpeg(flat, DISPLAY_QUALITY), "image/jpeg")
        names.append(name)
    return names


def _jpeg(image: Image.Image, quality: int = THUMBNAIL_QUALITY) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _float_property(slide: OpenSlide, name: str) -> float | None:
    try:
        return float(slide.properties[name])
    except (KeyError, ValueError):
        return None


def _result(slide: OpenSlide, dzi_levels: int, tiles: int, associated: list[str]) -> SlideResult:
    width, height = slide.dimensions
    return SlideResult(
        width=width,
        height=height,
        level_count=slide.level_count,
        dzi_levels=dzi_levels,
        tile_count=tiles,
        mpp_x=_float_property(slide, openslide.PROPERTY_NAME_MPP_X),
        mpp_y=_float_property(slide, openslide.PROPERTY_NAME_MPP_Y),
        objective_power=_float_property(slide, openslide.PROPERTY_NAME_OBJECTIVE_POWER),
        vendor=slide.properties.get(openslide.PROPERTY_NAME_VENDOR),
        associated=associated,
    )
