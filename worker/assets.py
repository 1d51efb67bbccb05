"""The compact asset list of a commit marker and of a result: what an item's outputs are.

A single file is its key. A numbered series (the sections of one quality, the segments of one
HLS rendition, the Deep Zoom tiles of one level) is one `Series` entry, so the list's size does
not grow with the length of a video or the size of a slide:

    "data/<id>/files/0/thumbnail.jpg"
    {"prefix": "data/<id>/files/0/sections/high/", "pattern": "%09d.png", "first": 0, "count": 1800}
    {"prefix": "data/<id>/files/0/tiles/slide_files/12/", "pattern": "%d_%d.jpeg", "first": 0,
     "count": 35, "columns": 7}

`pattern` is printf style, applied to the index (`first` to `first + count - 1`); a tile level
adds `columns`: index i is the tile at column `i % columns`, row `i // columns`.

This module owns the form: `AssetRecorder` builds it as outputs are written (counters and
intervals, nothing kept per file), `iter_keys` expands it lazily, `AssetIndex` tells whether a
key is listed without expanding anything, `count_keys` counts.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from worker.layout import series_of


class Series(BaseModel):
    """`count` numbered files under `prefix`, named by `pattern`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str
    pattern: str
    first: int
    count: int
    columns: int | None = None
    """Tile grids only: the level's column count (index i: column i % columns, row i // columns)."""

    @model_serializer(mode="wrap")
    def _without_null_columns(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        data: dict[str, object] = handler(self)
        if data.get("columns") is None:
            data.pop("columns", None)
        return data

    def name(self, index: int) -> str:
        if self.columns:
            return self.pattern % (index % self.columns, index // self.columns)
        return self.pattern % index

    def key(self, index: int) -> str:
        return self.prefix + self.name(index)

    def keys(self) -> Iterator[str]:
        """Every key of the series, in index order, one at a time."""
        for index in range(self.first, self.first + self.count):
            yield self.key(index)

    def index_of(self, name: str) -> int | None:
        """The index a file name (relative to `prefix`) has in this series, None if not in it."""
        match = _pattern_regex(self.pattern).match(name)
        if match is None:
            return None
        numbers = [int(group) for group in match.groups()]
        if self.columns:
            if len(numbers) != 2 or numbers[0] >= self.columns:
                return None
            index = numbers[1] * self.columns + numbers[0]
        else:
            index = numbers[0]
        if not self.first <= index < self.first + self.count or self.name(index) != name:
            return None
        return index


Asset = str | Series
"""One entry of an asset list: a key, or a numbered series of keys."""


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(%0?\d*d)", pattern)
    body = "".join(r"(\d+)" if index % 2 else re.escape(part) for index, part in enumerate(parts))
    return re.compile(f"^{body}$")


def iter_keys(assets: Iterable[Asset]) -> Iterator[str]:
    """Every key an asset list names, expanded lazily (a 4-hour video's list stays small)."""
    for asset in assets:
        if isinstance(asset, Series):
            yield from asset.keys()
        else:
            yield asset


def count_keys(assets: Iterable[Asset]) -> int:
    return sum(asset.count if isinstance(asset, Series) else 1 for asset in assets)


class AssetIndex:
    """Membership in an asset list, answered from the compact form."""

    def __init__(self, assets: Iterable[Asset]) -> None:
        self._singles: set[str] = set()
        self._series: dict[str, list[Series]] = {}
        for asset in assets:
            if isinstance(asset, Series):
                self._series.setdefault(asset.prefix, []).append(asset)
            else:
                self._singles.add(asset)

    def __contains__(self, key: str) -> bool:
        if key in self._singles:
            return True
        folder, _, name = key.rpartition("/")
        series = self._series.get(folder + "/", [])
        return any(entry.index_of(name) is not None for entry in series)


class _Intervals:
    """Indices seen, as sorted disjoint [start, end) runs: one run when writes complete in
    order or nearly so (a bounded window out of order), whatever the count."""

    def __init__(self) -> None:
        self.runs: list[list[int]] = []

    def add(self, index: int) -> None:
        runs = self.runs
        at = bisect.bisect_right(runs, index, key=lambda run: run[0])
        if at and runs[at - 1][1] >= index:  # inside or right after the run before
            runs[at - 1][1] = max(runs[at - 1][1], index + 1)
            at -= 1
        else:
            runs.insert(at, [index, index + 1])
        if at + 1 < len(runs) and runs[at + 1][0] <= runs[at][1]:  # now touches the next one
            runs[at][1] = max(runs[at][1], runs.pop(at + 1)[1])


@dataclass
class _Grid:
    """The tiles of one level: how many, and how far they reach (a level is always whole)."""

    count: int = 0
    columns: int = 0
    rows: int = 0


class AssetRecorder:
    """Collects slot-relative names as they are written (from any thread) into the compact
    form; memory grows with the number of series, not of files."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._singles: set[str] = set()
        self._runs: dict[tuple[str, str], _Intervals] = {}
        self._grids: dict[tuple[str, str], _Grid] = {}

    def add(self, rel: str) -> None:
        name = series_of(rel)
        with self._lock:
            if name is None:
                self._singles.add(rel)
            elif name.row is None:
                self._runs.setdefault((name.folder, name.pattern), _Intervals()).add(name.index)
            else:
                grid = self._grids.setdefault((name.folder, name.pattern), _Grid())
                grid.count += 1
                grid.columns = max(grid.columns, name.index + 1)
                grid.rows = max(grid.rows, name.row + 1)

    def assets(self, key: Callable[[str], str] = str) -> list[Asset]:
        """The compact list, each name turned into a storage key by `key`; singles first, in
        key order, then series by prefix."""
        with self._lock:
            series = [
                Series(prefix=key(folder), pattern=pattern, first=start, count=end - start)
                for (folder, pattern), runs in self._runs.items()
                for start, end in runs.runs
            ]
            series += [self._grid(key, folder, pattern) for (folder, pattern) in self._grids]
            singles: list[Asset] = sorted(key(rel) for rel in self._singles)
        return singles + sorted(series, key=lambda s: (s.prefix, s.pattern, s.first))

    def _grid(self, key: Callable[[str], str], folder: str, pattern: str) -> Series:
        grid = self._grids[(folder, pattern)]
        if grid.count != grid.columns * grid.rows:
            # A level is written whole or the item fails; anything else is a bug of ours.
            raise RuntimeError(
                f"{folder}: {grid.count} tiles recorded for a {grid.columns}x{grid.rows} grid"
            )
        return Series(
            prefix=key(folder), pattern=pattern, first=0, count=grid.count, columns=grid.columns
        )


def compact(keys: Iterable[str]) -> list[Asset]:
    """Keys (of any slots) in the compact form: numbered runs become series."""
    recorder = AssetRecorder()
    for key in keys:
        recorder.add(key)
    return recorder.assets()
