"""Video bench (SPEC 10): the full output set of SPEC 4.2 for a 1080p30 H.264 clip with audio,
made by `worker.media.video.process_video` (one decode, encoders side by side) against the usual
multi-pass way (one ffmpeg CLI invocation per output, same settings), in one run.

    .venv/bin/python bench/bench_video.py            # 60 s clip, then 240 s for memory
    .venv/bin/python bench/bench_video.py --seconds 6 --long-seconds 12   # a quick look
    .venv/bin/python bench/bench_video.py --long     # 1 min against 20 min at 640x360: memory,
                                                     # marker and result size, verify
    .venv/bin/python bench/bench_video.py --profile fast   # baseline, standard, fast; PSNR, bytes

Needs the ffmpeg and ffprobe command-line tools for the baseline and to make the clips
(Debian/Ubuntu: `apt-get install -y ffmpeg`). Clips and outputs go to bench/.work/.
Each side runs in a child process; wall time, CPU seconds (user + system, the child's whole
process tree) and peak RSS come from wait4's rusage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work"
PRESET = "medium"  # x264's default preset, the same on both sides
SEGMENT_SECONDS = 2
GOP = 15
LOW_SCALE = "scale=-2:'if(gt(ih,720),max(ceil(ih/4)*2,720),ih)'"


@dataclass
class Measure:
    wall: float
    cpu: float
    peak_mb: float


def run_measured(argv: list[str]) -> Measure:
    """Run a child to completion; its process tree's CPU time and peak RSS from wait4."""
    start = time.perf_counter()
    child = subprocess.Popen(argv)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"{argv[:4]}... failed with exit code {child.returncode}")
    return Measure(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def make_clip(seconds: int) -> Path:
    """1080p30 H.264 + AAC: a moving test pattern with light temporal noise (a camera's grain,
    so PNG and x264 see realistic entropy rather than flat synthetic colour)."""
    path = WORK / f"clip_{seconds}s.mp4"
    if path.exists():
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    video = "testsrc2=size=1920x1080:rate=30,noise=alls=4:allf=t"
    audio = "sine=frequency=440:sample_rate=48000"
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", video, "-f", "lavfi", "-i"),
            *(audio, "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-crf", "18"),
            *("-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", "-b:a", "128k", str(path)),
        ],
        check=True,
    )
    return path


# -- the multi-pass baseline: one ffmpeg/ffprobe invocation per output -------------------------


def baseline(clip: Path, out: Path) -> None:
    """What SPEC 10 compares against, the way darwin-py's extractor does it, same settings."""
    shutil.rmtree(out, ignore_errors=True)
    for folder in ("segments/high", "segments/low", "sections/high", "sections/low"):
        (out / folder).mkdir(parents=True)
    ff = ["ffmpeg", "-hide_banner", "-v", "error", "-y", "-i", str(clip)]
    for quality, crf, extra in (("high", 23, []), ("low", 40, ["-vf", LOW_SCALE])):
        folder = out / "segments" / quality
        run(
            [
                *ff,
                *("-c:v", "libx264", "-preset", PRESET, "-crf", str(crf), "-g", str(GOP)),
                *("-sc_threshold", "0", "-c:a", "aac", "-b:a", "128k", *extra),
                *("-f", "hls", "-hls_time", str(SEGMENT_SECONDS), "-hls_list_size", "0"),
                *("-hls_playlist_type", "vod", "-start_number", "0"),
                *("-hls_segment_filename", str(folder / "%09d.ts"), str(folder / "index.m3u8")),
            ]
        )
    sections = ["-start_number", "0", "-fps_mode", "passthrough", "-f", "image2"]
    run([*ff, *sections, str(out / "sections/high/%09d.png")])
    run([*ff, *sections, "-q:v", "5", str(out / "sections/low/%09d.jpg")])
    stamps = probe_lines(
        ["-select_streams", "v:0", "-show_entries", "frame=pts_time", "-of", "csv=p=0"], clip
    )
    counts = [
        int(probe_lines(["-count_frames", "-show_entries", "stream=nb_read_frames"], seg)[0])
        for seg in sorted((out / "segments/high").glob("*.ts"))
    ]
    write_manifest(out / "frames_manifest.txt", stamps, counts)
    middle = len(stamps) // 2
    thumb = f"select=gte(n\\,{middle}),scale=w=356:h=200:force_original_aspect_ratio=decrease"
    run([*ff, "-vf", thumb, "-frames:v", "1", str(out / "thumbnail.jpg")])
    peaks = out / "audio_peaks"
    run([*ff, "-map", "0:a:0", "-ac", "1", "-af", "aresample=1000", "-f", "u8", str(peaks)])
    run(["gzip", "-f", str(peaks)])


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True)


def probe_lines(args: list[str], path: Path) -> list[str]:
    argv = ["ffprobe", "-v", "error", *args, str(path)]
    if "stream=nb_read_frames" in args:
        argv[3:3] = ["-select_streams", "v:0"]
        argv += ["-of", "csv=p=0"]
    text = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return [line.strip().rstrip(",") for line in text.splitlines() if line.strip()]


