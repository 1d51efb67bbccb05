"""Images: photos and pictures (JPEG, PNG, GIF, WebP, BMP, TIFF, HEIF/AVIF).

Recognised by their first bytes, else their extension. A TIFF is an image unless its first IFD
has a TileWidth tag (tiled TIFFs are what slide scanners and pyramid tools write): then it is a
slide. ISO-BMFF files (`ftyp`) are images for still-image brands (HEIF, AVIF) and videos for
movie brands, so that one table serves both kinds.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from worker.kinds import Format, MediaKind, ProcessContext, extensions, lazy

if TYPE_CHECKING:
    from worker.media import MediaResult

NAME = "image"

_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
_TIFF_TILE_WIDTH = 322
_BMP_DIB_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
# ISO-BMFF brands (the `ftyp` box): still images (HEIF, AVIF) versus movies.
_IMAGE_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
)
_VIDEO_BRANDS = frozenset(
    {b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"qt  ", b"M4V "}
    | {b"M4VH", b"M4VP", b"3gp4", b"3gp5", b"3gp6", b"3g2a", b"dash", b"mmp4", b"f4v ", b"MSNV"}
    | {b"XAVC", b"isml", b"piff", b"cmfc", b"av01", b"mp71"}
)
_AUDIO_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "})


def is_tiff(head: bytes) -> bool:
    return head[:4] in _TIFF_MAGIC


def _tiff(head: bytes) -> str | None:
    if not is_tiff(head):
        return None
    return "slide" if _tiff_is_tiled(head) else NAME


def _tiff_is_tiled(head: bytes) -> bool:
    """Whether the first IFD has a TileWidth tag; False when the IFD lies beyond `head`."""
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\0", b"\0+")
    try:
        if big:
            offset = struct.unpack_from(order + "Q", head, 8)[0]
            count = struct.unpack_from(order + "Q", head, offset)[0]
            first, entry_size = offset + 8, 20
        else:
            offset = struct.unpack_from(order + "I", head, 4)[0]
            count = struct.unpack_from(order + "H", head, offset)[0]
            first, entry_size = offset + 2, 12
    except struct.error:
        return False
    # Read the entries that lie within `head`; tags are sorted, so a cut list still tells.
    for i in range(min(count, 4096)):
        at = first + i * entry_size
        if at + 2 > len(head):
            return False
        tag = struct.unpack_from(order + "H", head, at)[0]
        if tag == _TIFF_TILE_WIDTH:
            return True
        if tag > _TIFF_TILE_WIDTH:
            return False
    return False


def _raster(head: bytes) -> str | None:
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")):
        return NAME
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return NAME
    # "BM" alone is too weak (text can start with it): the DIB header size must be a real one.
    bmp = (
        head[:2] == b"BM"
        and len(head) >= 18
        and struct.unpack_from("<I", head, 14)[0] in _BMP_DIB_HEADER_SIZES
    )
    return NAME if bmp else None


def _isobmff(head: bytes) -> str | None:
    if head[4:8] != b"ftyp":
        return None
    box_size = struct.unpack_from(">I", head, 0)[0]
    major = head[8:12]
    end = min(max(box_size, 16), len(head))
    compatible = {head[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _IMAGE_BRANDS:
        return NAME
    if major in _VIDEO_BRANDS:
        return "video"
    if major in _AUDIO_BRANDS:
        return None
    # Some writers use a generic major brand and list the real one as compatible; a movie may
    # list `mif1` too, so movie brands win. Anything else (audio-only M4A, camera raw) is left
    # to the extension.
    if compatible & _VIDEO_BRANDS:
        return "video"
    if compatible & _IMAGE_BRANDS:
        return NAME
    return None


FORMATS = (
    Format("tiff", NAME, extensions("tif", "tiff"), content=_tiff, content_decides=True),
    Format(
        "raster",
        NAME,
        extensions("jpg", "jpeg", "jpe", "jfif", "png", "gif", "webp", "bmp", "dib"),
        content=_raster,
    ),
    Format("heif", NAME, extensions("heic", "heif", "hif", "avif"), content=_isobmff),
)


def _process(ctx: ProcessContext) -> MediaResult:
    from worker.media.image import process_image

    return process_image(
        ctx.path, ctx.sink, ctx.settings.limits, ctx.progress, work_dir=ctx.work_dir
    )


KIND = MediaKind(
    name=NAME,
    queue="images",
    task="mediaworker.process_image",
    process=_process,
    payload=lazy("worker.payloads:image_payload"),
    payload_model="worker.payloads:ImagePayload",
    assets=lazy("worker.verify:image_assets"),
    claims=lazy("worker.claims:image_claims"),
)
