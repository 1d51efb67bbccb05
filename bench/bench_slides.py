"""Slide bench (SPEC section 10): thumbnail time against slide size; Deep Zoom against libvips.

Writes MIRAX slides of the same picture (textured tissue, three marks, an unscanned band on the
right), ~4k, ~16k and ~64k pixels wide, with the fixture writer. Camera images repeat, and the
writer stores identical images once, so the 64k slide (2.1 gigapixels, ~44k index records) is
written in seconds and takes a few MB. Also writes, with libvips, a 16384^2 pyramidal JPEG TIFF
(left half textured, right half white) and the 16k MIRAX slide's pixels as such a TIFF.

Each measurement runs in a fresh process so that OpenSlide's tile cache and the peak memory
(ru_maxrss) belong to that measurement alone:
- open + thumbnail (356x200) for the 4k and 64k slides, median of 3 fresh processes;
- the whole Deep Zoom pyramid (254 px tiles, 1 px overlap, JPEG at our quality) written to local
  disk: ours (open, read, `write_pyramid` through a `StorageSink` into a local bucket) against
  libvips' `dzsave` (layout dz, same tile size, overlap, suffix and quality) on the 16384^2 TIFF,
  and on the 16k MIRAX slide. libvips as installed (pyvips-binary) cannot read MIRAX, so it
  reads the same pixels from the TIFF copy: the anchor is libvips at its fastest, not through
  OpenSlide. The two alternate, `--rounds` times.

    .venv/bin/python bench/bench_slides.py [--work bench/.work/slides] [--rounds 2]
        [--deep-zoom-only]

Then Deep Zoom's peak memory on JPEG TIFFs of one pixel count and growing width (16k to 64k px).
Ours decodes the TIFF's JPEG tiles directly (`worker.media.jpegtiff`) and reads the MIRAX slide
through OpenSlide; the last lines time each of those level-0 reads alone.
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
SIZES = {"4k": (16, 8), "16k": (64, 32), "64k": (256, 128)}
"""Slide name -> level-0 camera images across and down (of IMAGE px each)."""
TISSUE = (235, 215, 225)
MARKS = (  # (x0, y0, x1, y1) as fractions of the slide, colour
    ((0.10, 0.15, 0.30, 0.55), (220, 30, 30)),
    ((0.40, 0.20, 0.55, 0.50), (30, 160, 60)),
    ((0.25, 0.60, 0.45, 0.90), (30, 60, 200)),
)
SCANNED_UP_TO = 0.85
"""Camera images right of this fraction of the width are unscanned (absent)."""
TIFF_SIDE = 16384


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
    """This process's peak resident memory. Not ru_maxrss: Linux carries that over from the
    parent through fork and exec, and the parent has written the slides."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


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


# --- Deep Zoom against libvips' dzsave --------------------------------------------------------


def write_texture_tiff(path: Path, width: int = TIFF_SIDE, height: int = TIFF_SIDE) -> Path:
    """A pyramidal JPEG TIFF (256 px tiles, Q85): the left half textured tissue (noise over a
    slowly varying colour), the right half white background. Written by libvips, streaming."""
    import pyvips

    half = width // 2
    noise = [pyvips.Image.gaussnoise(half, height, sigma=14, seed=band) for band in range(3)]
    shade = pyvips.Image.perlin(half, height, cell_size=128, seed=7) * 60
    tissue = (noise[0].bandjoin(noise[1:]) + shade + [200, 150, 180]).cast("uchar")
    glass = (pyvips.Image.black(width - half, height, bands=3) + 255).cast("uchar")
    _save_pyramid(tissue.join(glass, "horizontal"), path)
    return path