def write_manifest(path: Path, stamps: list[str], counts: list[int]) -> None:
    lines, segment, in_segment = [], 0, 0
    for stamp in stamps:
        if segment < len(counts) - 1 and in_segment >= counts[segment]:
            segment, in_segment = segment + 1, 0
        lines.append(f"{in_segment}:{segment}:1:{stamp}")
        in_segment += 1
    path.write_text("\n".join(lines) + "\n")


# -- mediaworker: one decode ---------------------------------------------------------------


def ours(clip: Path, out: Path, profile: str = "standard") -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from worker.config import Limits, VideoSettings
    from worker.layout import SlotLayout
    from worker.media.video import process_video
    from worker.sink import StorageSink
    from worker.storage.local import LocalStorage

    shutil.rmtree(out, ignore_errors=True)
    scratch = out / "scratch"
    scratch.mkdir(parents=True)
    with StorageSink(LocalStorage(out), SlotLayout("data", "item")) as sink:
        settings = VideoSettings.model_validate({"profile": profile})
        result = process_video(clip, sink, Limits(), settings, work_dir=scratch)
    print(
        f"  ours ({profile}): {result.total_frames} frames,"
        f" {result.hls_high.segment_count} segments, {result.width}x{result.height},"
        f" audio={result.has_audio}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--long-seconds", type=int, default=240)
    parser.add_argument(
        "--long", nargs="*", type=int, metavar="SECONDS",
        help="the whole pipeline on 640x360 clips of these lengths (default 60 1200)",
    )  # fmt: skip
    parser.add_argument(
        "--profile",
        choices=["standard", "fast"],
        default="standard",
        help="fast: baseline, standard and fast profiles on one clip, with PSNR and bytes",
    )
    parser.add_argument("--run", choices=["baseline", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        if args.run == "baseline":
            baseline(*args.paths)
        else:
            ours(*args.paths, profile=args.profile)
        return 0
    if args.long is not None:
        from bench_long import long_run

        return long_run(args.long or [60, 1200])
    if not (shutil.which("ffmpeg") and shutil.which("ffprobe")):
        print("the baseline needs ffmpeg and ffprobe: apt-get install -y ffmpeg")
        return 2
    me = [sys.executable, str(Path(__file__).resolve())]
    if args.profile == "fast":
        return compare_profiles(args.seconds, me)
    clip, long_clip = make_clip(args.seconds), make_clip(args.long_seconds)
    print(f"clip: {clip.name} (1920x1080, 30 fps, H.264 + AAC), x264 preset {PRESET}", flush=True)
    base = run_measured([*me, "--run", "baseline", str(clip), str(WORK / "out-baseline")])
    print(f"baseline (multi-pass ffmpeg): {base}", flush=True)
    mine = run_measured([*me, "--run", "ours", str(clip), str(WORK / "out-ours")])
    print(f"mediaworker (one decode):     {mine}", flush=True)
    longer = run_measured([*me, "--run", "ours", str(long_clip), str(WORK / "out-ours-long")])
    print(f"mediaworker, {args.long_seconds} s clip:    {longer}", flush=True)
    report = {
        "seconds": args.seconds,
        "baseline": asdict(base),
        "ours": asdict(mine),
        "ours_long": asdict(longer),
        "wall_speedup": round(base.wall / mine.wall, 2),
        "cpu_ratio": round(mine.cpu / base.cpu, 2),
        "cpu_seconds_per_video_minute": round(mine.cpu / (args.seconds / 60), 1),
        "peak_mb": round(mine.peak_mb),
        "peak_mb_long": round(longer.peak_mb),
        "peak_growth": round(longer.peak_mb / mine.peak_mb - 1, 3),
    }
    print(json.dumps(report, indent=2))
    print(
        f"wall: {report['wall_speedup']}x faster (target >= 1.5x); CPU: {report['cpu_ratio']}x"
        f" of baseline (target <= 0.7x); peak {report['peak_mb']} MB -> {report['peak_mb_long']}"
        f" MB at {args.long_seconds} s ({report['peak_growth']:+.1%}; targets < 600 MB, 15%)"
    )
    return 0


def compare_profiles(seconds: int, me: list[str]) -> int:
    """`--profile fast`: see bench/video_profiles.py."""
    import video_profiles

    clip = make_clip(seconds)
    print(f"clip: {clip.name} (1920x1080, 30 fps, H.264 + AAC)", flush=True)
    base = run_measured([*me, "--run", "baseline", str(clip), str(WORK / "out-baseline")])
    print(f"baseline (multi-pass ffmpeg): {base}", flush=True)
    outs = {profile: WORK / f"out-{profile}" for profile in ("standard", "fast")}
    runs = {}
    for profile, out in outs.items():
        argv = [*me, "--run", "ours", "--profile", profile, str(clip), str(out)]
        runs[profile] = run_measured(argv)
        print(f"mediaworker {profile}: {runs[profile]}", flush=True)
    quality = video_profiles.price(clip, outs)
    result = video_profiles.report(seconds, base, runs, quality)
    video_profiles.print_summary(result)
    (WORK / "profiles.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
