"""The output layout of SPEC section 4: the one place that knows where every rendition lives.

Processors name their outputs with the slot-relative helpers of `Rel`; the pipeline turns those
into storage keys with `SlotLayout`. No other module builds a storage key.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Literal

from worker.errors import InvalidItem
from worker.identifiers import check_name

Quality = Literal["high", "low"]

METADATA = "metadata.json"
REGISTRATION = "registration.jsonl"
NUMBERED = "%09d"
"""How sections and HLS segments are numbered (printf style, as the compact asset form writes)."""
TILE_NAME = "%d_%d.jpeg"
"""A Deep Zoom tile in its level's folder, by column and row."""


class Rel:
    """Names relative to a slot folder `<prefix>/<item_id>/files/<slot>/`."""

    THUMBNAIL = "thumbnail.jpg"
    METADATA = METADATA
    MANIFEST = "frames_manifest.txt"
    AUDIO_PEAKS = "audio_peaks.gz"
    DZI = "tiles/slide.dzi"
    TILES_DIR = "tiles/slide_files/"

    @staticmethod
    def display(ext: str) -> str:
        return f"display.{ext}"

    @staticmethod
    def sections_dir(quality: Quality) -> str:
        return f"sections/{quality}/"

    @staticmethod
    def section(quality: Quality, index: int, ext: str) -> str:
        return Rel.sections_dir(quality) + section_name(index, ext)

    @staticmethod
    def segments_dir(quality: Quality) -> str:
        return f"segments/{quality}/"

    @staticmethod
    def segment_name(index: int) -> str:
        """The file name of an HLS segment, as written in its index."""
        return NUMBERED % index + ".ts"

    @staticmethod
    def segment(quality: Quality, index: int) -> str:
        return Rel.segments_dir(quality) + Rel.segment_name(index)

    @staticmethod
    def hls_index(quality: Quality) -> str:
        return f"segments/{quality}/index.m3u8"

    @staticmethod
    def tile_level_dir(level: int) -> str:
        return f"{Rel.TILES_DIR}{level}/"

    @staticmethod
    def tile(level: int, col: int, row: int) -> str:
        return Rel.tile_level_dir(level) + TILE_NAME % (col, row)

    @staticmethod
    def associated(name: str) -> str:
        return f"associated/{name}.jpg"


def normalize_prefix(prefix: str | None, default: str = "data") -> str:
    """`/data`, `data/` and `data` are the same prefix; blank means the default."""
    cleaned = (prefix or "").strip().strip("/")
    return cleaned or default


@dataclass(frozen=True)
class SlotLayout:
    """Where one slot of one item lives under an integration's prefix."""

    prefix: str
    item_id: str
    slot: str = "0"

    def __post_init__(self) -> None:
        # The last line of defence: no key outside `<prefix>/<item_id>/files/<slot>/` is built.
        check_name("item_id", self.item_id)
        check_name("slot", self.slot)

    @property
    def item_root(self) -> str:
        return f"{self.prefix}/{self.item_id}/"

    @property
    def root(self) -> str:
        return f"{self.item_root}files/{self.slot}/"

    def key(self, rel: str) -> str:
        return self.root + rel

    @property
    def metadata_key(self) -> str:
        return self.key(METADATA)

    @classmethod
    def containing(cls, key: str) -> SlotLayout | None:
        """The slot a key lies in (`<prefix>/<item_id>/files/<slot>/...`), None if it is in none:
        verification finds a payload's slot folder from its keys this way."""
        match = _SLOT_KEY.match(key)
        if match is None:
            return None
        try:
            return cls(match["prefix"], match["item_id"], match["slot"])
        except InvalidItem:
            return None


_SLOT_KEY = re.compile(r"^(?P<prefix>.+)/(?P<item_id>[^/]+)/files/(?P<slot>[^/]+)/")


def section_pattern(ext: str) -> str:
    """The printf pattern of section file names with this extension."""
    return f"{NUMBERED}.{ext.lstrip('.')}"


def section_name(index: int, ext: str) -> str:
    return section_pattern(ext) % index


def section_key(sections_prefix: str, index: int, ext: str) -> str:
    """A section's key from a payload's `storage_*sections_key_prefix` and extension, named as
    `Rel.section` names it."""
    return f"{sections_prefix.rstrip('/')}/{section_name(index, ext)}"


@dataclass(frozen=True)
class SeriesName:
    """A slot-relative name that belongs to a numbered series: `folder + pattern % index` (or
    `% (col, row)` for a tile grid, where `row` is set)."""

    folder: str
    pattern: str
    index: int
    row: int | None = None


_NUMBERED_FILE = re.compile(r"^((?:.*/)?(?:sections|segments)/(?:high|low)/)(\d{9})\.(png|jpg|ts)$")
_TILE_FILE = re.compile(r"^((?:.*/)?" + re.escape(Rel.TILES_DIR) + r"\d+/)(\d+)_(\d+)\.jpeg$")


def series_of(rel: str) -> SeriesName | None:
    """The series a name is part of (sections, segments, tiles of one level), None for a single
    file: slot-relative names give a relative folder, full keys the full one. The patterns are
    the ones `Rel` names files with."""
    match = _NUMBERED_FILE.match(rel)
    if match is not None:
        return SeriesName(match[1], f"{NUMBERED}.{match[3]}", int(match[2]))
    match = _TILE_FILE.match(rel)
    if match is not None:
        return SeriesName(match[1], TILE_NAME, int(match[2]), int(match[3]))
    return None


def registration_key(prefix: str = "") -> str:
    """Where `preextract` writes `registration.jsonl`: beside the layout, under the prefix."""
    return f"{prefix.strip('/')}/{REGISTRATION}" if prefix.strip("/") else REGISTRATION


def source_name(key: str) -> str:
    return posixpath.basename(key)


def source_folder(key: str) -> str:
    """The folder of a source key as a registration `path` (`/` for the bucket root)."""
    return "/" + posixpath.dirname(key).strip("/")


def probe_key(prefix: str, token: str) -> str:
    """The throwaway object `mediaworker check` writes and deletes to prove write access."""
    return f"{prefix}/.mediaworker-check-{token}"
