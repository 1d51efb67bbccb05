"""Big slides stay cheap: the whole pipeline (`mediaworker process --json` in a child, local
integration) on a small pyramidal TIFF and on one of at least 50,000 Deep Zoom tiles, in one run:
peak memory, `metadata.json` and `--json` result line sizes.

    .venv/bin/python bench/bench_slides_long.py                 # 2048 px against 51,000 px
    .venv/bin/python bench/bench_slides_long.py --big 12000     # a quick look

The slides are generated cheaply: a flat background with a darker diagonal, zlib-compressed
tiles, reduced levels down to about 1,000 px (OpenSlide's generic tiled TIFF).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

import numpy as np
from bench_long import BUCKET, WORK, measure_item, write_config

TILE = 256
SMALLEST_LEVEL = 1024
"""Reduced levels go down to this size, as scanners' pyramids do (a thumbnail reads a small one)."""


def make_slide(side: int) -> str:
    """A `side` x `side*0.96` RGB pyramidal TIFF under the bench bucket; returns its key."""
    import tifffile

    key = f"slides/blank_{side}.tif"
    path = BUCKET / key
    if path.exists():
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = side, int(side * 0.96)
    with tifffile.TiffWriter(path, bigtiff=True) as tiff:
        level = 0
        while level == 0 or max(width >> level, height >> level) * 2 > SMALLEST_LEVEL:
            w, h = max(1, width >> level), max(1, height >> level)
            tiff.write(
                _tiles(w, h, level),
                shape=(h, w, 3),
                dtype=np.uint8,
                photometric="rgb",
                tile=(TILE, TILE),
                compression="zlib",
                subfiletype=1 if level else 0,
            )
            level += 1
    return key


def _tiles(width: int, height: int, level: int) -> Iterator[np.ndarray]:
    """Row-major tiles: background, with a darker tile on the diagonal so levels differ."""
    blank = np.full((TILE, TILE, 3), 236, np.uint8)
    mark = np.full((TILE, TILE, 3), (180, 60, 90), np.uint8)
    cols, rows = -(-width // TILE), -(-height // TILE)
    for row in range(rows):
        for col in range(cols):
            yield mark if row == col else blank


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=2048)
    parser.add_argument("--big", type=int, default=51_000)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    config = write_config()
    keys = [make_slide(args.small), make_slide(args.big)]
    print(f"slides made: {keys}", flush=True)
    rows = []
    for key in keys:
        rows.append(measure_item(key, config))
        print(json.dumps(rows[-1]), flush=True)
    small, big = rows
    summary = {
        "rows": rows,
        "peak_growth": round(float(big["peak_mb"]) / float(small["peak_mb"]) - 1, 3),  # type: ignore[arg-type]
    }
    (WORK / "slides.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