def write_mirax_as_tiff(path: Path, layout: MiraxLayout) -> Path:
    """The level-0 pixels of the bench MIRAX slide as a pyramidal TIFF (unscanned images in the
    slide's background colour, as OpenSlide shows them): what libvips can read of that slide."""
    import pyvips

    tiles = TextureTiles(layout)
    images = []
    for gy in range(layout.images_y):
        for gx in range(layout.images_x):
            data = tiles(0, gx, gy)
            if data is None:
                images.append(pyvips.Image.black(IMAGE, IMAGE, bands=3) + list(layout.background))
            else:
                images.append(pyvips.Image.new_from_buffer(data, ""))
    joined = pyvips.Image.arrayjoin([i.cast("uchar") for i in images], across=layout.images_x)
    _save_pyramid(joined, path)
    return path


def _save_pyramid(image, path: Path) -> None:  # type: ignore[no-untyped-def]
    image.tiffsave(
        str(path), tile=True, tile_width=256, tile_height=256, pyramid=True,
        compression="jpeg", Q=85,
    )  # fmt: skip


def _usage(started: float, out: Path) -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall": time.perf_counter() - started,
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_mb": _peak_mb(),
        "tiles": sum(1 for _ in out.rglob("*.jpeg")),
    }


def deep_zoom_ours(path: Path, out: Path) -> dict[str, float]:
    """Open the slide, write the .dzi and every tile through a StorageSink into a local bucket."""
    from worker.layout import SlotLayout
    from worker.media.deepzoom import deep_zoom, write_pyramid
    from worker.media.slide import background_rgb, open_slide
    from worker.sink import StorageSink
    from worker.storage.local import LocalStorage

    started = time.perf_counter()
    with (
        open_slide(path) as slide,
        StorageSink(LocalStorage(out), SlotLayout("data", "bench")) as sink,
    ):
        pyramid = deep_zoom(slide)
        write_pyramid(slide, pyramid, sink, lambda *_: None, background_rgb(slide), path=path)
    return _usage(started, out)


def deep_zoom_vips(path: Path, out: Path) -> dict[str, float]:
    """libvips' dzsave with the same tile geometry, format and quality."""
    import pyvips

    from worker.media.deepzoom import OVERLAP, TILE_JPEG_QUALITY, TILE_SIZE

    started = time.perf_counter()
    image = pyvips.Image.new_from_file(str(path), access="sequential")
    image.dzsave(
        str(out / "slide"),
        tile_size=TILE_SIZE,
        overlap=OVERLAP,
        suffix=f".jpeg[Q={TILE_JPEG_QUALITY}]",
        layout="dz",
    )
    return _usage(started, out)


def read_level0_only(path: Path) -> dict[str, float]:
    """OpenSlide read_region of the TIFF's full-resolution level alone (one thread):
    in bands of 256 rows: the floor of any pyramid read through OpenSlide."""
    import openslide

    started = time.perf_counter()
    with openslide.OpenSlide(path) as slide:
        width, height = slide.dimensions
        for y in range(0, height, 256):
            slide.read_region((0, y), 0, (width, min(256, height - y)))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall": time.perf_counter() - started,
        "cpu": usage.ru_utime + usage.ru_stime,
        "pixels": width * height,
    }


def read_level0_direct(path: Path) -> dict[str, float]:
    """Our direct JPEG tile reader on the TIFF's full-resolution level alone (one thread):
    in bands of 256 rows, as the pyramid reads it from a plain JPEG TIFF."""
    import openslide

    from worker.media.jpegtiff import open_level0

    started = time.perf_counter()
    with openslide.OpenSlide(path) as slide:
        reader = open_level0(path, slide)
        assert reader is not None, "not read directly"
        width, height = slide.dimensions
        for y in range(0, height, 256):
            reader.read(0, y, (width, min(256, height - y)), (255, 255, 255))
        reader.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall": time.perf_counter() - started,
        "cpu": usage.ru_utime + usage.ru_stime,
        "pixels": width * height,
    }


