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

from worker.kinds.video import demuxer_for

__all__ = ["demuxer_for", "open_input", "sniff_demuxer"]

HEAD_BYTES = 512

ALLOWED = frozenset({"mov", "matroska", "avi", "ogg", "flv", "mpeg", "asf", "mpegts"})
"""FFmpeg's names (the first of `container.format.name`) of the containers let through."""
INPUT_OPTIONS = {"protocol_whitelist": "file", "enable_drefs": "0", "use_absolute_path": "0"}


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
