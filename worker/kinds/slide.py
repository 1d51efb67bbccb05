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

from worker.kinds import Format, MediaKind, PayloadInput, ProcessContext, extensions

if TYPE_CHECKING:
    from worker.assets import Asset
    from worker.claims import Claim
    from worker.config import Limits
    from worker.layout import SlotLayout
    from worker.media import MediaResult
    from worker.payloads import Payload
    from worker.storage.base import ReadableStorage
    from worker.verify import Report

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


def _payload(given: PayloadInput) -> Payload:
    from worker.payloads import slide_payload

    return slide_payload(given)


def _assets(payload: Payload, slot: SlotLayout | None) -> list[Asset]:
    return [payload.storage_dzi_key, *payload.storage_associated_keys.values()]  # type: ignore[union-attr]


def _check(payload: Payload, storage: ReadableStorage, report: Report, limits: Limits) -> None:
    from worker.verify import check_tiles

    check_tiles(payload, storage, report)  # type: ignore[arg-type]


def _claims(payload: Payload, limits: Limits) -> list[Claim]:
    from worker.claims import slide_claims

    return slide_claims(payload, limits)  # type: ignore[arg-type]


def _model() -> type:
    from worker.payloads import SlidePayload

    return SlidePayload


KIND = MediaKind(
    name=NAME,
    queue="slides",
    task="mediaworker.process_slide",
    process=_process,
    payload=_payload,
    payload_model=_model,
    assets=_assets,
    check=_check,
    claims=_claims,
)
