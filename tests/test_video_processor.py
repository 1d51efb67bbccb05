"""The video processor against every video fixture (SPEC 4.2, 9).

Fixtures are 3 s at 12 fps: frame `i` is a flat grey `frame_grey(i)` with a red top-left
quarter. Outputs go through the real `StorageSink` into a `LocalStorage` folder, and are checked
by decoding them back: pixels, sizes, counts, segment frame counts.
"""

from __future__ import annotations

import gzip
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from fixtures.videos import (
    FPS,
    FRAMES,
    HEIGHT,
    LONG_CLIP,
    WIDTH,
    frame_grey,
    generate_videos,
    write_clip,
)
from worker.config import Limits, VideoSettings
from worker.errors import CorruptMedia, PermanentError, Reason, TooLarge, UnsupportedFormat
from worker.layout import Rel, SlotLayout
from worker.media import VideoResult
from worker.media.frames import downsample_step, low_size
from worker.media.hls import WINDOW
from worker.media.video import process_video
from worker.sink import StorageSink
from worker.storage.local import LocalStorage

GOOD = [
    "h264_aac_mp4",
    "h264_mp4",
    "h264_mkv",
    "h264_mov",
    "odd_161x97_mp4",
    "vfr_mkv",
    "hevc_10bit_mp4",
    "vp9_opus_webm",
    "mjpeg_avi",
    "mpeg4_mp4",
    "av1_mp4",
    "rotated_90_mp4",
]
GREY_TOLERANCE = 10


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_videos(tmp_path_factory.mktemp("videos"))


@dataclass
class Run:
    result: VideoResult
    root: Path
    """The slot folder holding the outputs."""
    encodings: dict[str, str | None]

    def path(self, rel: str) -> Path:
        return self.root / rel

    def files(self, folder: str) -> list[Path]:
        return sorted((self.root / folder).iterdir())

    def manifest(self) -> list[list[str]]:
        lines = self.path(Rel.MANIFEST).read_text().splitlines()
        return [line.split(":") for line in lines]


class RecordingSink(StorageSink):
    """The real sink, remembering each output's content encoding."""

    def __init__(self, storage: LocalStorage) -> None:
        super().__init__(storage, SlotLayout("data", "item"), concurrency=4)
        self.encodings: dict[str, str | None] = {}

    def put_bytes(
        self, rel: str, data: bytes, content_type: str, content_encoding: str | None = None
    ) -> None:
        self.encodings[rel] = content_encoding
        super().put_bytes(rel, data, content_type, content_encoding)

    def put_file(
        self,
        rel: str,
        path: Path,
        content_type: str,
        content_encoding: str | None = None,
        delete_after: bool = False,
    ) -> None:
        self.encodings[rel] = content_encoding
        super().put_file(rel, path, content_type, content_encoding, delete_after)


def _process(
    source: Path, dest: Path, fps: float = 0, settings: VideoSettings | None = None, **limits: int
) -> Run:
    sink = RecordingSink(LocalStorage(dest))
    with sink:
        result = process_video(
            source, sink, Limits(**limits), settings or VideoSettings(), fps=fps, work_dir=dest
        )
    return Run(result, dest / "data" / "item" / "files" / "0", sink.encodings)


