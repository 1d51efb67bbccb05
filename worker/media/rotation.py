"""Applying a video's rotation metadata, as players do.

A phone held upright records landscape pixels and a display matrix saying 'turn 90 degrees
clockwise'. FFmpeg reports that as a frame rotation of -90 (counter-clockwise degrees); its
command line turns it with `transpose=clock`, and so do we, in libavfilter, on the YUV frame.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import av.error
import av.filter
from av.video.frame import VideoFrame

from worker.media.demux import open_input, sniff_demuxer
from worker.media.frames import thumbnail_jpeg, to_rgb

log = logging.getLogger(__name__)

_FILTERS: dict[int, list[tuple[str, str]]] = {
    90: [("transpose", "clock")],
    180: [("hflip", ""), ("vflip", "")],
    270: [("transpose", "cclock")],
}


def clockwise_degrees(frame: VideoFrame) -> int:
    """How far the picture must turn clockwise to display upright: 0, 90, 180 or 270."""
    return round(-(frame.rotation or 0) / 90) % 4 * 90


class Rotator:
    """A filter graph that turns every frame by the first frame's rotation (none: a no-op)."""

    def __init__(self, degrees: int, frame: VideoFrame, time_base: Fraction) -> None:
        self.degrees = degrees
        self._graph: av.filter.Graph | None = None
        if degrees:
            self._graph = _graph(_FILTERS[degrees], frame, time_base)

    @classmethod
    def for_frame(cls, frame: VideoFrame, time_base: Fraction) -> Rotator:
        return cls(clockwise_degrees(frame), frame, time_base)

    def apply(self, frame: VideoFrame) -> VideoFrame:
        if self._graph is None:
            return frame
        self._graph.vpush(frame)
        return self._graph.vpull()


def _graph(steps: list[tuple[str, str]], frame: VideoFrame, time_base: Fraction) -> av.filter.Graph:
    graph = av.filter.Graph()
    nodes = [
        graph.add_buffer(
            width=frame.width, height=frame.height, format=frame.format, time_base=time_base
        )
    ]
    nodes += [graph.add(name, args) for name, args in steps]
    nodes.append(graph.add("buffersink"))
    graph.link_nodes(*nodes).configure()
    return graph


def thumbnail_at(path: Path, stream_index: int, pts: int) -> bytes | None:
    """The thumbnail of the frame at `pts`, by seeking: only when the header's frame count
    misled the single pass about where the middle frame would be."""
    try:
        demuxer = sniff_demuxer(path)
        if demuxer is None:
            return None
        with open_input(path, demuxer) as container:
            stream = container.streams[stream_index]
            container.seek(pts, stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts >= pts:
                    image = to_rgb(frame).to_image()
                    turn = clockwise_degrees(frame)
                    return thumbnail_jpeg(image.rotate(-turn, expand=True) if turn else image)
    except (av.error.FFmpegError, ValueError) as exc:
        log.warning("%s: seeking to the middle frame failed: %s", path.name, exc)
    return None
