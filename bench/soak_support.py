"""The soak's moving parts: its media, the worker fleet it kills and restarts, memory samples."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from fixtures.images import marked
from fixtures.slides import generate_slides
from fixtures.videos import CLIPS, write_clip
from worker.items import Item

IMAGE_FORMATS = {"jpg": {"quality": 90}, "png": {}, "webp": {"quality": 80}, "bmp": {},
                 "tif": {}, "gif": {}}  # fmt: skip
IMAGE_SIZE = (400, 300)
"""Small pictures: the soak is about the queue, not about decoding large files."""


def media_files(dest: Path) -> dict[str, Path]:
    """Small sources: the fixtures' reference picture in six formats, one short clip, one
    tiled TIFF slide."""
    dest.mkdir(parents=True, exist_ok=True)
    found = {}
    for ext, options in IMAGE_FORMATS.items():
        path = dest / f"marked.{ext}"
        marked(IMAGE_SIZE).save(path, **options)
        found[f"image_{ext}"] = path
    found["video"] = write_clip(dest / "clip.mp4", CLIPS["h264_mp4"])
    found["slide"] = generate_slides(dest / "slides")["tiled_tiff"]
    return found


class Fleet:
    """`mediaworker worker --concurrency 1` processes, each in its own process group."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config = config
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.starts = 0

    def start(self, count: int) -> None:
        for _ in range(count):
            self.procs.append(self._spawn())

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        log = self.logs / f"worker-{self.starts:03d}.log"
        argv = [sys.executable, "-m", "worker", "worker", "--config", str(self.config),
                "--concurrency", "1"]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 90
        while " ready." not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"worker did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        return proc

    def kill_pool_process(self, rng: random.Random) -> bool:
        """SIGKILL the pool process of a random worker (what a crash or the OOM killer does)."""
        children = [c for p in self.procs for c in _children(p.pid)]
        if not children:
            return False
        with contextlib.suppress(psutil.NoSuchProcess):
            rng.choice(children).kill()
        return True

    def kill_whole_worker(self, rng: random.Random) -> bool:
        """SIGKILL a whole worker (main process and pool), then start another in its place."""
        if not self.procs:
            return False
        victim = self.procs.pop(rng.randrange(len(self.procs)))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        time.sleep(1.0)  # a supervisor's restart delay
        self.procs.append(self._spawn())
        return True

    def stop_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=120)
        self.procs = []

    def text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))

    def log_count(self, needle: str) -> int:
        return self.text().count(needle)

    def done_more_than_once(self, items: list[Item]) -> int:
        """Items finished twice: killed after their commit but before their acknowledgement."""
        text = self.text()
        counts = Counter(text.count(f"item {i.item_id} ({i.key}) done") for i in items)
        return sum(n for times, n in counts.items() if times > 1)


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []


class RssLog:
    """RSS samples per process: {pid: (role, [(seconds, bytes)])}."""

    def __init__(self) -> None:
        self.samples: dict[int, tuple[str, list[tuple[float, int]]]] = {}
        self.start = time.monotonic()

    def sample(self, fleet: Fleet) -> None:
        now = time.monotonic() - self.start
        for proc in fleet.procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                main = psutil.Process(proc.pid)
                self._add(main, "main", now)
                for child in main.children():
                    self._add(child, "pool", now)

    def _add(self, proc: psutil.Process, role: str, now: float) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            rss = proc.memory_info().rss
            if rss == 0:
                return  # killed, not yet reaped
            self.samples.setdefault(proc.pid, (role, []))[1].append((now, rss))


def summarize_rss(log: RssLog) -> dict[str, Any]:
    """For the longest-lived process of each role: MiB over the first and last tenth of its
    samples, and how long it lived; plus the peak of every process."""
    out: dict[str, Any] = {}
    for role in ("main", "pool"):
        lives = [s for r, s in log.samples.values() if r == role and len(s) >= 10]
        if not lives:
            continue
        longest = max(lives, key=lambda s: s[-1][0] - s[0][0])
        tenth = max(1, len(longest) // 10)
        first = sorted(b for _, b in longest[:tenth])[tenth // 2] / 2**20
        last = sorted(b for _, b in longest[-tenth:])[tenth // 2] / 2**20
        out[role] = {
            "longest_life_s": round(longest[-1][0] - longest[0][0]),
            "first_tenth_mib": round(first, 1),
            "last_tenth_mib": round(last, 1),
            "peak_mib_any": round(max(b for s in lives for _, b in s) / 2**20, 1),
            "processes": len([r for r, _ in log.samples.values() if r == role]),
        }
        out[role].update(_fleet_trend(log, role))
    return out


def _fleet_trend(log: RssLog, role: str) -> dict[str, float]:
    """Median MiB of every process of `role` sampled in the first and in the last tenth of the
    run: whether the fleet grows over the run, whichever processes were killed in between."""
    samples = [(t, b) for r, s in log.samples.values() if r == role for t, b in s]
    end = max(t for t, _ in samples)
    first = sorted(b for t, b in samples if t <= end / 10)
    last = sorted(b for t, b in samples if t >= end * 0.9)
    if not first or not last:
        return {}
    return {"run_first_tenth_mib": round(first[len(first) // 2] / 2**20, 1),
            "run_last_tenth_mib": round(last[len(last) // 2] / 2**20, 1)}  # fmt: skip
