"""Whole-slide images: what OpenSlide reads, as a thumbnail, a Deep Zoom pyramid, associated
images and the slide's fields.

This module holds the kind and the single-file slide formats, typed by their extension alone
(their content says "TIFF" at best). A tiled TIFF is a slide too (`worker.kinds.image` tells it
by its first IFD). Multi-file formats have their own modules: `worker.kinds.mirax`,
`worker.kinds.dicom`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from worker.kinds import Format, MediaKind, ProcessContext, extensions, lazy

if TYPE_CHECKING:
    from worker.config import Limits
    from worker.media import MediaResult

NAME = "slide"


def check_tiff_claims(path: Path, limits: Limits) -> None:
    """A TIFF-based slide's header claims against the limits, before OpenSlide allocates."""
    from worker.media.tiffheader import check_tiff_claims as check

    check(path, limits)


FORMATS = (
    Format(
        "openslide",
        NAME,
        extensions("svs", "ndpi", "scn", "bif", "vms", "vmu", "svslide", "qptiff"),
        extension_decides=True,
        check=check_tiff_claims,
    ),
)


def _process(ctx: ProcessContext) -> MediaResult:
    """Checked first (the format's own checks, then a sandboxed first decode that may crash
    without taking the worker), then decoded in this process."""
    from worker.kinds.registry import check_local
    from worker.limits import budget_bytes
    from worker.media.sandbox import probe_slide
    from worker.media.slide import process_slide

    limits = ctx.settings.limits
    check_local(ctx.path, limits)
    probe_slide(ctx.path, budget_bytes(limits), limits.item_timeout_seconds)
    return process_slide(ctx.path, ctx.sink, limits, ctx.progress, checked=True)


KIND = MediaKind(
    name=NAME,
    queue="slides",
    task="mediaworker.process_slide",
    process=_process,
    payload=lazy("worker.payloads:slide_payload"),
    payload_model="worker.payloads:SlidePayload",
    assets=lazy("worker.verify:slide_assets"),
    claims=lazy("worker.claims:slide_claims"),
    check=lazy("worker.verify:check_tiles"),
)
