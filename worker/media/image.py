"""The image processor (SPEC 4.1): `thumbnail.jpg` always, `display.*` when a browser needs it.

Memory and time are bounded by how the source is decoded, not by what is done afterwards:
- the pixel limit is decided from the header (Pillow's `open` reads only the header), before a
  single pixel is decoded, so a decompression bomb costs nothing;
- a JPEG thumbnail is decoded DCT-scaled by libjpeg (1/2 to 1/8 of full size), so a 108 MP photo
  is decoded straight into a ~1.7 MP image and never exists at full resolution;
- a source that needs a display copy is decoded once at full size; every conversion replaces its
  input (`_replace` frees the old pixels), so at most one step's input and output live at once,
  and the display copy is encoded straight to a scratch file, not into memory.

Only the formats of SPEC 4.1 are opened (`SUPPORTED_FORMATS`): Pillow reads many more, and each
obscure decoder is attack surface that no user asked for.
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pillow_heif
from PIL import ExifTags, Image, ImageCms, UnidentifiedImageError

from worker.errors import CorruptMedia, NotFound, TooLarge, UnsupportedFormat
from worker.layout import Rel
from worker.limits import check_allocation
from worker.media import (
    DISPLAY_QUALITY,
    THUMBNAIL_QUALITY,
    ImageResult,
    ProgressCallback,
    Sink,
    fit_thumbnail,
    no_progress,
)

if TYPE_CHECKING:
    from worker.config import Limits

log = logging.getLogger(__name__)

pillow_heif.register_heif_opener()

SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF", "AVIF")
BROWSER_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP"})
"""Formats every browser shows as they are (when 8-bit and not CMYK)."""
_FORMAT_NAMES = "JPEG, PNG, GIF, WebP, BMP, TIFF, HEIC and AVIF"
_DCT_SCALED = frozenset({"JPEG", "MPO"})
# Pillow's decoders report damaged data with any of these, depending on the format.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError)
_T = Image.Transpose
_ORIENTATION_OPS = {2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM}
_ORIENTATION_OPS |= {5: _T.TRANSPOSE, 6: _T.ROTATE_270, 7: _T.TRANSVERSE, 8: _T.ROTATE_90}
_WHITE = 255
_BYTES_PER_PIXEL = 4


@dataclass(frozen=True)
class _Source:
    name: str
    format: str
    size: tuple[int, int]
    """As stored, before orientation."""
    orientation: int
    display_reason: str | None
    """Why a browser cannot show the source as it is; None when it can."""
    icc: bytes | None

    @property
    def swaps_axes(self) -> bool:
        return self.orientation in (5, 6, 7, 8)

    @property
    def displayed_size(self) -> tuple[int, int]:
        width, height = self.size
        return (height, width) if self.swaps_axes else (width, height)


def process_image(
    path: Path,
    sink: Sink,
    limits: Limits,
    progress: ProgressCallback = no_progress,
    *,
    work_dir: Path | None = None,
) -> ImageResult:
    """Write `Rel.THUMBNAIL` (and `Rel.display(...)` when needed) for the image at `path`.

    `work_dir` holds the display copy between encoding and upload (the system temp folder when
    None). Raises `TooLarge`, `CorruptMedia`, `UnsupportedFormat` or `NotFound`."""
    name = path.name
    try:
        fp = path.open("rb")
    except FileNotFoundError:
        raise NotFound(f"{name}: the local copy of the source is missing") from None
    with fp:
        if os.fstat(fp.fileno()).st_size == 0:
            raise CorruptMedia(
                f"{name} is empty (0 bytes): the upload or copy did not complete;"
                " upload the file again"
            )
        image, source = _open(fp, name, limits)
        warnings_: list[str] = []
        total = 1 if source.display_reason is None else 2
        progress("image", 0, total)
        if source.display_reason is None:
            display_rel = None
            _write_thumbnail_only(image, source, sink, warnings_)
        else:
            display_rel = _write_with_display(image, source, sink, warnings_, work_dir)
    progress("image", total, total)
    width, height = source.displayed_size
    log.debug("%s: %s %dx%d, display %s", name, source.format, width, height, display_rel)
    return ImageResult(width=width, height=height, display_rel=display_rel, warnings=warnings_)


thumbnail_size = fit_thumbnail


# --- opening and inspecting ------------------------------------------------------------------


def _open(fp: IO[bytes], name: str, limits: Limits) -> tuple[Image.Image, _Source]:
    # Pillow's own bomb check uses a process-wide limit: make it ours. It then raises only past
    # twice the limit (from the header too); between the two our check below decides.
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    with _decoding(name, "image"), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(fp, formats=SUPPORTED_FORMATS)
    width, height = image.size
    if width <= 0 or height <= 0:
        raise CorruptMedia(f"{name}: the header gives an empty size {width}x{height}")
    if width * height > limits.max_image_pixels:
        raise TooLarge(
            f"{name}: {width}x{height} is {width * height / 1e6:.0f} megapixels, over the limit"
            f" of {limits.max_image_pixels / 1e6:.0f} (limits.max_image_pixels); downscale the"
            " image, or raise the limit if images this large are expected"
        )
    with _decoding(name, image.format or "image"):
        display_reason = _display_reason(image)  # first: reading a PNG's EXIF decodes it
        source = _Source(
            name=name,
            format=image.format or "",
            size=image.size,
            orientation=_orientation(image),
            display_reason=display_reason,
            icc=image.info.get("icc_profile") or None,
        )
    if source.format not in _DCT_SCALED or source.display_reason is not None:
        # Decoded at full size (a JPEG thumbnail is decoded DCT-scaled, far smaller).
        check_allocation(f"{name}: {width}x{height}", width * height * _BYTES_PER_PIXEL, limits)
    return image, source


@contextmanager
def _decoding(name: str, what: str) -> Iterator[None]:
    """Pillow's errors, as the reason codes of SPEC 9, with a message that says what to do."""
    try:
        yield
    except Image.DecompressionBombError as exc:
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed[1]) / 1e6:.0f} megapixels" if claimed else "a size"
        raise TooLarge(
            f"{name}: its header claims {size}, more than twice the limit of"
            f" {Image.MAX_IMAGE_PIXELS or 0:.0f} pixels (limits.max_image_pixels); downscale the"
            " image, or raise the limit if images this large are expected"
        ) from None
    except UnidentifiedImageError:
        raise UnsupportedFormat(
            f"{name} is not an image this worker reads ({_FORMAT_NAMES}): its content matches"
            " none of them; check that the file is an image and was not renamed from another type"
        ) from None
    except _DECODE_ERRORS as exc:
        raise CorruptMedia(
            f"{name}: the {what} data is damaged or incomplete ({exc}); export or upload the"
            " original file again"
        ) from None


