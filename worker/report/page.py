"""The HTML of the report: a template with the page's style, data and scripts inlined.

hls.js and OpenSeadragon come from npm packages pinned in `package.json` / `package-lock.json`
at the repository's root; `make install` (through `scripts/bundle-report-assets`) copies their
built files into `static/` here, where this module reads them. Nothing is fetched at run time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.errors import ConfigError

HERE = Path(__file__).parent
STATIC = HERE / "static"
VENDOR_SCRIPTS = ("hls.light.min.js", "openseadragon.min.js")


def render(data: dict[str, Any]) -> str:
    html = (HERE / "template.html").read_text(encoding="utf-8")
    parts = {
        "/*STYLE*/": (HERE / "report.css").read_text(encoding="utf-8"),
        "/*DATA*/": _json_for_script(data),
        "/*VENDOR*/": "\n".join(_script_text(vendor_script(n)) for n in VENDOR_SCRIPTS),
        "/*APP*/": _script_text(HERE / "report.js"),
    }
    for marker, text in parts.items():
        html = html.replace(marker, text, 1)
    return html


def vendor_script(name: str) -> Path:
    path = STATIC / name
    if not path.is_file():
        raise ConfigError(
            f"the report's script {name} is not installed: run `make install` (it bundles"
            " hls.js and OpenSeadragon from npm with scripts/bundle-report-assets)"
        )
    return path


def _script_text(path: Path) -> str:
    # Inside <script>, only "</script" can end it early; "<\/" means the same to JavaScript.
    return path.read_text(encoding="utf-8").replace("</script", "<\\/script")


def _json_for_script(data: dict[str, Any]) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
