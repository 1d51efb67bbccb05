"""The README and docs/ link only inside the repository (every relative link resolves) or to
public documentation sites: a clone is its own documentation."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_DOCS = {
    "docs.aws.amazon.com",
    "learn.microsoft.com",
    "docs.celeryq.dev",
    "docs.wasabi.com",
    "openslide.org",
    "github.com",
    "www.rabbitmq.com",
    "redis.io",
    "prometheus.io",
    "ffmpeg.org",
    "www.npmjs.com",
}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)|<(https?://[^>]+)>")


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "docker/README.md"]


BARE_URL = re.compile(r"https?://[^\s)>\]]+")


def _links(path: Path) -> list[str]:
    # Code blocks and code spans hold commands, not links.
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    links = [next(g for g in match.groups() if g) for match in LINK.finditer(text)]
    # A bare URL becomes a link when rendered, too.
    return links + [u for u in BARE_URL.findall(LINK.sub("", text)) if u not in links]


def _anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", path.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_link_stays_in_the_repository_or_goes_to_public_docs() -> None:
    problems = []
    for doc in _documents():
        for link in _links(doc):
            url = urlparse(link)
            if url.scheme in ("http", "https"):
                if url.hostname not in PUBLIC_DOCS:
                    problems.append(f"{doc.name}: {link}: not a public documentation site")
                continue
            target = (doc.parent / url.path).resolve() if url.path else doc
            if not target.exists() or not target.is_relative_to(ROOT):
                problems.append(f"{doc.name}: {link}: no such file in the repository")
            elif url.fragment and target.suffix == ".md" and url.fragment not in _anchors(target):
                problems.append(f"{doc.name}: {link}: no such heading")
    assert problems == []


def test_the_documents_link_to_each_other() -> None:
    readme = set(_links(ROOT / "README.md"))
    for name in ("layout", "payloads", "reasons", "configuration", "commands", "report"):
        assert f"docs/{name}.md" in readme
