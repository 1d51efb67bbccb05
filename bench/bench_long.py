"""Long videos stay cheap (`bench_video.py --long`): the whole pipeline (`mediaworker process
--json` on a local integration, in a child process) on the same 640x360 content at several
lengths, in one run: peak memory, `metadata.json` and `--json` result line sizes, then
`mediaworker verify` of the longest clip's outputs with one section in the middle deleted.

Clips are made by ffmpeg (`testsrc2` + a sine tone, x264 ultrafast: under a minute for 20 min).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench_video import Measure

REPO = Path(__file__).resolve().parents[1]
WORK = Path(__file__).resolve().parent / ".work" / "long"
BUCKET = WORK / "bucket"
sys.path.insert(0, str(REPO))


def make_clip(seconds: int) -> str:
    """640x360 30 fps H.264 + AAC, the same moving pattern and tone whatever the length."""
    key = f"clips/clip_{seconds}s.mp4"
    path = BUCKET / key
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                *("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i"),
                *("testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i"),
                *("sine=frequency=440:sample_rate=48000", "-t", str(seconds)),
                *("-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-pix_fmt", "yuv420p"),
                *("-c:a", "aac", "-ac", "2", "-b:a", "96k", str(path)),
            ],
            check=True,
        )
    return key


def write_config() -> Path:
    path = WORK / "mediaworker.toml"
    path.write_text(
        f'[integrations.bench]\nprovider = "local"\nroot = "{BUCKET}"\nprefix = "data"\n\n'
        f'[integrations.bench_ro]\nprovider = "local"\nroot = "{BUCKET}"\nprefix = "data"\n'
        "readonly = true\n"
    )
    return path


def run_cli(args: list[str], config: Path) -> tuple[Measure, str]:
    """`mediaworker ARGS --json` in a child; its peak RSS and wall time, and its stdout."""
    out = WORK / "stdout.jsonl"
    start = time.perf_counter()
    with out.open("w") as stdout:
        argv = [sys.executable, "-m", "worker", *args, "--json", "--config", str(config)]
        child = subprocess.Popen(argv, stdout=stdout, cwd=REPO)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"{args[:3]} failed with exit code {code}")
    return Measure(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024), out.read_text()


def process(seconds: int, config: Path) -> dict[str, object]:
    row = measure_item(make_clip(seconds), config)
    row["seconds"] = seconds
    print(json.dumps(row), flush=True)
    return row


def measure_item(key: str, config: Path) -> dict[str, object]:
    """Process one key of the bench bucket in a child: peak memory, marker and line sizes."""
    from worker.assets import count_keys
    from worker.items import default_item_id
    from worker.layout import SlotLayout
    from worker.payloads import Metadata

    measure, out = run_cli(["process", "bench", key], config)
    line = out.strip().splitlines()[-1]
    result = json.loads(line)
    if result["status"] != "ok":
        raise SystemExit(f"{key}: {result['status']} {result['message']}")
    marker = BUCKET / SlotLayout("data", default_item_id(key)).metadata_key
    metadata = Metadata.model_validate_json(marker.read_bytes())
    payload = result["payload"]
    hls_index = sum(len(json.dumps(q["index"])) for q in payload.get("hls_segments", {}).values())
    return {
        "key": key,
        "frames": payload.get("total_frames"),
        "tiles": payload.get("tile_count"),
        "wall_s": round(measure.wall, 1),
        "cpu_s": round(measure.cpu, 1),
        "peak_mb": round(measure.peak_mb, 1),
        "marker_bytes": marker.stat().st_size,
        "result_line_bytes": len(line.encode()),
        "asset_entries": len(metadata.assets),
        "asset_keys": count_keys(metadata.assets),
        "hls_index_bytes": hls_index,
        "marker_other_bytes": marker.stat().st_size - hls_index,
        "result_line_other_bytes": len(line.encode()) - hls_index,
    }


def verify_with_a_hole(seconds: int, config: Path) -> dict[str, object]:
    """Delete one high section in the middle of the clip's outputs; verify must name it."""
    from worker.items import default_item_id
    from worker.layout import Rel, SlotLayout

    key = make_clip(seconds)
    layout = SlotLayout("data", default_item_id(key))
    frames = json.loads((BUCKET / layout.metadata_key).read_text())["payload"]["visible_frames"]
    hole = layout.key(Rel.section("high", frames // 2, "png"))
    (BUCKET / hole).unlink()
    measure, out = run_cli(["verify", "bench_ro", key], config)
    result = json.loads(out.strip().splitlines()[-1])
    named = [p["key"] for p in result["problems"]]
    row = {
        "verify_seconds": seconds,
        "deleted": hole,
        "status": result["status"],
        "problems": named,
        "verify_wall_s": round(measure.wall, 1),
        "verify_peak_mb": round(measure.peak_mb, 1),
        "result_line_bytes": len(out.strip().splitlines()[-1].encode()),
    }
    print(json.dumps(row), flush=True)
    if named != [hole]:
        raise SystemExit(f"verify should name exactly {hole}, named {named[:5]}")
    return row


def _number(row: dict[str, object], field: str) -> float:
    value = row[field]
    assert isinstance(value, int | float), field
    return float(value)


def _difference(short: dict[str, object], long: dict[str, object], field: str) -> int:
    return round(_number(long, field) - _number(short, field))


def long_run(lengths: list[int]) -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    config = write_config()
    for seconds in lengths:
        make_clip(seconds)
    print(f"clips made: {lengths} s at 640x360 30 fps", flush=True)
    rows = [process(seconds, config) for seconds in lengths]
    check = verify_with_a_hole(max(lengths), config)
    short, long = rows[0], rows[-1]
    summary = {
        "rows": rows,
        "verify": check,
        "peak_growth": round(_number(long, "peak_mb") / _number(short, "peak_mb") - 1, 3),
        # The registration payload carries each HLS index inline (about 80 bytes per segment
        # per rendition); the rest of the marker and of the result line should not grow.
        "marker_other_growth_bytes": _difference(short, long, "marker_other_bytes"),
        "result_line_other_growth_bytes": _difference(short, long, "result_line_other_bytes"),
    }
    (WORK / "results.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0
