"""Content sniffing (SPEC 3, `type: auto`): the first bytes decide, then the extension."""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import av
import numpy as np
import pytest
import tifffile

from fixtures.images import generate_images
from worker.items import ItemType
from worker.media.sniff import SNIFF_BYTES, content_type_for, sniff

IMAGE, VIDEO, SLIDE = ItemType.IMAGE, ItemType.VIDEO, ItemType.SLIDE
NOISE = random.Random(11).randbytes(SNIFF_BYTES)


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\0\0\0\0" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + bytes(64)


def tiff_head(*, tiled: bool, bigtiff: bool = False, ifd_offset: int | None = None) -> bytes:
    """The start of a TIFF written by tifffile, optionally cut before its first IFD."""
    out = io.BytesIO()
    pixels = np.zeros((64, 64), dtype=np.uint8)
    tifffile.imwrite(out, pixels, tile=(32, 32) if tiled else None, bigtiff=bigtiff)
    data = out.getvalue()
    return data[:ifd_offset] if ifd_offset is not None else data[:SNIFF_BYTES]


@pytest.mark.parametrize(
    ("head", "name", "expected"),
    [
        (b"\xff\xd8\xff\xe0\0\x10JFIF\0", "a.bin", IMAGE),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "a", IMAGE),
        (b"GIF89a\x10\0\x10\0", "a.gif", IMAGE),
        (b"RIFF\0\0\0\0WEBPVP8 ", "a.webp", IMAGE),
        (b"BM" + bytes(12) + struct.pack("<I", 40) + bytes(20), "scan", IMAGE),
        (ftyp(b"heic", b"mif1", b"heic"), "IMG_0001", IMAGE),
        (ftyp(b"mif1", b"mif1", b"heic"), "IMG_0001", IMAGE),
        (ftyp(b"avif", b"avif", b"mif1", b"miaf"), "x", IMAGE),
        (ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41"), "clip", VIDEO),
        (ftyp(b"qt  ", b"qt  "), "clip", VIDEO),
        (ftyp(b"mp42", b"mp42", b"mif1"), "clip.heic", VIDEO),  # content wins over the name
        (ftyp(b"M4A ", b"M4A ", b"isom"), "song.m4a", None),  # audio only,
        (ftyp(b"crx ", b"crx "), "raw.cr3", None),
        (bytes(4) + b"moov" + bytes(32), "old.mov", VIDEO),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01", "x", VIDEO),
        (b"RIFF\0\0\0\0AVI LIST", "x", VIDEO),
        (b"\x47" + bytes(187) + b"\x47" + bytes(187) + b"\x47" + bytes(10), "x", VIDEO),
        (b"\0\0\x01\xba" + bytes(16), "x", VIDEO),
        (NOISE, "photo.jpg", IMAGE),  # unknown content: the extension decides
        (NOISE, "clip.MP4", VIDEO),
        (NOISE, "archive.zip", None),
        (b"", "empty.png", IMAGE),
        (b"", "notes", None),
        (b"BMP is the format we use\n", "notes.txt", None),  # "BM" alone is not a bitmap
        (b"hello, world\n" * 20, "notes.txt", None),
        (NOISE, "slide.svs", SLIDE),
        (b"", "Slide 01.MRXS", SLIDE),
        (b"II*\0" + bytes(32), "case.ndpi", SLIDE),
        (b"\xff\xd8\xff", "case.vms", SLIDE),
    ],
)
def test_sniff(head: bytes, name: str, expected: ItemType | None) -> None:
    assert sniff(head, name) == expected


def test_strip_tiff_is_an_image_and_tiled_tiff_is_a_slide() -> None:
    assert sniff(tiff_head(tiled=False), "scan.tif") == IMAGE
    assert sniff(tiff_head(tiled=True), "scan.tif") == SLIDE
    assert sniff(tiff_head(tiled=True, bigtiff=True), "scan.tif") == SLIDE
    assert sniff(tiff_head(tiled=True), "scan") == SLIDE


def test_tiff_whose_first_ifd_is_beyond_the_head_is_an_image() -> None:
    head = tiff_head(tiled=True)
    first_ifd = struct.unpack_from("<I", head, 4)[0]
    assert sniff(head[: first_ifd - 1], "scan.tif") == IMAGE
    # Cut inside the IFD: the entries that are there decide (tags are sorted, 322 is late).
    assert sniff(head[: first_ifd + 2 + 12], "scan.tif") == IMAGE


def test_every_image_fixture_sniffs_as_an_image(tmp_path: Path) -> None:
    no_signature = {"empty", "random_bytes", "text"}
    for name, path in generate_images(tmp_path).items():
        head = path.read_bytes()[:SNIFF_BYTES]
        assert sniff(head, path.name) == IMAGE, name  # by content, else by the image extension
        assert sniff(head, "no-extension") == (None if name in no_signature else IMAGE), name


@pytest.mark.parametrize(("container", "codec"), [("mp4", "h264"), ("matroska", "mpeg4")])
def test_real_video_containers_sniff_as_video(container: str, codec: str) -> None:
    out = io.BytesIO()
    with av.open(out, "w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 40, np.uint8), "rgb24")
            muxer.mux(stream.encode(frame))
        muxer.mux(stream.encode(None))
    assert sniff(out.getvalue()[:SNIFF_BYTES], "unnamed") == VIDEO


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a/b/thumbnail.jpg", "image/jpeg"),
        ("display.png", "image/png"),
        ("segments/high/000000001.ts", "video/mp2t"),
        ("segments/high/index.m3u8", "application/vnd.apple.mpegurl"),
        ("tiles/slide.dzi", "application/xml"),
        ("metadata.json", "application/json"),
        ("IMG_1.HEIC", "image/heic"),
        ("unknown.blob", "application/octet-stream"),
    ],
)
def test_content_type_for(name: str, expected: str) -> None:
    assert content_type_for(name) == expected
