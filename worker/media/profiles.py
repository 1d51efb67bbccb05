"""The encoder settings of the two video profiles (`[video] profile`).

`standard` is SPEC 4.2 as written: x264 `medium` (`[video] x264_preset`), CRF 23 high and 40
low, lossless PNG high sections.

`fast` spends as little CPU per minute of video as it can while the high HLS rendition keeps
its PSNR within 0.5 dB of `standard` at no more than 15% more bytes (bench/RESULTS-video.md):

- x264 `superfast` with macroblock-tree rate control and a 10-frame lookahead put back. Most of
  `medium`'s cost is sub-pixel refinement and motion search, which buy little at these rates;
  the macroblock tree is what keeps the bytes close to `medium`'s on grainy sources, for little
  CPU. Without it (plain `superfast`) the same PSNR costs ~70% more bytes.
- CRF 22.75 high (a quarter step below 23 makes up for the weaker analysis), 40 low.
- JPEG high sections at `sections_high_jpeg_quality` unless `sections_high_format` is set:
  a 1080p PNG costs ~85 ms of CPU, a JPEG ~10.
- No `tune`: `tune=psnr` would raise the measured PSNR by turning off adaptive quantisation,
  which flat areas need; the bound is meant to hold for the picture, not for the metric.

With `[video] hardware = "auto"`, `fast` encodes on a hardware H.264 encoder when one opens here
(`worker.media.hwenc`).
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.config import VideoProfileName, VideoSettings
from worker.layout import Quality
from worker.media.hwenc import H264Encoder, find_hardware_encoder, hardware_encoder

STANDARD_CRF: dict[Quality, float] = {"high": 23, "low": 40}
FAST_CRF: dict[Quality, float] = {"high": 22.75, "low": 40}
FAST_X264 = {"preset": "superfast", "x264-params": "mbtree=1:rc-lookahead=10"}
NO_SCENE_CUT = {"sc_threshold": "0"}
"""Keyframes only on the GOP grid, so 2 s segments cut where the manifest expects."""


@dataclass(frozen=True)
class VideoProfile:
    name: VideoProfileName
    crf: dict[Quality, float]
    x264: dict[str, str]
    """libx264 options besides the CRF."""
    sections_high_format: str
    hardware: str | None = None
    """A hardware encoder's name (`worker.media.hwenc`), or None for libx264."""

    def encoder(self, quality: Quality) -> H264Encoder:
        crf = self.crf[quality]
        if self.hardware is not None:
            return hardware_encoder(self.hardware, crf)
        return H264Encoder("libx264", {"crf": f"{crf:g}", **self.x264, **NO_SCENE_CUT})


def resolve_profile(settings: VideoSettings) -> VideoProfile:
    """The encoder settings `settings` ask for; explicit section settings win over the
    profile's defaults."""
    if settings.profile == VideoProfileName.STANDARD:
        preset = {"preset": settings.x264_preset}
        return VideoProfile(settings.profile, STANDARD_CRF, preset, settings.sections_high_format)
    explicit = "sections_high_format" in settings.model_fields_set
    sections = settings.sections_high_format if explicit else "jpg"
    hardware = find_hardware_encoder() if settings.hardware == "auto" else None
    return VideoProfile(settings.profile, FAST_CRF, dict(FAST_X264), sections, hardware)
