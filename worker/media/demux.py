"""Which FFmpeg demuxer may read a source: self-contained containers only (SPEC section 11).

FFmpeg picks a demuxer by probing, and some demuxers open other files or URLs named inside the
source: HLS and DASH playlists, concat lists, image sequences, `file:`/`http:` references.
A source is demuxed from its own bytes only: the demuxer is chosen here from the source's first
bytes (never by FFmpeg's probe), from a short list of containers that cannot name another file,
and FFmpeg may open nothing but local files (`protocol_whitelist`), with MOV's external data
references off. Anything else is `unsupported_format`.
"""

from __future__ import annotations

from pathlib import Path

import av

HEAD_BYTES = 512

_AT_4 = {b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"}
_AT_0 = (
    (b"\x1a\x45\xdf\xa3", "matroska"),  # Matroska, WebM
    (b"OggS", "ogg"),
    (b"FLV", "flv"),
    (b"\x00\x00\x01\xba", "mpeg"),  # MPEG program stream
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "asf"),  # ASF, WMV
)
ALLOWED = frozenset({"mov", "matroska", "avi", "ogg", "flv", "mpeg", "asf", "mpegts"})
"""FFmpeg's names (the first of `container.format.name`) of the containers let through."""
INPUT_OPTIONS = {"protocol_whitelist": "file", "enable_drefs": "0", "use_absolute_path": "0"}


def demuxer_for(head: bytes) -> str | None:
    """The demuxer for a source starting with `head`, or None when it is not one we allow."""
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


def sniff_demuxer(path: Path) -> str | None:
    with path.open("rb") as stream:
        return demuxer_for(stream.read(HEAD_BYTES))


def open_input(path: Path, demuxer: str) -> av.container.InputContainer:
    """Open `path` with exactly `demuxer` and the options above; raises FFmpeg's errors, or
    ValueError when FFmpeg ended up with a demuxer that is not allowed."""
    container = av.open(str(path), "r", format=demuxer, container_options=dict(INPUT_OPTIONS))
    if container.format.name.split(",")[0] not in ALLOWED:
        container.close()
        raise ValueError(f"demuxer {container.format.name} is not allowed")
    return container
