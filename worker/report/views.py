"""What the report page needs of each result: its payload plus the URLs of its files.

Only URLs the page uses are made, and how many is bounded per item: the scrubber samples at most
`SCRUB_POSITIONS` sections, and a bucket's slide is signed tile by tile only up to the level
where the count passes `MAX_SIGNED_TILES` (deeper levels would make the page grow with the
slide; the viewer stops zooming there and says so).
"""

from __future__ import annotations

import math
from typing import Any

from worker.layout import section_key
from worker.media.deepzoom import TILE_SIZE
from worker.payloads import ItemResult, segment_keys
from worker.reasons import help_for
from worker.report.urls import RelativeUrls, Urls

SCRUB_POSITIONS = 120
MAX_SIGNED_TILES = 2000
LOW_SECTIONS_EXT = "jpg"


def item_view(result: ItemResult, urls: Urls) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": f"{result.item_id}/{result.slot}",
        "key": result.key,
        "type": result.type,
        "status": result.status.value,
        "reason": _reason(result),
        "message": result.message,
        "payload": result.payload,
        "problems": [p.model_dump() for p in result.problems],
    }
    payload = result.payload
    if not payload:
        return view
    view["thumb"] = urls.url(payload["storage_thumbnail_key"])
    if payload.get("type") == "video":
        view["video"] = _video(payload, urls)
    elif payload.get("slide"):
        view["slide"] = _slide(payload, urls)
    else:
        shown = payload.get("storage_display_key") or payload["storage_key"]
        view["image"] = {"src": urls.url(shown)}
    return view


def _reason(result: ItemResult) -> str | None:
    if result.reason is not None:
        return result.reason.value
    return result.status.value if result.status.value == "missing_assets" else None


def reason_help(code: str) -> dict[str, str]:
    found = help_for(code)
    return {"meaning": found.meaning, "fix": found.fix}


def _video(payload: dict[str, Any], urls: Urls) -> dict[str, Any]:
    frames = int(payload["visible_frames"])
    positions = sorted(
        {
            round(i * (frames - 1) / max(SCRUB_POSITIONS - 1, 1))
            for i in range(min(frames, SCRUB_POSITIONS))
        }
    )
    low_prefix = payload["storage_low_quality_sections_key_prefix"]
    high_prefix = payload["storage_sections_key_prefix"]
    high_ext = payload["storage_sections_key_extension"]
    peaks = payload.get("storage_audio_peaks_key")
    return {
        "hls": {
            quality: _playlist(payload["hls_segments"][f"{quality}_quality"]["index"], urls)
            for quality in ("high", "low")
        },
        "fps": payload["fps"],
        "sections": [
            {
                "frame": n,
                "low": urls.url(section_key(low_prefix, n, LOW_SECTIONS_EXT)),
                "high": urls.url(section_key(high_prefix, n, high_ext)),
            }
            for n in positions
        ],
        "peaks": urls.url(peaks) if peaks else None,
    }


def _playlist(index_text: str, urls: Urls) -> str:
    """The payload's HLS index with each segment key turned into a URL the page can fetch."""
    wanted = set(segment_keys(index_text))
    lines = [
        urls.url(line.strip()) if line.strip() in wanted else line
        for line in index_text.splitlines()
    ]
    return "\n".join(lines) + "\n"


def _slide(payload: dict[str, Any], urls: Urls) -> dict[str, Any]:
    view: dict[str, Any] = {"dzi": urls.url(payload["storage_dzi_key"])}
    if isinstance(urls, RelativeUrls):
        return view
    # A bucket: no relative tile paths, so each tile the viewer may ask for is signed.
    width, height = int(payload["width"]), int(payload["height"])
    tiles_prefix = payload["storage_dzi_key"].removesuffix(".dzi") + "_files/"
    tiles: dict[str, str] = {}
    levels = _levels(width, height)
    max_level = -1
    for level, (cols, rows) in enumerate(levels):
        if len(tiles) + cols * rows > MAX_SIGNED_TILES:
            break
        for col in range(cols):
            for row in range(rows):
                tiles[f"{level}/{col}_{row}"] = urls.url(f"{tiles_prefix}{level}/{col}_{row}.jpeg")
        max_level = level
    view.update(tiles=tiles, max_level=max_level, levels=len(levels), width=width, height=height)
    return view


def _levels(width: int, height: int) -> list[tuple[int, int]]:
    """Tile columns and rows of each Deep Zoom level, level 0 being 1x1 pixel."""
    count = math.ceil(math.log2(max(width, height))) + 1
    grid = []
    for level in range(count):
        scale = 2 ** (count - 1 - level)
        w, h = max(1, math.ceil(width / scale)), max(1, math.ceil(height / scale))
        grid.append((math.ceil(w / TILE_SIZE), math.ceil(h / TILE_SIZE)))
    return grid