def compare_deep_zoom(work: Path, inputs: dict[str, tuple[Path, Path]], rounds: int) -> None:
    """Each input: (what we read, what libvips reads), measured alternately, each in a fresh
    process writing into an empty folder."""
    print("| input | round | tool | tiles | wall (s) | CPU (s) | tiles/s | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    ratios: dict[str, list[str]] = {}
    for name, (ours_reads, vips_reads) in inputs.items():
        for round_ in range(1, rounds + 1):
            runs = {}
            for tool, function, source in (
                ("mediaworker", deep_zoom_ours, ours_reads),
                ("libvips dzsave", deep_zoom_vips, vips_reads),
            ):
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                r = in_fresh_process(function, source, out)
                runs[tool] = r
                print(
                    f"| {name} | {round_} | {tool} | {int(r['tiles'])} | {r['wall']:.2f} |"
                    f" {r['cpu']:.2f} | {r['tiles'] / r['wall']:.0f} | {r['peak_mb']:.0f} |"
                )
            ours, vips = runs["mediaworker"], runs["libvips dzsave"]
            ratios.setdefault(name, []).append(
                f"wall {vips['wall'] / ours['wall']:.2f}x, CPU {vips['cpu'] / ours['cpu']:.2f}x,"
                f" tiles {'equal' if ours['tiles'] == vips['tiles'] else 'DIFFER'},"
                f" peak {ours['peak_mb']:.0f} MB ({'under' if ours['peak_mb'] < 300 else 'OVER'}"
                " 300 MB)"
            )
    print()
    for name, values in ratios.items():
        print(f"{name}: mediaworker speed / libvips speed, per round: " + "; ".join(values))


def in_fresh_process(function, *args):  # type: ignore[no-untyped-def]
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("bench/.work/slides"))
    parser.add_argument("--rounds", type=int, default=2, help="Deep Zoom comparisons to run")
    parser.add_argument(
        "--deep-zoom-only", action="store_true", help="skip the thumbnail against slide size"
    )
    args = parser.parse_args()
    slides = write_slides(args.work)
    slides["tiff"] = write_texture_tiff(args.work / "texture.tiff")
    slides["16k-tiff"] = write_mirax_as_tiff(args.work / "16k.tiff", layout_for(*SIZES["16k"]))
    if not args.deep_zoom_only:
        compare_thumbnails(slides)
    inputs = {
        f"{TIFF_SIDE}^2 JPEG TIFF": (slides["tiff"], slides["tiff"]),
        "16k MIRAX (libvips: its pixels as TIFF)": (slides["16k"], slides["16k-tiff"]),
    }
    compare_deep_zoom(args.work, inputs, args.rounds)
    compare_widths(args.work)
    print()
    for reader in (read_level0_only, read_level0_direct):
        read = in_fresh_process(reader, slides["tiff"])
        print(
            f"{reader.__doc__.splitlines()[0]} {read['cpu']:.2f} CPU-s,"
            f" {read['cpu'] / read['pixels'] * 1e9:.1f} ns per pixel"
        )
    shutil.rmtree(args.work, ignore_errors=True)
    return 0


WIDE = ((16384, 4096), (32768, 2048), (65536, 1024))
"""Slides of the same pixel count, ever wider: Deep Zoom's peak memory must not follow."""


def compare_widths(work: Path) -> None:
    print("\n| slide | tiles | wall (s) | CPU (s) | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- |")
    peaks = []
    for width, height in WIDE:
        path = write_texture_tiff(work / f"wide-{width}.tiff", width, height)
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        r = in_fresh_process(deep_zoom_ours, path, out)
        peaks.append(r["peak_mb"])
        print(
            f"| {width}x{height} JPEG TIFF | {int(r['tiles'])} | {r['wall']:.2f} |"
            f" {r['cpu']:.2f} | {r['peak_mb']:.0f} |"
        )
    ratio = peaks[-1] / peaks[0]
    print(f"\npeak memory, {WIDE[-1][0]} px wide / {WIDE[0][0]} px wide: {ratio:.2f}x")


def compare_thumbnails(slides: dict[str, Path]) -> None:
    print("| slide | size | open (s) | thumbnail (s) | level read | pixels read | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    thumbs = {}
    for name in ("4k", "64k"):
        path = slides[name]
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


if __name__ == "__main__":
    sys.exit(main())
