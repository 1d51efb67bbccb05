"""What kind of item a source is (SPEC 3, `type: auto`): its first bytes first, then its name.

Content wins over the extension, because keys are named by people and tools that get them wrong
(`photo.jpg` that is really an MP4). A DICOM file (`DICM` after its 128-byte preamble) is a slide:
the worker reads DICOM only as whole-slide images. Two exceptions, both about whole-slide images:
- the slide extensions (`.svs`, `.ndpi`, `.mrxs`, ...) decide on their own, since those files are
  TIFF-like (or, for MIRAX, an index next to a folder) and their content says "TIFF" at best;
- a plain TIFF is a slide when its first IFD, if it lies within the sniffed bytes, has a TileWidth
  tag: tiled TIFFs are what slide scanners and pyramid tools write, and what OpenSlide reads.
"""

from __future__ import annotations

import mimetypes
import posixpath
import struct

from worker.items import ItemType
from worker.media import dicom

SNIFF_BYTES = 4096
"""How much of the start of an object `sniff` wants to see."""

SLIDE_EXTENSIONS = frozenset(
    {".mrxs", ".svs", ".ndpi", ".scn", ".bif", ".vms", ".vmu", ".svslide", dicom.SUFFIX}
)
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".dib", ".tif", ".tiff"}
    | {".heic", ".heif", ".hif", ".avif"}
)
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg"}
    | {".mpeg", ".wmv", ".asf", ".flv", ".3gp", ".3g2", ".ogv"}
)

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
# QuickTime files written without `ftyp` start with one of these atoms.
_QUICKTIME_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
_TIFF_TILE_WIDTH = 322
_BMP_DIB_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})

_CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".avif": "image/avif",
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".ts": "video/mp2t",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".dzi": "application/xml",
    ".json": "application/json",
    ".txt": "text/plain",
    ".gz": "application/gzip",
}


def sniff(head: bytes, name: str) -> ItemType | None:
    """IMAGE, VIDEO or SLIDE for a source whose first bytes are `head` (ideally `SNIFF_BYTES`
    of them) and whose key or file name is `name`; None when neither says what it is. A folder
    key (`dir/`) is a DICOM series, so a slide."""
    ext = _extension(name)
    if ext in SLIDE_EXTENSIONS or dicom.is_folder_key(name):
        return ItemType.SLIDE
    by_content = _sniff_content(head)
    if by_content is not None:
        return by_content
    return _by_extension(ext)


def content_type_for(name: str) -> str:
    """The Content-Type to store an object under, from its name."""
    ext = _extension(name)
    if ext in _CONTENT_TYPES:
        return _CONTENT_TYPES[ext]
    guessed, _ = mimetypes.guess_type(posixpath.basename(name))
    return guessed or "application/octet-stream"


def _extension(name: str) -> str:
    return posixpath.splitext(posixpath.basename(name.replace("\\", "/")))[1].lower()


def _by_extension(ext: str) -> ItemType | None:
    if ext in IMAGE_EXTENSIONS:
        return ItemType.IMAGE
    if ext in VIDEO_EXTENSIONS:
        return ItemType.VIDEO
    return None


def _sniff_content(head: bytes) -> ItemType | None:
    if dicom.is_dicom(head):
        return ItemType.SLIDE
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return ItemType.SLIDE if _tiff_is_tiled(head) else ItemType.IMAGE
    if _is_plain_image(head):
        return ItemType.IMAGE
    if head[4:8] == b"ftyp":
        return _sniff_ftyp(head)
    if _is_video(head):
        return ItemType.VIDEO
    return None


def _is_plain_image(head: bytes) -> bool:
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    # "BM" alone is too weak (text can start with it): the DIB header size must be a real one.
    return (
        head[:2] == b"BM"
        and len(head) >= 18
        and struct.unpack_from("<I", head, 14)[0] in _BMP_DIB_HEADER_SIZES
    )


def _is_video(head: bytes) -> bool:
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska, WebM
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return True
    if head[4:8] in _QUICKTIME_ATOMS:
        return True
    if head[:4] == b"\x00\x00\x01\xba" or head[:3] == b"FLV":  # MPEG program stream, Flash
        return True
    if head[:8] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11":  # ASF (WMV)
        return True
    return _is_transport_stream(head)


def _is_transport_stream(head: bytes) -> bool:
    """MPEG-TS: a sync byte every 188 bytes (M2TS: every 192, after a 4-byte timecode)."""
    for start, step in ((0, 188), (4, 192)):
        offsets = [start + i * step for i in range(3)]
        usable = [o for o in offsets if o < len(head)]
        if len(usable) >= 2 and all(head[o] == 0x47 for o in usable):
            return True
    return False


def _sniff_ftyp(head: bytes) -> ItemType | None:
    box_size = struct.unpack_from(">I", head, 0)[0]
    major = head[8:12]
    end = min(max(box_size, 16), len(head))
    compatible = {head[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _IMAGE_BRANDS:
        return ItemType.IMAGE
    if major in _VIDEO_BRANDS:
        return ItemType.VIDEO
    if major in _AUDIO_BRANDS:
        return None
    # Some writers use a generic major brand and list the real one as compatible; a movie may
    # list `mif1` too, so movie brands win. Anything else (audio-only M4A, camera raw) is left
    # to the extension.
    if compatible & _VIDEO_BRANDS:
        return ItemType.VIDEO
    if compatible & _IMAGE_BRANDS:
        return ItemType.IMAGE
    return None


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