def _orientation(image: Image.Image) -> int:
    """The orientation left for us to apply. Pillow's TIFF reader applies the tag itself while
    loading (and reports the displayed size); the HEIF decoder applies the container's rotation
    and reports 1; Pillow's AVIF reader reports the container's rotation here, for us."""
    if image.format == "TIFF":
        return 1
    value = image.getexif().get(ExifTags.Base.Orientation, 1)
    return value if value in _ORIENTATION_OPS else 1


def _display_reason(image: Image.Image) -> str | None:
    if image.format not in BROWSER_FORMATS:
        return f"browsers do not show {image.format}"
    if image.mode == "CMYK":
        return "CMYK"
    if _is_high_bit_depth(image):
        return "more than 8 bits per sample"
    return None


def _is_high_bit_depth(image: Image.Image) -> bool:
    """16-bit sources; Pillow reads 16-bit RGB(A) PNGs as 8-bit modes, so ask the tile's raw
    mode (known before decoding) as well."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        return True
    for tile in image.tile:
        args = tile.args
        rawmode = args if isinstance(args, str) else (args[0] if args else "")
        if ";16" in str(rawmode):
            return True
    return False


# --- the two flows ---------------------------------------------------------------------------


def _write_thumbnail_only(
    image: Image.Image, source: _Source, sink: Sink, warnings_: list[str]
) -> None:
    target = _stored_target(source)
    if source.format in _DCT_SCALED:
        image.draft(None, target)
    with _decoding(source.name, source.format):
        image.load()
    small = _replace(image, _to_base_mode(image))
    small = _replace(small, _resize(small, target))
    small = _replace(small, _to_srgb(small, source, warnings_))
    small = _replace(small, _orient(small, source.orientation))
    sink.put_bytes(Rel.THUMBNAIL, _encode_thumbnail(small), "image/jpeg")
    small.close()


def _write_with_display(
    image: Image.Image,
    source: _Source,
    sink: Sink,
    warnings_: list[str],
    work_dir: Path | None,
) -> str:
    log.debug("%s: writing a display copy (%s)", source.name, source.display_reason)
    with _decoding(source.name, source.format):
        image.load()
    full = _replace(image, _to_base_mode(image))
    full = _replace(full, _to_srgb(full, source, warnings_))
    full = _replace(full, _orient(full, source.orientation))
    if full.mode in ("RGBA", "LA") and full.getextrema()[-1][0] == _WHITE:
        full = _replace(full, full.convert(full.mode[:-1]))  # fully opaque: alpha adds nothing
    small = _resize(full, thumbnail_size(full.size))
    sink.put_bytes(Rel.THUMBNAIL, _encode_thumbnail(small), "image/jpeg")
    ext = "png" if full.mode in ("RGBA", "LA") else "jpg"
    rel = Rel.display(ext)
    encoded = _encode_display(full, ext, work_dir)
    full.close()
    sink.put_file(rel, encoded, _CONTENT_TYPES[ext], delete_after=True)
    return rel


_CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg"}


def _stored_target(source: _Source) -> tuple[int, int]:
    """The thumbnail size in the stored (not yet oriented) frame."""
    width, height = thumbnail_size(source.displayed_size)
    return (height, width) if source.swaps_axes else (width, height)


# --- pixel steps: each returns a new image, or its input when there is nothing to do ---------


def _replace(old: Image.Image, new: Image.Image) -> Image.Image:
    """Free `old`'s pixels as soon as `new` exists, whoever still holds a reference to `old`."""
    if new is not old:
        old.close()
    return new


