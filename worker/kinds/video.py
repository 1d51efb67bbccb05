"""Videos: self-contained containers FFmpeg demuxes (MP4, MOV, MKV, WebM, AVI, MPEG-TS, ...).

The container magic below is the one table both sniffing and the demuxer choice read
(`worker.media.demux`): a source is demuxed only by the demuxer its own first bytes call for.
ISO-BMFF (`ftyp`) files are told apart from HEIF still images by their brands
(`worker.kinds.image`), so the `ftyp` entry here only picks the demuxer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.kinds import Format, MediaKind, ProcessContext, extensions, lazy

if TYPE_CHECKING:
    from worker.media import MediaResult

NAME = "video"

_AT_4 = {b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"}
"""QuickTime/MP4 atoms a file starts with (after the 4-byte size)."""
_AT_0 = (
    (b"\x1a\x45\xdf\xa3", "matroska"),  # Matroska, WebM
    (b"OggS", "ogg"),
    (b"FLV", "flv"),
    (b"\x00\x00\x01\xba", "mpeg"),  # MPEG program stream
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "asf"),  # ASF, WMV
)


def demuxer_for(head: bytes) -> str | None:
    """The FFmpeg demuxer for a source starting with `head`, or None when it is not one of the
    self-contained containers allowed."""
    if head[4:8] in _AT_4:
        return "mov"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    for magic, name in _AT_0:
        if head.startswith(magic):
            return name
    if _transport_stream(head):
        return "mpegts"
    return None


def _transport_stream(head: bytes) -> bool:
    """MPEG-TS: a sync byte every 188 bytes (M2TS: every 192, after a 4-byte timecode)."""
    for start, step in ((0, 188), (4, 192)):
        if len(head) > start + 2 * step and all(head[start + i * step] == 0x47 for i in range(3)):
            return True
    return False


def _content(head: bytes) -> str | None:
    # `ftyp` files are typed by their brands (worker.kinds.image), not here.
    if head[4:8] == b"ftyp":
        return None
    return NAME if demuxer_for(head) is not None else None


FORMATS = (
    Format(
        "video",
        NAME,
        extensions("mp4", "m4v", "mov", "qt", "mkv", "webm", "avi", "ts", "mts", "m2ts", "mpg")
        | extensions("mpeg", "wmv", "asf", "flv", "3gp", "3g2", "ogv"),
        content=_content,
    ),
)


def _process(ctx: ProcessContext) -> MediaResult:
    from worker.media.video import process_video

    s = ctx.settings
    return process_video(
        ctx.path, ctx.sink, s.limits, s.video, fps=ctx.fps, work_dir=ctx.work_dir,
        progress=ctx.progress,
    )  # fmt: skip


KIND = MediaKind(
    name=NAME,
    queue="videos",
    task="mediaworker.process_video",
    process=_process,
    payload=lazy("worker.payloads:video_payload"),
    payload_model="worker.payloads:VideoPayload",
    assets=lazy("worker.verify:video_assets"),
    claims=lazy("worker.claims:video_claims"),
    check=lazy("worker.verify:check_video"),
)
