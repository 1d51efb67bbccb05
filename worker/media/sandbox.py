"""A slide's first decode, in a child process that may crash on its own.

Native decoders (OpenSlide, libtiff, libjpeg, GLib) abort the whole process on some hostile
inputs, and a crashed Celery pool child or `process` takes the batch down with it. Before the
worker opens a slide itself, a short-lived child process opens it, reads one tile of every level
and every associated image, under an address-space cap (`limits.max_item_memory_mb`) and a time
limit. A child that dies by a signal fails the item (`corrupt_media`: the decoder's own crash),
one that runs out of its memory fails it as `too_large`, one that runs too long as `timeout`;
otherwise the worker goes on and decodes the slide itself, its errors mapped as usual.

It costs a process start and the opening of the slide (a few tenths of a second), which only
slides pay: they take seconds to minutes anyway.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

PROBE_TIMEOUT_SECONDS = 300
EXIT_OUT_OF_MEMORY = 3
EXIT_NOT_READABLE = 4
_TILE = 256


def probe_slide(path: Path, memory_bytes: int, timeout: float) -> None:
    """Run the child on `path`; raise the item's error if it crashed, ran out of memory or time."""
    from worker.errors import CorruptMedia, ItemTimeout, TooLarge

    argv = [sys.executable, "-I", "-m", "worker.media.sandbox", str(path), str(memory_bytes)]
    limit = min(timeout, PROBE_TIMEOUT_SECONDS)
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=limit, check=False
        )
    except subprocess.TimeoutExpired:
        raise ItemTimeout(
            f"{path.name}: opening the slide took more than {limit:.0f} s; it is damaged or"
            " hostile, or raise limits.item_timeout_seconds"
        ) from None
    if done.returncode == EXIT_OUT_OF_MEMORY:
        raise TooLarge(
            f"{path.name}: decoding the slide needs more than limits.max_item_memory_mb"
            f" ({memory_bytes // 1024**2:,} MB); raise it if slides like this are expected"
        )
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise CorruptMedia(
            f"{path.name}: the slide decoder crashed on this file ({name}); it is damaged or"
            " not a slide OpenSlide can read. Upload it again from the scanner's export"
        )


def _child(path: str, memory_bytes: int) -> int:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        import openslide

        with openslide.OpenSlide(path) as slide:
            for level, (width, height) in enumerate(slide.level_dimensions):
                slide.read_region((0, 0), level, (min(width, _TILE), min(height, _TILE)))
            for image in slide.associated_images.values():
                image.close()
    except MemoryError:
        return EXIT_OUT_OF_MEMORY
    except Exception:
        return EXIT_NOT_READABLE  # a decoder's own error: the worker maps it when it opens
    return 0


if __name__ == "__main__":
    os.environ.pop("PYTHONSTARTUP", None)
    sys.exit(_child(sys.argv[1], int(sys.argv[2])))