def _to_base_mode(image: Image.Image) -> Image.Image:
    """RGB, RGBA, L, LA or CMYK: the modes the later steps work in, 8 bits per sample."""
    mode = image.mode
    if mode in ("L", "RGB") and image.info.get("transparency") is not None:
        return image.convert("RGBA")  # a PNG tRNS colour key: that colour is transparent
    if mode in ("RGB", "RGBA", "L", "LA", "CMYK"):
        return image
    if mode in ("P", "PA"):
        transparent = mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if transparent else "RGB")
    if mode in ("RGBa", "La"):
        return image.convert(mode.upper())
    if mode.startswith("I") or mode == "F":
        return _gray_to_8bit(image)
    if mode == "1":
        return image.convert("L")
    try:
        return image.convert("RGB")  # RGBX, YCbCr, HSV, ...
    except ValueError:
        raise UnsupportedFormat(f"pixel format {mode} cannot be shown; convert to RGB") from None


def _gray_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale keeps its range (v >> 8, within a level of v / 257); other integer or
    float data is stretched from its own minimum to maximum."""
    import numpy as np  # only high-bit-depth sources pay for importing numpy

    values = np.asarray(image)
    low, high = float(values.min()), float(values.max())
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and high <= 65535):
        shift = 0 if high <= 255 and image.mode == "I" else 8
        return Image.fromarray((values >> shift).astype(np.uint8))
    if image.mode == "F" and low >= 0 and high <= 1:
        low, high = 0.0, 1.0
    scaled = (values.astype(np.float32) - low) * (255.0 / ((high - low) or 1.0))
    return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8))


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    # reducing_gap: a box reduce first, then Lanczos over the last factor of 2 (Pillow's
    # thumbnail trick): the cost no longer grows with the source size.
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def _to_srgb(image: Image.Image, source: _Source, warnings_: list[str]) -> Image.Image:
    """Convert through the embedded ICC profile to sRGB; CMYK without a profile uses Pillow's
    (1 - C)(1 - K) formula. An unreadable profile is ignored, with a warning."""
    try:
        transform = _transform(source.icc, image.mode) if source.icc else None
        if transform is not None and image.mode != "CMYK":
            ImageCms.applyTransform(image, transform, inPlace=True)  # no second full copy
            return image
        if transform is not None:
            converted = ImageCms.applyTransform(image, transform)
            assert converted is not None
            return converted
    except (ImageCms.PyCMSError, OSError) as exc:
        _warn(warnings_, f"{source.name}: colour profile ignored ({exc}); colours shown as sRGB")
    return image.convert("RGB") if image.mode == "CMYK" else image


_PROFILE_SPACES = {"RGB": "RGB", "RGBA": "RGB", "CMYK": "CMYK"}


@lru_cache(maxsize=16)
def _transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """To sRGB; None when the profile is sRGB already, or is not for `mode` pixels (grayscale
    profiles, or a mismatch: nothing sound to do). Raises PyCMSError when unreadable."""
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    if _PROFILE_SPACES.get(mode) != profile.profile.xcolor_space.strip():
        return None
    if ImageCms.getProfileDescription(profile).strip().startswith("sRGB"):
        return None
    return ImageCms.buildTransform(
        profile, _srgb_profile(), mode, "RGB" if mode == "CMYK" else mode
    )


@lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _orient(image: Image.Image, orientation: int) -> Image.Image:
    op = _ORIENTATION_OPS.get(orientation)
    return image if op is None else image.transpose(op)


def _on_white(image: Image.Image) -> Image.Image:
    """JPEG has no alpha: composite on white, as a browser shows a transparent image."""
    if image.mode not in ("RGBA", "LA"):
        return image
    background = Image.new(image.mode[:-1], image.size, (_WHITE,) * (len(image.mode) - 1))
    background.paste(image, mask=image.getchannel("A"))
    return background


# --- encoding --------------------------------------------------------------------------------


def _encode_thumbnail(image: Image.Image) -> bytes:
    out = io.BytesIO()
    _on_white(image).save(out, "JPEG", quality=THUMBNAIL_QUALITY)
    return out.getvalue()


def _encode_display(image: Image.Image, ext: str, work_dir: Path | None) -> Path:
    """Encode to a scratch file (a full-size PNG can be hundreds of MB: not for memory)."""
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="display-", suffix=f".{ext}", dir=work_dir)
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            if ext == "png":
                image.save(out, "PNG")
            else:
                image.save(out, "JPEG", quality=DISPLAY_QUALITY)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _warn(warnings_: list[str], message: str) -> None:
    log.warning("%s", message)
    warnings_.append(message)
