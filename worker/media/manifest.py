"""The frames manifest of SPEC 4.2, streamed: `FRAME_IN_SEGMENT:SEGMENT:VISIBLE:TIMESTAMP`.

Which segment a frame lands in is known only once the encoder has cut the segments, after the
last frame. So each decoded frame's facts go to a scratch file as it is decoded, and the manifest
is written from that file at the end, line by line: memory does not grow with the video's length.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from worker.media.frames import format_timestamp

BUFFER = 1024 * 1024


class FrameLog:
    """One line per decoded frame (`pts visible timestamp`) in a scratch file; keeps only the
    count and the last pts in memory."""

    def __init__(self, folder: Path) -> None:
        self._path = folder / "frames.log"
        self._file: TextIO | None = self._path.open("w", buffering=BUFFER)
        self.count = 0
        self.last_pts: int | None = None

    def append(self, pts: int, seconds: float, visible: bool) -> None:
        assert self._file is not None, "the log is closed"
        self._file.write(f"{pts} {int(visible)} {format_timestamp(seconds)}\n")
        self.count += 1
        self.last_pts = pts

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _lines(self) -> Iterator[tuple[str, str, str]]:
        self.close()
        with self._path.open(buffering=BUFFER) as lines:
            for line in lines:
                pts, visible, stamp = line.split()
                yield pts, visible, stamp

    def pts_at(self, n: int) -> int | None:
        """The pts of decoded frame `n` (read back: needed only when the thumbnail is redone)."""
        for index, (pts, _, _) in enumerate(self._lines()):
            if index == n:
                return int(pts)
        return None

    def write_manifest(self, segment_counts: Sequence[int]) -> tuple[Path, list[str]]:
        """The manifest file, placing frames into segments by the frame counts of the segments
        actually written; and warnings when the counts and the decoded frames disagree."""
        warnings: list[str] = []
        if sum(segment_counts) != self.count:
            warnings.append(
                f"HLS segments hold {sum(segment_counts)} frames but {self.count} were decoded;"
                " the manifest places the difference in the last segment"
            )
        dest = self._path.with_name("frames_manifest.txt")
        segment, in_segment = 0, 0
        last = max(len(segment_counts) - 1, 0)
        with dest.open("w", buffering=BUFFER) as out:
            for _, visible, stamp in self._lines():
                while segment < last and in_segment >= segment_counts[segment]:
                    segment, in_segment = segment + 1, 0
                out.write(f"{in_segment}:{segment}:{visible}:{stamp}\n")
                in_segment += 1
        return dest, warnings
