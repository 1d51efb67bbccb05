"""`bench_video.py --profile fast`: the fast video profile against the multi-pass baseline and
against the standard profile, in one run.

Measures wall, CPU and peak memory of the baseline, `standard` and `fast` on the same clip (each
in a child process), then the price of `fast`: luma PSNR of both HLS renditions against the
decoded source (the low one against the source scaled to its size) and their bytes, next to
`standard`'s. The fast profile's bounds: the high rendition within 0.5 dB of `standard` at no
more than 15% more bytes.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.layout import Quality, Rel, SlotLayout
from worker.media.quality import compare_luma

QUALITIES: tuple[Quality, ...] = ("high", "low")
PSNR_BOUND_DB = 0.5
BYTES_BOUND = 1.15
WALL_TARGET = 2.5
SLOT = SlotLayout("data", "item")


class Measured(Protocol):
    wall: float
    cpu: float
    peak_mb: float


def slot_folder(out: Path) -> Path:
    """Where `bench_video.ours` writes the outputs of its one item."""
    return out / SLOT.root


def rendition_bytes(out: Path, quality: Quality) -> int:
    """Bytes of the rendition's segments (video and AAC audio), as stored."""
    folder = slot_folder(out) / Rel.segments_dir(quality)
    return sum(path.stat().st_size for path in folder.glob("*.ts"))


def price(clip: Path, outs: dict[str, Path]) -> dict[str, Any]:
    """PSNR and bytes of each profile's renditions; `outs` maps a profile to its output folder."""
    renditions = {
        f"{profile}_{quality}": slot_folder(out) / Rel.hls_index(quality)
        for profile, out in outs.items()
        for quality in QUALITIES
    }
    started = time.perf_counter()
    scores = compare_luma(clip, renditions)
    print(f"  PSNR of {len(renditions)} renditions in {time.perf_counter() - started:.0f} s")
    table: dict[str, Any] = {}
    for quality in QUALITIES:
        row = {}
        for profile, out in outs.items():
            score = scores[f"{profile}_{quality}"]
            row[profile] = {
                "psnr_db": round(score.db, 3),
                "frames": score.frames,
                "bytes": rendition_bytes(out, quality),
            }
        row["psnr_delta_db"] = round(row["fast"]["psnr_db"] - row["standard"]["psnr_db"], 3)
        row["bytes_ratio"] = round(row["fast"]["bytes"] / row["standard"]["bytes"], 3)
        table[quality] = row
    return table


def report(
    seconds: int, base: Measured, runs: dict[str, Measured], quality: dict[str, Any]
) -> dict[str, Any]:
    minutes = seconds / 60
    result: dict[str, Any] = {"seconds": seconds, "baseline": asdict(base)}  # type: ignore[call-overload]
    for profile, run in runs.items():
        result[profile] = {
            **asdict(run),  # type: ignore[call-overload]
            "wall_speedup": round(base.wall / run.wall, 2),
            "cpu_ratio": round(run.cpu / base.cpu, 2),
            "cpu_seconds_per_video_minute": round(run.cpu / minutes, 1),
        }
    result["fast_cpu_vs_standard"] = round(runs["fast"].cpu / runs["standard"].cpu, 2)
    result["quality"] = quality
    high = quality["high"]
    result["bounds_met"] = {
        "wall_speedup": result["fast"]["wall_speedup"] >= WALL_TARGET,
        "psnr": high["psnr_delta_db"] >= -PSNR_BOUND_DB,
        "bytes": high["bytes_ratio"] <= BYTES_BOUND,
    }
    return result


def print_summary(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2))
    fast, high, low = result["fast"], result["quality"]["high"], result["quality"]["low"]
    print(
        f"fast: {fast['wall_speedup']}x the baseline's wall time (target >= {WALL_TARGET}x),"
        f" {fast['cpu_ratio']}x its CPU, {result['fast_cpu_vs_standard']}x standard's CPU,"
        f" {fast['cpu_seconds_per_video_minute']} CPU s per video minute, peak"
        f" {fast['peak_mb']:.0f} MB"
    )
    print(
        f"HLS high: {high['psnr_delta_db']:+.2f} dB (bound -{PSNR_BOUND_DB}), bytes"
        f" {high['bytes_ratio']:.3f}x (bound {BYTES_BOUND}x); HLS low:"
        f" {low['psnr_delta_db']:+.2f} dB, bytes {low['bytes_ratio']:.3f}x"
    )
    print(f"bounds met: {result['bounds_met']}")
