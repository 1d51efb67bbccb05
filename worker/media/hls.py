"""One HLS rendition of SPEC 4.2, encoded on its own thread from frames the decoder hands over.

Each rendition owns an H.264 encoder (x264 at a CRF, or a hardware one: see
`worker.media.profiles`; GOP 15, no scene-cut keyframes so 2 s segments cut on the GOP grid)
and FFmpeg's `hls` muxer writing into a scratch folder. Once segment k is complete, its video
frames are counted from the file itself (the manifest relies on what was written, not on
arithmetic) and it goes to the sink, which deletes the local copy once uploaded. The index is
handed over last, with segment lines as written (`000000000.ts`); `worker.payloads` rewrites
them to storage keys.

The muxer keeps a sliding window of `WINDOW` segments in its own playlist, not the whole list:
in its VOD mode it keeps every segment (about 12 KB each, three fixed-size path buffers) and
rewrites the whole playlist after each one, so a rendition's memory grew by 6 KB per second of
video. Each segment's entry is read from the window as the segment is handed over and appended
to a scratch file; the VOD index is assembled from that file at the end.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
from array import array
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.audio.frame import AudioFrame
from av.video.frame import VideoFrame

from worker.layout import Quality, Rel
from worker.media import HlsRendition, Sink
from worker.media.frames import reformat
from worker.media.hwenc import H264Encoder

log = logging.getLogger(__name__)

GOP = 15
SEGMENT_SECONDS = 2
AUDIO_BITRATE = 128_000
INDEX_NAME = "index.m3u8"
ENTRIES_NAME = "entries.m3u8"
WINDOW = 4
"""Segments in the muxer's own playlist. One packet closes at most one segment, and segments are
handed over after every packet, so a segment is still in the window when it is handed over."""
_STOP = object()


@dataclass(frozen=True)
class EncodeSpec:
    quality: Quality
    width: int
    height: int
    encoder: H264Encoder
    time_base: Fraction
    """The time base of the frames handed over (the source video stream's)."""
    rate: Fraction
    """The nominal frame rate, for x264's rate control; timestamps may vary around it."""


@dataclass(frozen=True)
class AudioSpec:
    rate: int
    layout: str


@dataclass
class HlsOutput:
    rendition: HlsRendition
    segment_counts: array[int]
    """Video frames in each segment written, counted from the files (4 bytes per segment)."""


def hls_options(folder: Path) -> dict[str, str]:
    return {
        "hls_time": str(SEGMENT_SECONDS),
        "hls_list_size": str(WINDOW),
        "start_number": "0",
        "hls_segment_filename": str(folder / "%09d.ts"),
    }


@dataclass
class Playlist:
    """A media playlist as FFmpeg's hls muxer writes it: header lines, one entry per segment
    (its tags and its name), trailer lines."""

    header: list[str]
    entries: dict[str, list[str]]
    trailer: list[str]

    @classmethod
    def parse(cls, text: str) -> Playlist:
        header: list[str] = []
        entries: dict[str, list[str]] = {}
        pending: list[str] = []
        for line in text.splitlines():
            if not line.startswith("#"):
                if line:
                    entries[line] = [*pending, line]
                pending = []
            elif entries or pending or line.startswith(_SEGMENT_TAGS):
                pending.append(line)
            else:
                header.append(line)
        return cls(header, entries, pending)

    def target_duration(self) -> int:
        for line in self.header:
            if line.startswith(_TARGET):
                return int(line.removeprefix(_TARGET))
        return 0


_SEGMENT_TAGS = ("#EXTINF:", "#EXT-X-DISCONTINUITY", "#EXT-X-BYTERANGE:")
_TARGET = "#EXT-X-TARGETDURATION:"
_SEQUENCE = "#EXT-X-MEDIA-SEQUENCE:"


def vod_index(last: Playlist, target: int, entries: str) -> str:
    """The whole rendition's index, as the muxer's VOD mode writes it: the last window's header
    with the longest segment's target duration, sequence 0 and the VOD type, then every entry."""
    lines: list[str] = []
    for line in last.header:
        if line.startswith(_TARGET):
            lines.append(f"{_TARGET}{target}")
        elif line.startswith(_SEQUENCE):
            lines += [f"{_SEQUENCE}0", "#EXT-X-PLAYLIST-TYPE:VOD"]
        else:
            lines.append(line)
    return "\n".join(lines) + "\n" + entries + "".join(f"{line}\n" for line in last.trailer)


def count_video_frames(segment: Path) -> int:
    """Video frames in a finished MPEG-TS segment: the H.264 PES packets, one per frame, read
    from the transport stream itself (FFmpeg's probing cannot open a segment of a few packets).
    """
    data = segment.read_bytes()
    packets = [data[at : at + TS_PACKET] for at in range(0, len(data) - TS_PACKET + 1, TS_PACKET)]
    video_pids = _h264_pids(packets)
    count = 0
    for packet in packets:
        if packet[0] == 0x47 and packet[1] & 0x40 and _pid(packet) in video_pids:
            count += 1
    return count


TS_PACKET = 188
_H264_STREAM_TYPE = 0x1B


def _pid(packet: bytes) -> int:
    return ((packet[1] & 0x1F) << 8) | packet[2]


def _section(packet: bytes) -> bytes:
    """The PSI section starting in this packet (after any adaptation field and the pointer)."""
    at = 4
    if packet[3] & 0x20:
        at += 1 + packet[4]
    at += 1 + packet[at]
    return packet[at:]


def _h264_pids(packets: list[bytes]) -> set[int]:
    pmt_pids: set[int] = set()
    video: set[int] = set()
    for packet in packets:
        if packet[0] != 0x47 or not packet[1] & 0x40:
            continue
        pid = _pid(packet)
        if pid == 0:
            pmt_pids |= _pat_programs(_section(packet))
        elif pid in pmt_pids:
            video |= _pmt_streams(_section(packet), _H264_STREAM_TYPE)
    return video


def _pat_programs(section: bytes) -> set[int]:
    length = ((section[1] & 0x0F) << 8) | section[2]
    entries = section[8 : 3 + length - 4]
    return {
        ((entries[i + 2] & 0x1F) << 8) | entries[i + 3]
        for i in range(0, len(entries) - 3, 4)
        if entries[i] or entries[i + 1]  # program 0 is the network PID, not a PMT
    }


def _pmt_streams(section: bytes, stream_type: int) -> set[int]:
    length = ((section[1] & 0x0F) << 8) | section[2]
    end = 3 + length - 4
    at = 12 + (((section[10] & 0x0F) << 8) | section[11])
    found: set[int] = set()
    while at + 5 <= end:
        kind, pid = section[at], ((section[at + 1] & 0x1F) << 8) | section[at + 2]
        if kind == stream_type:
            found.add(pid)
        at += 5 + (((section[at + 3] & 0x0F) << 8) | section[at + 4])
    return found


class HlsWriter:
    """Encodes and segments one rendition on a background thread fed by a bounded queue."""

    def __init__(
        self,
        spec: EncodeSpec,
        folder: Path,
        sink: Sink,
        audio: AudioSpec | None = None,
        queue_size: int = 8,
    ) -> None:
        self.spec = spec
        self._folder = folder
        self._sink = sink
        self._queue: queue.Queue[object] = queue.Queue(queue_size)
        self._error: BaseException | None = None
        self._counts: array[int] = array("I")
        self._bytes = 0
        self._target = 0
        self._index_text = ""
        self._ended = False
        folder.mkdir(parents=True, exist_ok=True)
        self._entries = (folder / ENTRIES_NAME).open("w+")
        self._container = av.open(
            str(folder / INDEX_NAME), "w", format="hls", options=hls_options(folder)
        )
        self._video = self._add_video()
        self._audio = self._add_audio(audio) if audio else None
        self._thread = threading.Thread(target=self._run, name=f"hls-{spec.quality}", daemon=True)
        self._thread.start()

    def _add_video(self) -> av.VideoStream:
        spec = self.spec
        encoder = spec.encoder
        stream = self._container.add_stream(
            encoder.codec, rate=spec.rate, hwaccel=encoder.hwaccel()
        )
        stream.width, stream.height = spec.width, spec.height
        stream.pix_fmt = encoder.pix_fmt
        context = stream.codec_context
        context.time_base = spec.time_base
        context.framerate = spec.rate
        context.gop_size = GOP
        context.options = dict(encoder.options)
        return stream

    def _add_audio(self, audio: AudioSpec) -> av.AudioStream:
        stream = self._container.add_stream("aac", rate=audio.rate, layout=audio.layout)
        stream.bit_rate = AUDIO_BITRATE
        return stream

    def put_video(self, frame: VideoFrame) -> None:
        self._put(frame)

    def put_audio(self, frame: AudioFrame) -> None:
        if self._audio is not None:
            self._put(frame)

    def _put(self, item: object) -> None:
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def end(self) -> None:
        """No more input: the thread flushes its encoders (call `finish` for the result)."""
        if not self._ended:
            self._put(_STOP)
            self._ended = True

    def finish(self) -> HlsOutput:
        """Flush the encoders, hand over the last segments and the index; raise any failure."""
        self.end()
        self._thread.join()
        if self._error is not None:
            raise self._error
        duration = _index_duration(self._index_text)
        bitrate = round(self._bytes * 8 / duration) if duration > 0 else 0
        self._sink.put_bytes(
            Rel.hls_index(self.spec.quality),
            self._index_text.encode(),
            "application/vnd.apple.mpegurl",
        )
        rendition = HlsRendition(self._index_text, bitrate, len(self._counts))
        return HlsOutput(rendition, self._counts)

    def abort(self) -> None:
        """Stop the thread after a failure elsewhere; outputs are left incomplete."""
        self._error = self._error or RuntimeError("aborted")
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.1)
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(_STOP)
            self._thread.join(timeout=0.1)

    def _run(self) -> None:
        try:
            self._encode_all()
        except BaseException as exc:
            log.debug("HLS %s failed", self.spec.quality, exc_info=True)
            if self._error is None:
                self._error = exc
            self._close_quietly()

    def _encode_all(self) -> None:
        spec = self.spec
        while True:
            item = self._queue.get()
            if item is _STOP or self._error is not None:
                break
            if isinstance(item, VideoFrame):
                self._mux(self._video.encode(self._fit(item)))
            elif self._audio is not None and isinstance(item, AudioFrame):
                self._mux(self._audio.encode(item))
        if self._error is not None:
            self._close_quietly()
            return
        self._mux(self._video.encode(None))
        if self._audio is not None:
            self._mux(self._audio.encode(None))
        self._container.close()
        self._publish_finished(final=True)
        index = self._folder / INDEX_NAME
        last = Playlist.parse(index.read_text())
        self._entries.seek(0)
        self._index_text = vod_index(last, self._target, self._entries.read())
        self._entries.close()
        index.unlink()
        (self._folder / ENTRIES_NAME).unlink()
        log.debug("HLS %s: %d segments", spec.quality, len(self._counts))

    def _fit(self, frame: VideoFrame) -> VideoFrame:
        spec = self.spec
        pix_fmt = spec.encoder.pix_fmt
        if (frame.width, frame.height) == (spec.width, spec.height) and (
            frame.format.name == pix_fmt
        ):
            return frame
        return reformat(
            frame, width=spec.width, height=spec.height, format=pix_fmt, interpolation="BICUBIC"
        )

    def _mux(self, packets: list[av.Packet]) -> None:
        # One at a time: a packet closes at most one segment, which is then still in the window.
        for packet in packets:
            self._container.mux(packet)
            self._publish_finished()

    def _publish_finished(self, final: bool = False) -> None:
        """Hand over every segment the muxer has finished: all of them once it is closed,
        else those followed by a newer one (FFmpeg's hls muxer creates a segment's file when
        the segment ends; waiting for the next one also holds if a version wrote earlier)."""
        playlist: Playlist | None = None
        while True:
            index = len(self._counts)
            current = self._folder / Rel.segment_name(index)
            following = self._folder / Rel.segment_name(index + 1)
            if not current.exists() or not (final or following.exists()):
                return
            playlist = playlist or Playlist.parse((self._folder / INDEX_NAME).read_text())
            self._keep_entry(playlist, Rel.segment_name(index))
            self._counts.append(count_video_frames(current))
            self._bytes += current.stat().st_size
            self._sink.put_file(
                Rel.segment(self.spec.quality, index), current, "video/mp2t", delete_after=True
            )

    def _keep_entry(self, playlist: Playlist, name: str) -> None:
        entry = playlist.entries.get(name)
        if entry is None:  # the window is sized so that this cannot happen: a bug of ours
            raise RuntimeError(f"HLS {self.spec.quality}: {name} is not in the muxer's window")
        self._entries.write("".join(f"{line}\n" for line in entry))
        self._target = max(self._target, playlist.target_duration(), _rounded_duration(entry))

    def _close_quietly(self) -> None:
        self._entries.close()
        try:
            self._container.close()
        except Exception:  # already failing: the first error is the one to report
            log.debug("closing HLS %s after a failure", self.spec.quality, exc_info=True)


def _rounded_duration(entry: list[str]) -> int:
    """A segment's duration rounded to the nearest integer, halves up: what RFC 8216 requires
    the target duration to cover (FFmpeg's muxer rounds halves to even, so a 2.5 s segment
    would get a target of 2, which strict players and validators refuse)."""
    for line in entry:
        if line.startswith("#EXTINF:"):
            return math.floor(float(line.removeprefix("#EXTINF:").split(",", 1)[0]) + 0.5)
    return 0


def _index_duration(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#EXTINF:"):
            total += float(line.removeprefix("#EXTINF:").split(",", 1)[0])
    return total
