"""H.264 encoders for the HLS renditions, and the hardware ones the fast profile may use.

With `[video] hardware = "auto"`, the fast profile looks once per process for a hardware H.264
encoder, in this order: NVENC (NVIDIA; takes frames from memory), VAAPI (Intel and AMD on Linux;
PyAV uploads each frame to the device), VideoToolbox (macOS). One is usable when PyAV's FFmpeg
has it and it opens and encodes a small frame here. Finding none is said once in the log, and
x264 encodes as usual.

Untested on real hardware: the machines this was built on have none, so the tests cover the
fallback only. Each encoder's constant-quality mode is set from the profile's CRF as a starting
point; the fast profile's PSNR and size bounds are measured for x264 alone.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass

import av
import av.error
import numpy as np
from av.codec.hwaccel import HWAccel

log = logging.getLogger(__name__)

FF_QP2LAMBDA = 118
"""FFmpeg's scale between `global_quality` and a quantiser (VideoToolbox reads it so)."""
_PROBE_SIZE = (320, 240)


@dataclass(frozen=True)
class H264Encoder:
    """What an HLS rendition opens: an FFmpeg encoder, its options and input format."""

    codec: str
    options: dict[str, str]
    pix_fmt: str = "yuv420p"
    device: str | None = None
    """The hardware device type frames are uploaded to (PyAV `HWAccel`), if the encoder
    takes frames on a device rather than from memory."""

    def hwaccel(self) -> HWAccel | None:
        if self.device is None:
            return None
        return HWAccel(self.device, allow_software_fallback=False)


@dataclass(frozen=True)
class _Hardware:
    codec: str
    options: Callable[[float], dict[str, str]]
    pix_fmt: str = "yuv420p"
    device: str | None = None


def _nvenc(crf: float) -> dict[str, str]:
    quality = str(round(crf))
    return {"preset": "p4", "rc": "vbr", "cq": quality, "b": "0", "no-scenecut": "1"}


def _vaapi(crf: float) -> dict[str, str]:
    return {"rc_mode": "CQP", "qp": str(round(crf))}


def _videotoolbox(crf: float) -> dict[str, str]:
    # VideoToolbox's quality runs 1-100, higher is better; CRF 23 maps to about 55.
    quality = max(1, min(100, round(100 - 2 * crf)))
    return {"flags": "+qscale", "global_quality": str(quality * FF_QP2LAMBDA), "b": "0"}


HARDWARE: dict[str, _Hardware] = {
    hw.codec: hw
    for hw in (
        _Hardware("h264_nvenc", _nvenc),
        _Hardware("h264_vaapi", _vaapi, pix_fmt="nv12", device="vaapi"),
        _Hardware("h264_videotoolbox", _videotoolbox),
    )
}


def hardware_encoder(codec: str, crf: float) -> H264Encoder:
    hw = HARDWARE[codec]
    return H264Encoder(codec, hw.options(crf), hw.pix_fmt, hw.device)


@functools.cache
def find_hardware_encoder() -> str | None:
    """The first hardware H.264 encoder that works here, once per process; None (and one log
    line) when there is none."""
    for codec in HARDWARE:
        problem = _problem(hardware_encoder(codec, 23))
        if problem is None:
            log.info("the fast video profile encodes HLS with %s", codec)
            return codec
        log.debug("hardware encoder %s is not usable here: %s", codec, problem)
    log.info(
        "no hardware H.264 encoder is usable on this machine (tried %s); the fast video profile"
        " encodes with x264",
        ", ".join(HARDWARE),
    )
    return None


def _problem(encoder: H264Encoder) -> str | None:
    """Why `encoder` cannot encode here, or None when it encodes a small frame."""
    if encoder.codec not in av.codecs_available:
        return "not in this FFmpeg build"
    width, height = _PROBE_SIZE
    try:
        with av.open(io.BytesIO(), "w", format="mpegts") as out:
            stream = out.add_stream(encoder.codec, rate=25, hwaccel=encoder.hwaccel())
            stream.width, stream.height, stream.pix_fmt = width, height, encoder.pix_fmt
            stream.codec_context.options = dict(encoder.options)
            grey = np.full((height * 3 // 2, width), 128, np.uint8)
            frame = av.VideoFrame.from_ndarray(grey, format="yuv420p")
            out.mux(stream.encode(frame.reformat(format=encoder.pix_fmt)))
            out.mux(stream.encode(None))
    # Opening a device can fail in many ways (no driver, no permission, no device, a build
    # without it); each only means "not here".
    except (av.error.FFmpegError, ValueError, RuntimeError, OSError) as exc:
        return str(exc)
    return None
