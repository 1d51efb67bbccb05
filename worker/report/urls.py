"""How the report page reaches an item's files: relative paths or signed URLs.

A local folder (a `preextract` output, a local integration) is read by the page through paths
relative to the page itself, so the folder and the page can move together. A bucket is read
through signed URLs, each valid for at most 4 hours; the page says until when.
"""

from __future__ import annotations

import os
import posixpath
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from worker.config import MAX_SIGNED_URL_SECONDS, Integration, Settings
from worker.storage import open_storage
from worker.storage.base import ReadableStorage
from worker.storage.registry import backend_class


class Urls(Protocol):
    signed_until: datetime | None
    """When the URLs stop working; None for relative paths."""

    def url(self, key: str) -> str: ...


class RelativeUrls:
    """Keys of a local folder, as paths relative to the page's folder."""

    signed_until: datetime | None = None

    def __init__(self, root: Path, page_dir: Path) -> None:
        self.root = root.resolve()
        self._base = posixpath.normpath(Path(os.path.relpath(root, page_dir)).as_posix())

    def url(self, key: str) -> str:
        path = key if self._base == "." else f"{self._base}/{key}"
        return quote(path)


class SignedUrls:
    """Keys of a bucket, signed once each for the same lifetime."""

    def __init__(self, storage: ReadableStorage, seconds: int = MAX_SIGNED_URL_SECONDS) -> None:
        self._storage = storage
        self._seconds = max(1, min(seconds, MAX_SIGNED_URL_SECONDS))
        # Taken before signing, so the page never claims more life than a URL has.
        self.signed_until: datetime | None = datetime.now(UTC) + timedelta(seconds=self._seconds)

    def url(self, key: str) -> str:
        return self._storage.sign(key, self._seconds)


def urls_for(integration: Integration, settings: Settings, page: Path, seconds: int) -> Urls:
    if backend_class(integration.provider).local_folder and integration.root is not None:
        return RelativeUrls(integration.root, page.resolve().parent)
    return SignedUrls(open_storage(integration, settings), seconds)


def serve_hint(page: Path, roots: list[Path]) -> str:
    """How to serve a page and its local folders over HTTP, which scripts need to read files."""
    page = page.resolve()
    top = Path(os.path.commonpath([page.parent, *roots]))
    where = page.relative_to(top).as_posix()
    return (
        f"python3 -m http.server --directory '{top}' 8000, then open http://127.0.0.1:8000/{where}"
    )
