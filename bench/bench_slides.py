"""Slide bench (SPEC section 10): thumbnail time grows with the thumbnail, not with the slide.

Writes two MIRAX slides of the same picture (textured tissue, three marks, an unscanned band on
the right), ~4k and ~64k pixels wide, with the fixture writer. Camera images repeat, and the
writer stores identical images once, so the 64k slide (2.1 gigapixels, ~44k index records) is
written in seconds and takes a few MB.

Each measurement runs in a fresh process so that OpenSlide's tile cache and the peak memory
(ru_maxrss) belong to that measurement alone:
- open + thumbnail (356x200) for both sizes, median of 3 fresh processes;
- Deep Zoom tiles per second: the whole pyramid of the 4k slide into a sink that keeps nothing
  (decode + composite + JPEG encode), the same through a `StorageSink` into a local bucket, and
  the first 1,500 full-resolution tiles of the 64k slide.

    .venv/bin/python bench/bench_slides.py [--work bench/.work/slides]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from fixtures.slides import MiraxLayout, encode, write_mirax

IMAGE = 256
SIZES = {"4k": (16, 8), "64k": (256, 128)}
"""Slide name -> level-0 camera images across and down (of IMAGE px each)."""
TISSUE = (235, 215, 225)
MARKS = (  # (x0, y0, x1, y1) as fractions of the slide, colour
    ((0.10, 0.15, 0.30, 0.55), (220, 30, 30)),
    ((0.40, 0.20, 0.55, 0.50), (30, 160, 60)),
    ((0.25, 0.60, 0.45, 0.90), (30, 60, 200)),
)
SCANNED_UP_TO = 0.85
"""Camera images right of this fraction of the width are unscanned (absent)."""
DEEP_TILES_64K = 1500


def layout_for(images_x: int, images_y: int) -> MiraxLayout:
    levels = max(images_x, images_y).bit_length()
    return MiraxLayout(
        images_x=images_x,
        images_y=images_y,
        image_size=IMAGE,
        levels=levels,
        formats=("JPEG",) * levels,
        data_files=2,
        slide_id=f"bench-{images_x}x{images_y}",
    )


def colour_at(fx: float, fy: float) -> tuple[int, int, int]:
    for (x0, y0, x1, y1), rgb in MARKS:
        if x0 <= fx < x1 and y0 <= fy < y1:
            return rgb
    return TISSUE


class TextureTiles:
    """Each image is a solid colour from the picture plus deterministic noise, one of a few
    variants, so JPEG decoding and encoding cost what textured tissue costs."""

    def __init__(self, layout: MiraxLayout) -> None:
        self.layout = layout
        self.cache: dict[tuple[tuple[int, int, int], int], bytes] = {}
        rng = np.random.default_rng(7)
        self.noise = [rng.normal(0, 12, (IMAGE, IMAGE, 3)) for _ in range(4)]

    def __call__(self, level: int, gx: int, gy: int) -> bytes | None:
        if gx / self.layout.images_x >= SCANNED_UP_TO:
            return None
        step = 1 << level
        rgb = colour_at(
            (gx + step / 2) / self.layout.images_x, (gy + step / 2) / self.layout.images_y
        )
        variant = (gx // step + gy // step) % len(self.noise)
        key = (rgb, variant)
        if key not in self.cache:
            pixels = np.clip(np.array(rgb, float) + self.noise[variant], 0, 255).astype(np.uint8)
            self.cache[key] = encode(pixels, "JPEG", quality=85)
        return self.cache[key]


def write_slides(work: Path) -> dict[str, Path]:
    shutil.rmtree(work, ignore_errors=True)
    paths = {}
    for name, (across, down) in SIZES.items():
        layout = layout_for(across, down)
        started = time.perf_counter()
        paths[name] = write_mirax(work / name / "bench.mrxs", layout, TextureTiles(layout))
        size = sum(p.stat().st_size for p in paths[name].with_suffix("").iterdir())
        print(
            f"wrote {name}: {layout.width}x{layout.height}, {layout.levels} levels,"
            f" {size / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
    return paths


# --- measurements, each in a fresh process -----------------------------------------------------


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class NullSink:
    """Keeps nothing: measures producing tiles, not storing them."""

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0

    def put_bytes(self, rel: str, data: bytes, content_type: str, content_encoding=None) -> None:  # type: ignore[no-untyped-def]
        self.count += 1
        self.bytes += len(data)


def measure_thumbnail(path: Path) -> dict[str, float]:
    from worker.media.slide import _jpeg, background_rgb, open_slide, thumbnail

    started = time.perf_counter()
    with open_slide(path) as slide:
        opened = time.perf_counter()
        level = slide.get_best_level_for_downsample(slide.dimensions[0] / 356)
        _jpeg(thumbnail(slide, background_rgb(slide)))
        done = time.perf_counter()
        read = slide.level_dimensions[level]
    return {
        "open_s": opened - started,
        "thumb_s": done - opened,
        "level": level,
        "read_px": read[0] * read[1],
        "peak_mb": _peak_mb(),
    }


def measure_pyramid(path: Path, store_in: str | None) -> dict[str, float]:
    from worker.layout import SlotLayout
    from worker.media.deepzoom import deep_zoom, write_pyramid
    from worker.media.slide import open_slide
    from worker.sink import StorageSink
    from worker.storage.local import LocalStorage

    with open_slide(path) as slide:
        generator = deep_zoom(slide)
        started = time.perf_counter()
        if store_in is None:
            tiles = write_pyramid(generator, NullSink(), lambda *_: None)
        else:
            storage = LocalStorage(Path(store_in))
            with StorageSink(storage, SlotLayout("data", "bench")) as sink:
                tiles = write_pyramid(generator, sink, lambda *_: None)
        elapsed = time.perf_counter() - started
    return {"tiles": tiles, "seconds": elapsed, "peak_mb": _peak_mb()}


def measure_deep_tiles(path: Path, count: int) -> dict[str, float]:
    from worker.media.deepzoom import _encode, deep_zoom
    from worker.media.slide import open_slide

    with open_slide(path) as slide:
        generator = deep_zoom(slide)
        top = generator.level_count - 1
        cols, _ = generator.level_tiles[top]
        started = time.perf_counter()
        for i in range(count):
            _encode(generator, top, i % cols, i // cols, None)
        elapsed = time.perf_counter() - started
    return {"tiles": count, "seconds": elapsed, "peak_mb": _peak_mb()}


def in_fresh_process(function, *args):  # type: ignore[no-untyped-def]
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("bench/.work/slides"))
    args = parser.parse_args()
    slides = write_slides(args.work)
    print("| slide | size | open (s) | thumbnail (s) | level read | pixels read | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    thumbs = {}
    for name, path in slides.items():
        runs = [in_fresh_process(measure_thumbnail, path) for _ in range(3)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        thumbs[name] = med
        across, down = SIZES[name]
        print(
            f"| {name} | {across * IMAGE}x{down * IMAGE} | {med['open_s']:.3f} |"
            f" {med['thumb_s']:.3f} | {int(med['level'])} | {int(med['read_px']):,} |"
            f" {med['peak_mb']:.0f} |"
        )
    ratio = thumbs["64k"]["thumb_s"] / thumbs["4k"]["thumb_s"]
    print(f"\nthumbnail time 64k / 4k: {ratio:.2f}x for a slide 256x larger in pixels\n")
    print("| Deep Zoom tiles | tiles | seconds | tiles/s | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- |")
    bucket = args.work / "bucket"
    rows = {
        "4k, whole pyramid, null sink": (measure_pyramid, slides["4k"], None),
        "4k, whole pyramid, StorageSink -> local bucket": (
            measure_pyramid,
            slides["4k"],
            str(bucket),
        ),
        f"64k, first {DEEP_TILES_64K} full-resolution tiles": (
            measure_deep_tiles,
            slides["64k"],
            DEEP_TILES_64K,
        ),
    }
    for label, (function, *call) in rows.items():
        r = in_fresh_process(function, *call)
        print(
            f"| {label} | {int(r['tiles'])} | {r['seconds']:.2f} |"
            f" {r['tiles'] / r['seconds']:.0f} | {r['peak_mb']:.0f} |"
        )
    shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
