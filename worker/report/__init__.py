"""`mediaworker report`: one self-contained HTML page about a run.

The page shows counts by type, status and reason, a contact sheet of every thumbnail, failures
grouped by reason with what to do (from `worker.reasons`), and per item a viewer: HLS playback at
both qualities, a scrubber over the sections, the audio waveform, Deep Zoom for slides, and the
payload. Its scripts (hls.js, OpenSeadragon, the page's own) are inlined, so it fetches nothing
from the internet; it reads the items' files beside it (a local folder) or through signed URLs
(a bucket). See `urls` for which, `views` for what each item needs, `page` for the HTML.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from worker.config import MAX_SIGNED_URL_SECONDS, Integration, Settings
from worker.errors import ConfigError
from worker.payloads import ItemResult
from worker.reasons import help_for
from worker.report.page import render
from worker.report.urls import RelativeUrls, Urls, serve_hint, urls_for
from worker.report.views import ItemView, item_view

__all__ = ["RunInfo", "load_results", "write_report"]


@dataclass(frozen=True)
class RunInfo:
    """When the run happened; `started` is unknown when the page is made from a results file."""

    command: str
    finished: datetime
    started: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        seconds = (self.finished - self.started).total_seconds() if self.started else None
        return {
            "command": self.command,
            "started": self.started.isoformat(timespec="seconds") if self.started else None,
            "finished": self.finished.isoformat(timespec="seconds"),
            "seconds": seconds,
        }


def load_results(path: Path) -> list[ItemResult]:
    """The result lines of a `--json` run; other lines (an `enqueue` without `--wait`) are
    refused with their line number, since a page without results would say nothing."""
    results = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            results.append(ItemResult.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError(f"{path}:{number}: not a result line of --json ({first})") from None
    return results


def write_report(
    results: list[ItemResult],
    settings: Settings,
    out: Path,
    run: RunInfo,
    files: Integration | None = None,
    seconds: int = MAX_SIGNED_URL_SECONDS,
) -> Path:
    """Write the page to `out`. Each result's files are read from its integration, or from
    `files` when given (a `preextract` folder, say)."""
    url_makers: dict[str, Urls] = {}
    views = []
    for result in results:
        name = files.name if files is not None else result.integration
        if name not in url_makers:
            integration = files if files is not None else settings.integration(name)
            url_makers[name] = urls_for(integration, settings, out, seconds)
        views.append(item_view(result, url_makers[name]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(_page_data(views, run, out, list(url_makers.values()))), "utf-8")
    return out


def _page_data(views: list[ItemView], run: RunInfo, out: Path, urls: list[Urls]) -> dict[str, Any]:
    roots = [u.root for u in urls if isinstance(u, RelativeUrls)]
    until = [u.signed_until for u in urls if u.signed_until is not None]
    reasons = {v.reason for v in views if v.reason}
    return {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": run.as_json(),
        "signed_until": min(until).isoformat(timespec="seconds") if until else None,
        "serve_hint": serve_hint(out, roots) if roots else None,
        "counts": {
            field: dict(
                Counter(getattr(v, field) for v in views if getattr(v, field)).most_common()
            )
            for field in ("type", "status", "reason")
        },
        "reasons": {code: asdict(help_for(code)) for code in sorted(reasons)},
        "items": [v.model_dump(mode="json") for v in views],
    }
