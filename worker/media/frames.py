"""Frame-level outputs of SPEC 4.2: which frames are visible, the sections, the thumbnail and
the frames manifest.

Sections are encoded by a small pool of threads while the decoder keeps going; PyAV's PNG encoder
and Pillow's JPEG encoder release the GIL, so two threads use two cores. At most `max_in_flight`
frames wait for the pool, which keeps memory flat whatever the video's length.
"""

from __future__ import annotations

import io
import logging
import math
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction

import av
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter
from PIL import Image

from worker.layout import Quality, Rel
from worker.media import THUMBNAIL_BOX, THUMBNAIL_QUALITY, Sink

log = logging.getLogger(__name__)

LOW_MIN_HEIGHT = 720
PNG_OPTIONS = {"pred": "up", "compression_level": "1"}
"""Lossless PNG at a fast zlib level: 'up' filtering keeps the files close to the default
level's size at a fifth of its CPU time (SPEC 4.2 asks lossless, not smallest)."""


def downsample_step(native_fps: float, fps: float) -> float:
    """SPEC 4.2: `round(max(native_fps / fps, 1), 4)`; fps 0 means every frame."""
    if fps <= 0 or native_fps <= 0:
        return 1.0
    return round(max(native_fps / fps, 1.0), 4)


@dataclass
class VisibleRule:
    """Decoded frame `n` is visible when `n == int(visible_so_far * step)` (SPEC 4.2)."""

    step: float
    visible: int = 0

    def check(self, n: int) -> bool:
        if n == int(self.visible * self.step):
            self.visible += 1
            return True
        return False


def low_size(width: int, height: int) -> tuple[int, int]:
    """The low HLS rendition: height `max(ceil(h/4)*2, 720)` when the source is taller than 720,
    width keeping the aspect ratio; both even, as H.264 4:2:0 needs."""
    if height <= LOW_MIN_HEIGHT:
        return even_size(width, height)
    low_h = max(math.ceil(height / 4) * 2, LOW_MIN_HEIGHT)
    low_w = max(2, round(width * low_h / height / 2) * 2)
    return low_w, low_h


def even_size(width: int, height: int) -> tuple[int, int]:
    """H.264 4:2:0 needs even sizes; an odd source loses its last column or row's worth."""
    return max(2, width - width % 2), max(2, height - height % 2)


def format_timestamp(seconds: float) -> str:
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


_reformatters = threading.local()


def reformat(frame: VideoFrame, **kwargs: object) -> VideoFrame:
    """`frame.reformat` made safe for frames shared between threads.

    `VideoFrame.reformat` caches one swscale context on the frame, and two threads converting
    the same frame at once corrupt it; each thread here has its own. `threads=1` because
    swscale's slice threads can deadlock against the GIL when FFmpeg logs from them (PyAV 18),
    and the worker's own threads are the parallelism."""
    converter = getattr(_reformatters, "converter", None)
    if converter is None:
        converter = _reformatters.converter = VideoReformatter()
    return converter.reformat(frame, threads=1, **kwargs)


def to_rgb(frame: VideoFrame) -> VideoFrame:
    return reformat(frame, format="rgb24")


def rgb_image(rgb: VideoFrame) -> Image.Image:
    """An rgb24 frame as a Pillow image, read straight from the frame's plane (a third of the
    CPU of `VideoFrame.to_image`, which copies the plane to bytes first)."""
    plane = rgb.planes[0]
    size = (rgb.width, rgb.height)
    return Image.frombuffer("RGB", size, plane, "raw", "RGB", plane.line_size, 1)


def thumbnail_jpeg(image: Image.Image) -> bytes:
    image = image.convert("RGB")
    image.thumbnail(THUMBNAIL_BOX, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=THUMBNAIL_QUALITY)
    return buffer.getvalue()


@dataclass
class ThumbnailPicker:
    """Keeps thumbnails of the frames around the expected middle, so the real middle frame
    (`total_frames // 2`, known only at the end) is at hand without a second decode."""

    expected_total: int
    radius: int = 12
    kept: dict[int, bytes] = field(default_factory=dict)

    def offer(self, n: int, frame: VideoFrame) -> None:
        if self.expected_total > 0 and abs(n - self.expected_total // 2) <= self.radius:
            self.kept[n] = thumbnail_jpeg(to_rgb(frame).to_image())

    def pick(self, total: int) -> bytes | None:
        return self.kept.get(total // 2)


class SectionWriter:
    """Encodes each visible frame to `sections/high` (PNG, or JPEG) and `sections/low` (JPEG)
    on a small pool, handing the bytes to the sink as they are ready."""

    def __init__(
        self,
        sink: Sink,
        high_ext: str,
        high_jpeg_quality: int,
        low_jpeg_quality: int,
        workers: int = 2,
        max_in_flight: int = 4,
    ) -> None:
        self._sink = sink
        self._high_ext = high_ext
        self._high_quality = high_jpeg_quality
        self._low_quality = low_jpeg_quality
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="sections")
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._futures: deque[Future[None]] = deque()
        self._local = threading.local()

    def submit(self, index: int, frame: VideoFrame) -> None:
        self._reap(block=False)
        self._slots.acquire()
        try:
            future = self._pool.submit(self._encode, index, frame)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append(future)

    def _reap(self, block: bool) -> None:
        """Surface the first failure promptly, and forget finished work."""
        while self._futures and (block or self._futures[0].done()):
            self._futures.popleft().result()

    def finish(self) -> None:
        try:
            self._reap(block=True)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _encode(self, index: int, frame: VideoFrame) -> None:
        rgb = to_rgb(frame)
        image = rgb_image(rgb)
        high = self._png(rgb) if self._high_ext == "png" else _jpeg(image, self._high_quality)
        self._put("high", index, self._high_ext, high)
        self._put("low", index, "jpg", _jpeg(image, self._low_quality))

    def _put(self, quality: Quality, index: int, ext: str, data: bytes) -> None:
        content_type = "image/png" if ext == "png" else "image/jpeg"
        self._sink.put_bytes(Rel.section(quality, index, ext), data, content_type)

    def _png(self, rgb: VideoFrame) -> bytes:
        """One PNG encoder per pool thread, reopened only if the frame size changes."""
        encoder = getattr(self._local, "png", None)
        if encoder is None or (encoder.width, encoder.height) != (rgb.width, rgb.height):
            encoder = av.CodecContext.create("png", "w")
            encoder.width, encoder.height = rgb.width, rgb.height
            encoder.pix_fmt = "rgb24"
            encoder.time_base = Fraction(1, 1)
            encoder.options = dict(PNG_OPTIONS)
            self._local.png = encoder
        rgb.pts = None
        return b"".join(bytes(packet) for packet in encoder.encode(rgb))


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
