"""The audio side of SPEC 4.2: `audio_peaks.gz` and the frames the HLS encoders take.

Peaks are the V7 waveform format: the first audio stream mixed down to mono, resampled to
1 kHz, as unsigned 8-bit samples (128 is silence), gzipped. They are compressed as they come and
written to a scratch file, so memory does not grow with the length of the audio (about 1 KB per
second before gzip).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import av
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler

PEAKS_RATE = 1000
AAC_FRAME_SIZE = 1024


def hls_layout(stream: av.AudioStream) -> str:
    """Mono stays mono; anything wider is mixed to stereo, which every browser plays."""
    return "mono" if stream.codec_context.channels == 1 else "stereo"


class PeaksWriter:
    """The gzipped peaks, streamed to `path`."""

    def __init__(self, path: Path) -> None:
        self._resampler = AudioResampler(format="u8", layout="mono", rate=PEAKS_RATE)
        # wbits 31: a gzip container, which is what Content-Encoding: gzip means.
        self._gzip = zlib.compressobj(6, zlib.DEFLATED, 31)
        self.path = path
        self._file = path.open("wb")
        self.samples = 0

    def feed(self, frame: AudioFrame | None) -> None:
        for out in self._resampler.resample(frame):
            data = bytes(out.planes[0])[: out.samples]
            self.samples += len(data)
            self._file.write(self._gzip.compress(data))

    def finish(self) -> Path:
        self.feed(None)
        self._file.write(self._gzip.flush())
        self._file.close()
        return self.path

    def close(self) -> None:
        self._file.close()


class AacFeed:
    """Turns decoded audio into the frames the AAC encoders take (float planar, source rate,
    1024 samples each), once, so both renditions share the work."""

    def __init__(self, stream: av.AudioStream) -> None:
        self.rate = stream.codec_context.sample_rate
        self.layout = hls_layout(stream)
        self._resampler = AudioResampler(
            format="fltp", layout=self.layout, rate=self.rate, frame_size=AAC_FRAME_SIZE
        )

    def convert(self, frame: AudioFrame | None) -> list[AudioFrame]:
        return self._resampler.resample(frame)
