"""Luma PSNR between videos, frame by frame: how the bench prices the fast video profile.

PSNR = 10 log10(255^2 / MSE) with the MSE over every luma sample of every compared frame (the
aggregate, as FFmpeg's `psnr` filter reports it), so a few bad frames weigh what they cost. A
distorted video smaller than the reference (the low HLS rendition) is compared with the
reference scaled to its size by the bicubic scaler the low rendition itself uses. Rotation
metadata is not applied: compare outputs of sources without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.frame import VideoFrame

from worker.media.frames import reformat

PEAK = 255


@dataclass
class Psnr:
    """Squared luma error accumulated over frames."""

    squared_error: int = 0
    samples: int = 0
    frames: int = 0

    def add(self, reference: np.ndarray, distorted: np.ndarray) -> None:
        if reference.shape != distorted.shape:
            raise ValueError(f"frames differ in size: {reference.shape} and {distorted.shape}")
        diff = reference.astype(np.int32) - distorted.astype(np.int32)
        self.squared_error += int(np.square(diff).sum(dtype=np.int64))
        self.samples += diff.size
        self.frames += 1

    @property
    def db(self) -> float:
        """The PSNR in dB; infinite for identical frames, NaN when nothing was compared."""
        if self.samples == 0:
            return math.nan
        if self.squared_error == 0:
            return math.inf
        return 10 * math.log10(PEAK**2 * self.samples / self.squared_error)


def psnr(reference: np.ndarray, distorted: np.ndarray) -> float:
    """The PSNR of one pair of 8-bit planes."""
    total = Psnr()
    total.add(reference, distorted)
    return total.db


def luma(frame: VideoFrame, size: tuple[int, int] | None = None) -> np.ndarray:
    """The 8-bit Y plane of `frame` (scaled to `size` first if given), without line padding."""
    width, height = size or (frame.width, frame.height)
    if (frame.width, frame.height) != (width, height) or frame.format.name != "yuv420p":
        frame = reformat(
            frame, width=width, height=height, format="yuv420p", interpolation="BICUBIC"
        )
    plane = frame.planes[0]
    rows = np.frombuffer(plane, np.uint8, count=plane.line_size * height)
    return rows.reshape(height, plane.line_size)[:, :width]


def compare_luma(reference: Path, distorted: Mapping[str, Path]) -> dict[str, Psnr]:
    """The luma PSNR of each distorted video against `reference`, decoding the reference once.
    Frames pair up in decoding order; a video that runs out stops counting (see `frames`)."""
    results = {name: Psnr() for name in distorted}
    streams = {name: _frames(path) for name, path in distorted.items()}
    for ref_frame in _frames(reference):
        scaled: dict[tuple[int, int], np.ndarray] = {}
        for name, frames in list(streams.items()):
            frame = next(frames, None)
            if frame is None:
                del streams[name]
                continue
            size = (frame.width, frame.height)
            if size not in scaled:
                scaled[size] = luma(ref_frame, size)
            results[name].add(scaled[size], luma(frame))
    return results


def _frames(path: Path) -> Iterator[VideoFrame]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield from container.decode(stream)
