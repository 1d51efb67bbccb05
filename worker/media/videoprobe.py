"""Opening a video and reading what its header promises, before any frame is decoded.

Limits (duration, frame count, size) are enforced here, so an oversized video fails as
`too_large` at once. Open failures are sorted into `unsupported_format` (not a container FFmpeg
knows, or no video in it) and `corrupt_media` (a known container that is damaged).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error

from worker.config import Limits
from worker.errors import CorruptMedia, TooLarge, UnsupportedFormat
from worker.media.demux import open_input, sniff_demuxer

log = logging.getLogger(__name__)

_FRAME_EXACT_FORMATS = ("mov", "mp4", "avi")
"""Containers whose header counts frames exactly (a sample table or an index)."""


@contextmanager
def open_container(path: Path) -> Iterator[av.container.InputContainer]:
    """The source opened by the demuxer its own bytes call for (`worker.media.demux`): never a
    playlist, concat list or image sequence, which would read files other than the item."""
    demuxer = sniff_demuxer(path)
    if demuxer is None:
        raise UnsupportedFormat(
            f"{path.name}: not a self-contained video container mediaworker reads (MP4, MOV,"
            " MKV, WebM, AVI, MPEG-TS, ...); playlists (HLS, DASH), concat lists and image"
            " sequences are refused. Convert it to MP4 (H.264) and upload it again"
        )
    try:
        container = open_input(path, demuxer)
    except (av.error.FFmpegError, ValueError) as exc:
        raise CorruptMedia(
            f"{path.name}: the container is damaged and cannot be opened"
            f" ({getattr(exc, 'strerror', None) or exc}); a recording cut short or an"
            " interrupted upload does this: re-export or re-upload the file"
        ) from None
    try:
        yield container
    finally:
        container.close()


@dataclass
class Probe:
    video: av.VideoStream
    audio: av.AudioStream | None
    native_fps: float
    rate: Fraction
    """Nominal frame rate as a fraction, for the encoders."""
    time_base: Fraction
    expected_frames: int
    """From the header; 0 when unknown. Exact only when `frames_exact`."""
    frames_exact: bool
    start: float
    """Seconds subtracted from timestamps, so the first frame is near 0 as FFmpeg reports it."""
    frame_ticks: int
    """One nominal frame in `time_base` units."""
    max_frames: int
    limits: Limits
    name: str

    def check_size(self, width: int, height: int) -> None:
        limits = self.limits
        if width > limits.max_video_width or height > limits.max_video_height:
            raise TooLarge(
                f"{self.name}: {width}x{height} is larger than the limit of"
                f" {limits.max_video_width}x{limits.max_video_height}; raise"
                " limits.max_video_width/height to process it"
            )


def probe_video(path: Path, container: av.container.InputContainer, limits: Limits) -> Probe:
    if not container.streams.video:
        raise UnsupportedFormat(
            f"{path.name}: has no video stream (audio only or data); register it as a video"
            " only if it holds pictures"
        )
    video = container.streams.video[0]
    if video.codec_context is None:
        raise UnsupportedFormat(f"{path.name}: its video codec is one FFmpeg cannot decode")
    video.thread_type = "AUTO"
    audio = container.streams.audio[0] if container.streams.audio else None
    if audio is not None and audio.codec_context is None:
        log.warning("%s: audio codec not decodable; the audio is left out", path.name)
        audio = None
    duration = _duration(container, video)
    fps = native_fps(video, duration)
    time_base = video.time_base or Fraction(1, 90000)
    frames_exact = video.frames > 0 and container.format.name.split(",")[0] in _FRAME_EXACT_FORMATS
    expected = video.frames if video.frames > 0 else round(duration * fps)
    probe = Probe(
        video=video,
        audio=audio,
        native_fps=fps,
        rate=Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(30),
        time_base=time_base,
        expected_frames=expected,
        frames_exact=frames_exact,
        start=container.start_time / 1_000_000 if container.start_time is not None else 0.0,
        frame_ticks=max(1, round(1 / ((fps or 30) * time_base))),
        max_frames=limits.max_video_frames,
        limits=limits,
        name=path.name,
    )
    _check_limits(probe, video, duration, limits)
    return probe


def _duration(container: av.container.InputContainer, video: av.VideoStream) -> float:
    if video.duration is not None and video.time_base is not None:
        return float(video.duration * video.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


def native_fps(video: av.VideoStream, duration: float) -> float:
    """SPEC 4.2: the stream's average rate, else frames / duration."""
    rate = video.average_rate
    if rate and rate > 0 and math.isfinite(float(rate)):
        return float(rate)
    if video.frames > 0 and duration > 0:
        return video.frames / duration
    guessed = video.guessed_rate or video.base_rate
    return float(guessed) if guessed else 0.0


def _check_limits(probe: Probe, video: av.VideoStream, duration: float, limits: Limits) -> None:
    context = video.codec_context
    probe.check_size(context.width, context.height)
    if duration > limits.max_video_seconds:
        raise TooLarge(
            f"{probe.name}: {duration:.0f} s long, over the limit of"
            f" {limits.max_video_seconds:.0f} s; raise limits.max_video_seconds to process it"
        )
    if probe.expected_frames > limits.max_video_frames:
        raise TooLarge(
            f"{probe.name}: {probe.expected_frames} frames, over the limit of"
            f" {limits.max_video_frames}; raise limits.max_video_frames to process it"
        )