@pytest.fixture(scope="module")
def runs(videos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every good fixture processed once at its native rate."""
    return {name: _process(videos[name], tmp_path_factory.mktemp(name)) for name in GOOD}


def _grey(image: Image.Image, x: int, y: int) -> float:
    return float(np.asarray(image.convert("L"))[y, x])


def _decode_frames(path: Path) -> list[av.VideoFrame]:
    # A segment of a few flat frames is too short for FFmpeg's format probe: name it.
    with av.open(str(path), format="mpegts" if path.suffix == ".ts" else None) as container:
        return list(container.decode(video=0))


def _visible_indexes(total: int, step: float) -> list[int]:
    visible: list[int] = []
    for n in range(total):
        if n == int(len(visible) * step):
            visible.append(n)
    return visible


@pytest.mark.parametrize("name", GOOD)
def test_every_format_gives_the_full_output_set(runs: dict[str, Run], name: str) -> None:
    run = runs[name]
    result = run.result
    assert result.total_frames == FRAMES
    assert result.visible_frames == FRAMES
    assert result.native_fps == pytest.approx(FPS, rel=0.1)
    assert len(run.files("sections/high")) == result.visible_frames
    assert len(run.files("sections/low")) == result.visible_frames
    assert run.path(Rel.section("high", 0, "png")).is_file()
    assert run.path(Rel.section("low", FRAMES - 1, "jpg")).is_file()
    assert len(run.manifest()) == result.total_frames
    assert run.path(Rel.THUMBNAIL).is_file()
    for quality, rendition in (("high", result.hls_high), ("low", result.hls_low)):
        index = run.path(Rel.hls_index(quality)).read_text()
        assert index == rendition.index_text
        assert index.rstrip().endswith("#EXT-X-ENDLIST")
        names = [ln for ln in index.splitlines() if ln and not ln.startswith("#")]
        assert names == [Rel.segment_name(i) for i in range(rendition.segment_count)]
        for segment in names:
            assert run.path(Rel.segments_dir(quality) + segment).stat().st_size > 0
        assert rendition.bitrate > 0
        _assert_target_covers_every_segment(index)


def _assert_target_covers_every_segment(index: str) -> None:
    """RFC 8216 4.3.3.1: each EXTINF, rounded to the nearest integer, is at most the target."""
    lines = index.splitlines()
    [target] = [int(ln.split(":")[1]) for ln in lines if ln.startswith("#EXT-X-TARGETDURATION:")]
    durations = [float(ln[8:].split(",")[0]) for ln in lines if ln.startswith("#EXTINF:")]
    assert durations and all(math.floor(d + 0.5) <= target for d in durations), (target, durations)


@pytest.mark.parametrize("name", GOOD)
def test_sections_show_the_right_frames(runs: dict[str, Run], name: str) -> None:
    """Section k is decoded frame k: its grey level says which; the red block says which way up."""
    run = runs[name]
    for k in (0, 17, FRAMES - 1):
        high = Image.open(run.path(Rel.section("high", k, "png")))
        low = Image.open(run.path(Rel.section("low", k, "jpg")))
        assert high.mode == "RGB"
        assert (high.width, high.height) == (run.result.width, run.result.height)
        assert low.size == high.size
        corner = (high.width - 8, high.height - 8)
        assert abs(_grey(high, *corner) - frame_grey(k)) <= GREY_TOLERANCE
        assert abs(_grey(low, *corner) - frame_grey(k)) <= GREY_TOLERANCE


@pytest.mark.parametrize("name", ["h264_aac_mp4", "vfr_mkv", "vp9_opus_webm", "odd_161x97_mp4"])
def test_manifest_matches_the_segments_written(runs: dict[str, Run], name: str) -> None:
    """Per segment, the manifest's frames == the frames PyAV decodes from that .ts file."""
    run = runs[name]
    manifest = run.manifest()
    claimed: dict[int, list[int]] = {}
    for in_segment, segment, _visible, _stamp in manifest:
        claimed.setdefault(int(segment), []).append(int(in_segment))
    decoded = [
        len(_decode_frames(run.path(Rel.segment("high", i))))
        for i in range(run.result.hls_high.segment_count)
    ]
    assert [len(claimed[i]) for i in sorted(claimed)] == decoded
    for numbers in claimed.values():
        assert numbers == list(range(len(numbers)))
    # GOP 15 at 12 fps: the first keyframe at or after 2 s is frame 30, not frame 24.
    assert decoded[0] == 30


def test_manifest_timestamps_follow_the_source(runs: dict[str, Run]) -> None:
    stamps = [float(line[3]) for line in runs["h264_mp4"].manifest()]
    assert stamps == pytest.approx([i / FPS for i in range(FRAMES)], abs=1e-3)
    vfr = [float(line[3]) for line in runs["vfr_mkv"].manifest()]
    gaps = {round(b - a, 3) for a, b in itertools.pairwise(vfr)}
    assert gaps == {0.05, 0.116}


@pytest.mark.parametrize("quality", ["high", "low"])
def test_hls_index_plays_back(runs: dict[str, Run], quality: str) -> None:
    run = runs["h264_aac_mp4"]
    index = run.path(Rel.hls_index(quality))
    with av.open(str(index)) as container:
        assert container.streams.audio, "the source's audio is in the stream"
        frames = list(container.decode(video=0))
    assert len(frames) == run.result.total_frames
    assert (frames[0].width, frames[0].height) == low_size(WIDTH, HEIGHT)
    middle = frames[FRAMES // 2].to_image()
    assert abs(_grey(middle, WIDTH - 8, HEIGHT - 8) - frame_grey(FRAMES // 2)) <= GREY_TOLERANCE


def test_long_clip_index_lists_every_segment(tmp_path: Path) -> None:
    """FFmpeg's muxer keeps only a window of segments; the index still lists all of them, as a
    VOD playlist, and every segment plays back with the frames the manifest puts in it."""
    run = _process(write_clip(tmp_path / "source" / "long.mkv", LONG_CLIP), tmp_path)
    assert run.result.total_frames == LONG_CLIP.frames
    for quality, rendition in (("high", run.result.hls_high), ("low", run.result.hls_low)):
        lines = run.path(Rel.hls_index(quality)).read_text().splitlines()
        assert lines[:2] == ["#EXTM3U", "#EXT-X-VERSION:3"]
        assert lines[3:5] == ["#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD"]
        assert lines[-1] == "#EXT-X-ENDLIST"
        names = [line for line in lines if not line.startswith("#")]
        assert rendition.segment_count > WINDOW + 2
        assert names == [Rel.segment_name(i) for i in range(rendition.segment_count)]
        durations = [float(line[8:].split(",")[0]) for line in lines if line.startswith("#EXTINF")]
        assert len(durations) == len(names)
        assert sum(durations) == pytest.approx(LONG_CLIP.frames / FPS, abs=0.2)
        target = int(lines[2].removeprefix("#EXT-X-TARGETDURATION:"))
        assert abs(target - max(durations)) <= 0.5
        _assert_target_covers_every_segment("\n".join(lines))
    with av.open(str(run.path(Rel.hls_index("high")))) as container:
        assert len(list(container.decode(video=0))) == LONG_CLIP.frames
    per_segment: dict[int, int] = {}
    for _, segment, _, _ in run.manifest():
        per_segment[int(segment)] = per_segment.get(int(segment), 0) + 1
    decoded = [
        len(_decode_frames(run.path(Rel.segment("high", i))))
        for i in range(run.result.hls_high.segment_count)
    ]
    assert [per_segment[i] for i in sorted(per_segment)] == decoded


def test_low_rendition_size_rule() -> None:
    assert low_size(1920, 1080) == (1280, 720)
    assert low_size(3840, 2160) == (1920, 1080)
    assert low_size(1080, 1920) == (540, 960)
    assert low_size(640, 480) == (640, 480)
    assert low_size(161, 97) == (160, 96)


def test_rotated_video_gives_portrait_outputs(runs: dict[str, Run]) -> None:
    run = runs["rotated_90_mp4"]
    assert (run.result.width, run.result.height) == (HEIGHT, WIDTH)
    section = Image.open(run.path(Rel.section("high", 5, "png"))).convert("RGB")
    assert section.size == (HEIGHT, WIDTH)
    # Turned clockwise, the source's top-left red block is now top-right.
    r, g, _ = section.getpixel((HEIGHT - 10, 10))
    assert r > 180 and g < 80
    assert abs(_grey(section, 10, 10) - frame_grey(5)) <= GREY_TOLERANCE
    hls = _decode_frames(run.path(Rel.segment("high", 0)))
    assert (hls[0].width, hls[0].height) == (HEIGHT, WIDTH)
    thumb = Image.open(run.path(Rel.THUMBNAIL))
    assert thumb.height > thumb.width


@pytest.mark.parametrize("name", ["h264_mp4", "vfr_mkv", "vp9_opus_webm", "rotated_90_mp4"])
def test_thumbnail_is_the_middle_frame(runs: dict[str, Run], name: str) -> None:
    run = runs[name]
    thumb = Image.open(run.path(Rel.THUMBNAIL))
    assert thumb.format == "JPEG"
    assert thumb.width <= 356 and thumb.height <= 200
    middle = run.result.total_frames // 2
    grey = _grey(thumb, thumb.width - 6, thumb.height - 6)
    assert abs(grey - frame_grey(middle)) <= GREY_TOLERANCE


@pytest.mark.parametrize("fps", [4, 5, 12, 30])
def test_downsampling_marks_and_writes_the_visible_frames(
    videos: dict[str, Path], tmp_path: Path, fps: float
) -> None:
    """fps 4 divides 12 (step 3); fps 5 does not (step 2.4); 12 and 30 keep every frame."""
    run = _process(videos["h264_mp4"], tmp_path, fps=fps)
    step = downsample_step(FPS, fps)
    expected = _visible_indexes(FRAMES, step)
    flags = [int(line[2]) for line in run.manifest()]
    assert [n for n, flag in enumerate(flags) if flag] == expected
    assert run.result.visible_frames == len(expected)
    assert run.result.total_frames == FRAMES
    sections = run.files("sections/high")
    assert len(sections) == len(expected)
    assert sections[-1].name == Rel.section("high", len(expected) - 1, "png").split("/")[-1]
    for k in (1, len(expected) - 1):
        image = Image.open(run.path(Rel.section("high", k, "png")))
        assert abs(_grey(image, WIDTH - 8, HEIGHT - 8) - frame_grey(expected[k])) <= 10


def test_downsampling_steps() -> None:
    assert downsample_step(12, 4) == 3
    assert downsample_step(12, 5) == 2.4
    assert downsample_step(29.97, 10) == 2.997
    assert downsample_step(12, 30) == 1
    assert downsample_step(12, 0) == 1


def test_audio_peaks(runs: dict[str, Run]) -> None:
    run = runs["h264_aac_mp4"]
    assert run.result.has_audio
    assert run.encodings[Rel.AUDIO_PEAKS] == "gzip"
    peaks = np.frombuffer(gzip.decompress(run.path(Rel.AUDIO_PEAKS).read_bytes()), np.uint8)
    # Mono at 1 kHz over 3 s, unsigned 8-bit around 128, a tone whose loudness rises.
    assert abs(len(peaks) - 3000) <= 100
    swing = np.abs(peaks.astype(int) - 128)
    assert swing[:300].max() < 30
    assert swing[-600:].max() > 60


@pytest.mark.parametrize("name", ["h264_mp4", "rotated_90_mp4", "mjpeg_avi"])
def test_no_audio_no_peaks(runs: dict[str, Run], name: str) -> None:
    run = runs[name]
    assert not run.result.has_audio
    assert not run.path(Rel.AUDIO_PEAKS).exists()


def test_odd_size_keeps_sections_exact_and_hls_even(runs: dict[str, Run]) -> None:
    run = runs["odd_161x97_mp4"]
    assert (run.result.width, run.result.height) == (161, 97)
    assert Image.open(run.path(Rel.section("high", 0, "png"))).size == (161, 97)
    frames = _decode_frames(run.path(Rel.segment("high", 0)))
    assert (frames[0].width, frames[0].height) == (160, 96)


def test_high_sections_as_jpeg(videos: dict[str, Path], tmp_path: Path) -> None:
    settings = VideoSettings(sections_high_format="jpg", sections_high_jpeg_quality=90)
    run = _process(videos["h264_mp4"], tmp_path, settings=settings)
    assert run.result.sections_ext == "jpg"
    sections = run.files("sections/high")
    assert len(sections) == FRAMES
    assert all(path.suffix == ".jpg" for path in sections)
    assert Image.open(sections[3]).format == "JPEG"


def test_truncated_file_gives_what_decodes_and_says_so(
    videos: dict[str, Path], tmp_path: Path
) -> None:
    run = _process(videos["truncated_mp4"], tmp_path)
    assert 0 < run.result.total_frames < FRAMES
    assert run.result.warnings
    assert "truncated" in " ".join(run.result.warnings)
    assert len(run.files("sections/high")) == run.result.visible_frames
    assert len(run.manifest()) == run.result.total_frames


@pytest.mark.parametrize(
    ("name", "error", "reason"),
    [
        ("no_moov_mp4", CorruptMedia, Reason.CORRUPT_MEDIA),
        ("audio_only_m4a", UnsupportedFormat, Reason.UNSUPPORTED_FORMAT),
        ("random_bytes_mp4", UnsupportedFormat, Reason.UNSUPPORTED_FORMAT),
    ],
)
def test_broken_files_give_their_reason(
    videos: dict[str, Path],
    tmp_path: Path,
    name: str,
    error: type[PermanentError],
    reason: Reason,
) -> None:
    with pytest.raises(error) as caught:
        _process(videos[name], tmp_path)
    assert caught.value.reason == reason
    assert videos[name].name in str(caught.value)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "limits",
    [{"max_video_seconds": 2}, {"max_video_frames": 30}, {"max_video_width": 100}],
)
def test_limits_fail_before_decoding(
    videos: dict[str, Path], tmp_path: Path, limits: dict[str, int]
) -> None:
    with pytest.raises(TooLarge) as caught:
        _process(videos["h264_aac_mp4"], tmp_path, **limits)
    assert caught.value.reason == Reason.TOO_LARGE
    assert not (tmp_path / "data").exists(), "nothing is written for a rejected video"
