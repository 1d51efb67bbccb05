"""The video processor of SPEC 4.2: every rendition from one decode of the source.

The calling thread demuxes and decodes; each decoded frame goes, by reference, to

    HlsWriter high (H.264, CRF 23, own thread)   --\
    HlsWriter low  (scale + H.264, CRF 40, own thread) -> segments to the sink as each one closes
    SectionWriter  (PNG/JPEG pool, visible frames only) -> sections to the sink
    ThumbnailPicker (frames near the expected middle)

and decoded audio goes to the peaks writer and, once converted, to both AAC encoders. Every
hand-over is a bounded queue, so memory does not grow with the length of the video. Whatever
fails first (decoder, encoder, sink) stops the run and is raised here. The encoder settings and
section format come from the profile (`worker.media.profiles`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
from av.audio.frame import AudioFrame
from av.video.frame import PictureType, VideoFrame

from worker.config import Limits, VideoSettings
from worker.errors import CorruptMedia, TooLarge
from worker.layout import Quality, Rel
from worker.media import HlsRendition, ProgressCallback, Sink, VideoResult, no_progress
from worker.media.audio import AacFeed, PeaksWriter
from worker.media.frames import (
    SectionWriter,
    ThumbnailPicker,
    VisibleRule,
    downsample_step,
    even_size,
    low_size,
)
from worker.media.hls import AudioSpec, EncodeSpec, HlsOutput, HlsWriter
from worker.media.manifest import FrameLog
from worker.media.profiles import resolve_profile
from worker.media.rotation import Rotator, thumbnail_at
from worker.media.videoprobe import Probe, open_container, probe_video

log = logging.getLogger(__name__)

MAX_PENDING_AUDIO = 2000
"""Audio frames held until the first video frame starts the encoders (a few seconds' worth)."""


def process_video(
    path: Path,
    sink: Sink,
    limits: Limits,
    settings: VideoSettings,
    fps: float = 0,
    work_dir: Path | None = None,
    progress: ProgressCallback = no_progress,
) -> VideoResult:
    """Write sections, HLS renditions, manifest, thumbnail and audio peaks of `path` to `sink`.

    Raises `UnsupportedFormat` (no video stream, unknown container or codec), `CorruptMedia`
    (nothing decodes), `TooLarge` (duration, frame count or size over `limits`, decided from
    the header before decoding)."""
    with open_container(path) as container:
        probe = probe_video(path, container, limits)
        # Segments wait here until the sink has uploaded (and deleted) them, which may be after
        # this returns: the folder is left for the caller's work_dir cleanup.
        scratch = Path(tempfile.mkdtemp(dir=work_dir, prefix="video-"))
        run = _VideoRun(path, container, probe, sink, settings, fps, scratch, progress)
        return run.run()


@dataclass
class _Outputs:
    high: HlsWriter
    low: HlsWriter
    sections: SectionWriter
    thumbs: ThumbnailPicker


class _VideoRun:
    def __init__(
        self,
        path: Path,
        container: av.container.InputContainer,
        probe: Probe,
        sink: Sink,
        settings: VideoSettings,
        fps: float,
        scratch: Path,
        progress: ProgressCallback,
    ) -> None:
        self.path, self.container, self.probe = path, container, probe
        self.sink, self.settings, self.scratch, self.progress = sink, settings, scratch, progress
        self.profile = resolve_profile(settings)
        self.limits_frames = probe.max_frames
        self.rule = VisibleRule(downsample_step(probe.native_fps, fps))
        self.fps = fps if fps > 0 else probe.native_fps
        self.frames = FrameLog(scratch)
        """What the manifest needs of every decoded frame, streamed to a scratch file."""
        self.warnings: list[str] = []
        self.damaged_packets = 0
        self.width = self.height = 0
        self.rotator: Rotator | None = None
        self.outputs: _Outputs | None = None
        audio = probe.audio
        self.peaks = PeaksWriter(scratch / "audio_peaks.gz") if audio else None
        self.aac = AacFeed(audio) if audio else None
        self.pending_audio: list[AudioFrame] = []
        self.audio_failed = False

    def run(self) -> VideoResult:
        try:
            self._decode_all()
            return self._finish()
        except BaseException:
            self._abort()
            raise

    # -- decoding ---------------------------------------------------------------------------

    def _decode_all(self) -> None:
        streams = [s for s in (self.probe.video, self.probe.audio) if s is not None]
        packets = self.container.demux(streams)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                self._warn(f"reading stopped early ({exc}); the output covers what came before")
                break
            if packet.stream.type == "video":
                for frame in self._decode(packet):
                    self._on_video(frame)  # type: ignore[arg-type]
            elif not self.audio_failed:
                for frame in self._decode(packet):
                    self._on_audio(frame)  # type: ignore[arg-type]

    def _decode(self, packet: av.Packet) -> Iterator[VideoFrame | AudioFrame]:
        try:
            yield from packet.decode()
        except av.error.FFmpegError as exc:
            # A damaged packet costs its frame(s), not the video: count it and carry on.
            self.damaged_packets += 1
            log.debug("%s: undecodable %s packet: %s", self.path.name, packet.stream.type, exc)

    def _on_video(self, frame: VideoFrame) -> None:
        frame = self._rotate(frame)
        if self.outputs is None:
            self.outputs = self._start(frame)
        n = self.frames.count
        if n >= self.limits_frames:
            raise TooLarge(
                f"{self.path.name}: more than {self.limits_frames} frames, though its header"
                " said fewer; raise limits.max_video_frames to process it"
            )
        seconds = self._retime(frame)
        pts = frame.pts
        # Source picture types would force x264's frame types; the encoders choose their own.
        frame.pict_type = PictureType.NONE
        out = self.outputs
        out.high.put_video(frame)
        out.low.put_video(frame)
        visible = self.rule.check(n)
        if visible:
            out.sections.submit(self.rule.visible - 1, frame)
        out.thumbs.offer(n, frame)
        self.frames.append(pts, seconds, visible)
        if n % 25 == 0:
            self.progress("video", n, self.probe.expected_frames or None)

    def _rotate(self, frame: VideoFrame) -> VideoFrame:
        if self.rotator is None:
            self.rotator = Rotator.for_frame(frame, self.probe.time_base)
        return self.rotator.apply(frame)

    def _retime(self, frame: VideoFrame) -> float:
        """Strictly increasing timestamps in the source time base, as the encoders need; a
        missing or repeated one becomes the previous one plus a nominal frame. Returns the
        frame's time in seconds from the start."""
        last = self.frames.last_pts
        pts = frame.pts
        if pts is None or (last is not None and pts <= last):
            pts = last + self.probe.frame_ticks if last is not None else 0
        frame.pts = pts
        frame.time_base = self.probe.time_base
        return float(pts * self.probe.time_base) - self.probe.start

    def _on_audio(self, frame: AudioFrame) -> None:
        assert self.peaks is not None and self.aac is not None
        try:
            self.peaks.feed(frame)
            converted = self.aac.convert(frame)
        except (av.error.FFmpegError, ValueError) as exc:
            self.audio_failed = True
            self._warn(f"the audio could not be converted ({exc}); it is left out")
            return
        if self.outputs is None:
            self.pending_audio.extend(converted[: MAX_PENDING_AUDIO - len(self.pending_audio)])
            return
        for out in converted:
            self.outputs.high.put_audio(out)
            self.outputs.low.put_audio(out)

    # -- outputs ----------------------------------------------------------------------------

    def _start(self, first: VideoFrame) -> _Outputs:
        """Encoders are set up from the first decoded frame: its size is the displayed one."""
        width, height = first.width, first.height
        self.probe.check_size(width, height)
        self.width, self.height = width, height
        high = self._hls("high", even_size(width, height))
        low = self._hls("low", low_size(width, height))
        for pending in self.pending_audio:
            high.put_audio(pending)
            low.put_audio(pending)
        self.pending_audio.clear()
        sections = SectionWriter(
            self.sink,
            self.profile.sections_high_format,
            self.settings.sections_high_jpeg_quality,
            self.settings.sections_low_jpeg_quality,
        )
        return _Outputs(high, low, sections, ThumbnailPicker(self.probe.expected_frames))

    def _hls(self, quality: Quality, size: tuple[int, int]) -> HlsWriter:
        spec = EncodeSpec(
            quality=quality,
            width=size[0],
            height=size[1],
            encoder=self.profile.encoder(quality),
            time_base=self.probe.time_base,
            rate=self.probe.rate,
        )
        audio = AudioSpec(self.aac.rate, self.aac.layout) if self.aac else None
        return HlsWriter(spec, self.scratch / quality, self.sink, audio)

    def _finish(self) -> VideoResult:
        out = self.outputs
        total = self.frames.count
        if out is None or total == 0:
            raise CorruptMedia(
                f"{self.path.name}: no video frame could be decoded; the file is damaged or"
                " incomplete: re-export or re-upload it"
            )
        self._flush_audio()
        out.high.end()
        out.low.end()
        out.sections.finish()
        high, low = out.high.finish(), out.low.finish()
        self._check_counts(total, high, low)
        manifest, notes = self.frames.write_manifest(high.segment_counts)
        self.warnings.extend(notes)
        self.sink.put_file(Rel.MANIFEST, manifest, "text/plain; charset=utf-8", delete_after=True)
        self._put_thumbnail(out.thumbs, total)
        has_audio = self._put_peaks()
        return self._result(total, high.rendition, low.rendition, has_audio)

    def _flush_audio(self) -> None:
        if self.aac is None or self.audio_failed or self.outputs is None:
            return
        try:
            tail = self.aac.convert(None)
        except (av.error.FFmpegError, ValueError) as exc:
            self._warn(f"the end of the audio could not be converted ({exc})")
            return
        for frame in tail:
            self.outputs.high.put_audio(frame)
            self.outputs.low.put_audio(frame)

    def _check_counts(self, total: int, high: HlsOutput, low: HlsOutput) -> None:
        expected = self.probe.expected_frames
        if self.damaged_packets:
            self._warn(f"{self.damaged_packets} damaged packet(s) skipped; {total} frames decoded")
        if self.probe.frames_exact and expected > total:
            self._warn(
                f"the header lists {expected} frames but {total} decoded: the file looks"
                " truncated or damaged; the outputs cover the frames that decoded"
            )
        if high.segment_counts != low.segment_counts:
            self._warn("the high and low HLS renditions were cut into different segments")

    def _put_thumbnail(self, thumbs: ThumbnailPicker, total: int) -> None:
        middle = total // 2
        data = thumbs.pick(total)
        pts = self.frames.pts_at(middle) if data is None else None
        if pts is not None:
            # The header's frame count was off: seek back to the real middle frame.
            data = thumbnail_at(self.path, self.probe.video.index, pts)
        if data is None:
            self._warn(f"the middle frame ({middle}) could not be decoded for the thumbnail")
            return
        self.sink.put_bytes(Rel.THUMBNAIL, data, "image/jpeg")

    def _put_peaks(self) -> bool:
        if self.peaks is None or self.audio_failed:
            return False
        path = self.peaks.finish()
        if self.peaks.samples == 0:
            self._warn("the audio stream holds no decodable samples; no audio peaks")
            return False
        self.sink.put_file(
            Rel.AUDIO_PEAKS, path, "application/octet-stream", "gzip", delete_after=True
        )
        return True

    def _result(
        self, total: int, high: HlsRendition, low: HlsRendition, has_audio: bool
    ) -> VideoResult:
        assert self.outputs is not None
        return VideoResult(
            width=self.width,
            height=self.height,
            native_fps=round(self.probe.native_fps, 4),
            fps=round(self.fps, 4),
            visible_frames=self.rule.visible,
            total_frames=total,
            sections_ext=self.profile.sections_high_format,
            hls_high=high,
            hls_low=low,
            has_audio=has_audio,
            warnings=list(self.warnings),
        )

    def _warn(self, message: str) -> None:
        log.warning("%s: %s", self.path.name, message)
        self.warnings.append(message)

    def _abort(self) -> None:
        self.frames.close()
        if self.peaks is not None:
            self.peaks.close()
        out = self.outputs
        if out is None:
            return
        out.sections.abort()
        out.high.abort()
        out.low.abort()
