"""The fast video profile (`[video] profile = "fast"`) against the standard one on every good
video fixture: same SPEC 4.2 layout, counts, manifest and payload fields, JPEG high sections
that the payload names; the silent fallback from hardware encoders to x264; `--profile` on the
command line; the luma PSNR helper the bench prices the profile with.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from readonly_support import files_under, read_registration, run_cli

from fixtures.videos import CLIPS, FRAMES, frame_grey, generate_videos
from worker.config import Limits, VideoSettings, settings_from_dict, with_video_profile
from worker.errors import ConfigError
from worker.items import Item
from worker.kinds import PayloadInput
from worker.kinds.registry import kind
from worker.layout import Rel, SlotLayout
from worker.media import VideoResult
from worker.media.hwenc import find_hardware_encoder
from worker.media.quality import Psnr, compare_luma, luma, psnr
from worker.media.video import process_video
from worker.sink import StorageSink
from worker.storage.base import ObjectInfo
from worker.storage.local import LocalStorage

GOOD = [*CLIPS, "rotated_90_mp4"]
LAYOUT = SlotLayout("data", "item")
FAST = VideoSettings(profile="fast")
GREY_TOLERANCE = 10


@dataclass
class Run:
    result: VideoResult
    root: Path

    def files(self) -> dict[str, Path]:
        return files_under(self.root)


def _process(source: Path, dest: Path, settings: VideoSettings) -> Run:
    dest.mkdir(parents=True, exist_ok=True)
    with StorageSink(LocalStorage(dest), LAYOUT, concurrency=4) as sink:
        result = process_video(source, sink, Limits(), settings, work_dir=dest)
    return Run(result, dest / LAYOUT.root)


def _payload(run: Run) -> dict[str, object]:
    item = Item(integration="t", key="videos/clip.mp4", item_id="item")
    source = ObjectInfo(key=item.key, size=1000, etag="e")
    given = PayloadInput(item.key, "clip.mp4", "/videos", LAYOUT, source, run.result, 0)
    payload = kind("video").payload(given).model_dump()
    for quality in ("high_quality", "low_quality"):
        payload["hls_segments"][quality].pop("bitrate")
    return payload


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def pairs(
    videos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Run, Run]]:
    """Every good fixture processed by both profiles: name -> (standard, fast)."""
    return {
        name: (
            _process(videos[name], tmp_path_factory.mktemp(f"{name}-std"), VideoSettings()),
            _process(videos[name], tmp_path_factory.mktemp(f"{name}-fast"), FAST),
        )
        for name in GOOD
    }


@pytest.mark.parametrize("name", GOOD)
def test_fast_writes_the_standard_layout_with_jpeg_high_sections(
    pairs: dict[str, tuple[Run, Run]], name: str
) -> None:
    standard, fast = pairs[name]
    assert standard.result.sections_ext == "png"
    assert fast.result.sections_ext == "jpg"
    as_jpeg = {
        rel.removesuffix(".png") + ".jpg" if rel.startswith("sections/high/") else rel
        for rel in standard.files()
    }
    assert set(fast.files()) == as_jpeg
    high = [rel for rel in fast.files() if rel.startswith("sections/high/")]
    assert len(high) == fast.result.visible_frames == standard.result.visible_frames
    for field in ("total_frames", "visible_frames", "width", "height", "native_fps", "has_audio"):
        assert getattr(fast.result, field) == getattr(standard.result, field), field
    for quality in ("high", "low"):
        assert fast.files()[Rel.hls_index(quality)].read_text() == (
            standard.files()[Rel.hls_index(quality)].read_text()
        )
    assert fast.files()[Rel.MANIFEST].read_bytes() == standard.files()[Rel.MANIFEST].read_bytes()


@pytest.mark.parametrize("name", GOOD)
def test_fast_payload_differs_only_in_the_section_extension(
    pairs: dict[str, tuple[Run, Run]], name: str
) -> None:
    standard, fast = (_payload(run) for run in pairs[name])
    assert standard.pop("storage_sections_key_extension") == "png"
    assert fast.pop("storage_sections_key_extension") == "jpg"
    assert fast == standard


@pytest.mark.parametrize("name", ["h264_aac_mp4", "odd_161x97_mp4", "rotated_90_mp4"])
def test_fast_sections_and_hls_show_the_right_frames(
    pairs: dict[str, tuple[Run, Run]], name: str
) -> None:
    _, fast = pairs[name]
    files = fast.files()
    width, height = fast.result.width, fast.result.height
    for k in (0, 17, FRAMES - 1):
        section = Image.open(files[Rel.section("high", k, "jpg")])
        assert section.format == "JPEG" and section.size == (width, height)
        grey = np.asarray(section.convert("L"))[height - 8, width - 8]
        assert abs(int(grey) - frame_grey(k)) <= GREY_TOLERANCE
    with av.open(str(files[Rel.hls_index("high")])) as container:
        frames = [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]
    assert len(frames) == FRAMES
    assert abs(int(frames[20][-6, -6]) - frame_grey(20)) <= GREY_TOLERANCE


def test_fast_high_rendition_stays_close_to_the_source(
    videos: dict[str, Path], pairs: dict[str, tuple[Run, Run]]
) -> None:
    """On flat fixtures both profiles are near-lossless (over 50 dB), where a decibel means
    nothing; the 0.5 dB bound is measured on camera-like content by bench/bench_video.py."""
    standard, fast = pairs["h264_aac_mp4"]
    scores = compare_luma(
        videos["h264_aac_mp4"],
        {
            "standard": standard.files()[Rel.hls_index("high")],
            "fast": fast.files()[Rel.hls_index("high")],
        },
    )
    assert scores["standard"].frames == scores["fast"].frames == FRAMES
    assert scores["standard"].db > 50
    assert scores["fast"].db > 50


def test_without_hardware_fast_falls_back_to_x264_and_says_so_once(
    videos: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    find_hardware_encoder.cache_clear()
    settings = VideoSettings(profile="fast", hardware="auto")
    with caplog.at_level(logging.INFO, logger="worker.media.hwenc"):
        runs = [_process(videos[n], tmp_path / n, settings) for n in ("h264_mp4", "vp9_opus_webm")]
    fallbacks = [r for r in caplog.records if "no hardware H.264 encoder" in r.getMessage()]
    assert len(fallbacks) == 1
    assert "h264_nvenc" in fallbacks[0].getMessage()
    for run in runs:
        assert run.result.total_frames == FRAMES
        segment = run.files()[Rel.segment("high", 0)].read_bytes()
        assert b"x264 - core" in segment, "encoded by libx264 (its version banner in the stream)"
        assert len([r for r in run.files() if r.startswith("sections/high/")]) == FRAMES


def test_fast_profile_settings() -> None:
    fast = settings_from_dict({"video": {"profile": "fast"}})
    assert fast.video.profile == "fast" and fast.video.hardware == "off"
    with pytest.raises(ConfigError, match=r"'video\.profile'"):
        settings_from_dict({"video": {"profile": "quick"}})
    with pytest.raises(ConfigError, match="x264_preset' applies to the standard profile"):
        settings_from_dict({"video": {"profile": "fast", "x264_preset": "slow"}})
    with pytest.raises(ConfigError, match="--profile fast"):
        with_video_profile(settings_from_dict({"video": {"x264_preset": "slow"}}), "fast")
    png = with_video_profile(settings_from_dict({"video": {"sections_high_format": "png"}}), "fast")
    assert png.video.profile == "fast" and png.video.sections_high_format == "png"


def test_fast_profile_keeps_png_sections_when_the_settings_ask(
    videos: dict[str, Path], tmp_path: Path
) -> None:
    settings = VideoSettings(profile="fast", sections_high_format="png")
    run = _process(videos["h264_mp4"], tmp_path, settings)
    assert run.result.sections_ext == "png"
    assert Image.open(run.files()[Rel.section("high", 3, "png")]).format == "PNG"


@pytest.mark.parametrize("command", ["process", "preextract"])
def test_profile_option_on_the_command_line(
    videos: dict[str, Path], tmp_path: Path, command: str
) -> None:
    bucket = tmp_path / "bucket"
    (bucket / "videos").mkdir(parents=True)
    (bucket / "videos" / "clip.mp4").write_bytes(videos["h264_aac_mp4"].read_bytes())
    config = tmp_path / "mediaworker.toml"
    config.write_text(f'[integrations.b]\nprovider = "local"\nroot = "{bucket}"\n')
    if command == "process":
        args = ["process", "b", "videos/clip.mp4", "--item-id", "item", "--config", str(config)]
        out = bucket
    else:
        out = tmp_path / "out"
        args = ["preextract", str(bucket), "--out", str(out), "--config", str(config)]
    code, lines = run_cli(*args, "--profile", "fast")
    assert code == 0, lines
    payload = lines[0]["payload"]
    assert payload["storage_sections_key_extension"] == "jpg"
    first = Path(payload["storage_sections_key_prefix"]) / "000000000.jpg"
    assert Image.open(out / first).format == "JPEG"
    if command == "preextract":
        registered = read_registration(out / "registration.jsonl")
        assert registered["videos/clip.mp4"]["storage_sections_key_extension"] == "jpg"


@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_psnr_of_a_constant_offset(k: int) -> None:
    rng = np.random.default_rng(k)
    reference = rng.integers(60, 190, size=(97, 161), dtype=np.uint8)
    distorted = reference + np.uint8(k)
    assert psnr(reference, distorted) == pytest.approx(10 * math.log10(255**2 / k**2))
    assert psnr(distorted, reference) == psnr(reference, distorted)


def test_psnr_aggregates_the_error_of_all_frames() -> None:
    reference = np.full((8, 8), 100, np.uint8)
    total = Psnr()
    total.add(reference, reference)
    assert total.db == math.inf
    total.add(reference, reference + np.uint8(2))
    # Half the samples off by 2: MSE 2.
    assert total.frames == 2
    assert total.db == pytest.approx(10 * math.log10(255**2 / 2))
    with pytest.raises(ValueError, match="differ in size"):
        total.add(reference, reference[:4])


def test_luma_reads_the_y_plane_of_a_decoded_frame() -> None:
    y = np.arange(97 * 162, dtype=np.uint32).reshape(97, 162).astype(np.uint8)[:96, :]
    planar = np.concatenate([y, np.full((48, 162), 128, np.uint8)])
    frame = av.VideoFrame.from_ndarray(planar, format="yuv420p")
    assert (luma(frame) == y).all()
    assert luma(frame, (80, 48)).shape == (48, 80)


def test_compare_luma_of_a_video_with_itself(videos: dict[str, Path]) -> None:
    score = compare_luma(videos["h264_mp4"], {"same": videos["h264_mp4"]})["same"]
    assert score.frames == FRAMES
    assert score.db == math.inf
