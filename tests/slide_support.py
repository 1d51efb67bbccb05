"""Helpers shared by the slide end-to-end tests (MIRAX and DICOM): the Deep Zoom tile count a
slide must give, and a moto user that may read sources and write renditions but not list."""

from __future__ import annotations

import math

from servers import moto_user

from worker.config import Integration


def deep_zoom_tiles(width: int, height: int, tile: int = 254) -> int:
    """Tiles of every Deep Zoom level: halve (rounding up) down to 1x1, ceil(size / tile)."""
    total = 0
    while True:
        total += math.ceil(width / tile) * math.ceil(height / tile)
        if width == height == 1:
            return total
        width, height = max(1, math.ceil(width / 2)), max(1, math.ceil(height / 2))


def reader_without_listing(
    endpoint: str, integration: Integration, sources: str
) -> tuple[str, str]:
    """Everything a slide needs but the listing: reads under `sources`, writes under the prefix."""
    bucket = f"arn:aws:s3:::{integration.bucket}"
    return moto_user(
        endpoint,
        [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{bucket}/{sources}/*"},
            {"Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject"],
             "Resource": f"{bucket}/{integration.prefix}/*"},
        ],
    )  # fmt: skip
