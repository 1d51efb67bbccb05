"""What each reason code means and what to do about it: the one place that says so.

The report page shows these next to each group of failures, and `docs/reasons.md` holds the same
table (`python -m worker.reasons` prints it; a test keeps the two equal). Keyed by the codes'
text so the table reads the same in the docs and in a result line's `reason`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class ReasonHelp:
    meaning: str
    fix: str


REASONS: dict[str, ReasonHelp] = {
    "not_found": ReasonHelp(
        "The source key does not exist in the bucket (or, for MIRAX and DICOM, a file its folder"
        " should hold).",
        "Check the key's spelling, its case and the integration's bucket; register the item"
        " again once the object is uploaded.",
    ),
    "permission_denied": ReasonHelp(
        "The bucket refused a read, write or listing to the worker's credentials.",
        "Run `mediaworker check INTEGRATION` and apply what `mediaworker policy INTEGRATION`"
        " prints (s3:GetObject, s3:PutObject under the prefix, s3:ListBucket for MIRAX and"
        " DICOM; on Azure the Storage Blob Data roles; on GCS the Storage Object roles).",
    ),
    "unsupported_format": ReasonHelp(
        "The bytes are not a format mediaworker reads: an unknown container or codec, an"
        " audio-only file, a playlist or list that names other files.",
        "Convert the source to a supported format (JPEG, PNG, TIFF, HEIC for images; MP4, MKV,"
        " MOV, WebM for video; a format OpenSlide reads for slides) and register it again.",
    ),
    "corrupt_media": ReasonHelp(
        "The decoder itself reported an error: the file is truncated or damaged.",
        "Re-upload the source from the original; if it opens elsewhere, send it to us with the"
        " message, since the decoder's own error is quoted there.",
    ),
    "too_large": ReasonHelp(
        "The source exceeds a configured limit (pixels, duration, frames, resolution, bytes).",
        "Split or downscale the source, or raise the matching `[limits]` setting if the"
        " machine has the memory and time for it.",
    ),
    "mirax_incomplete": ReasonHelp(
        "A MIRAX slide's folder (`NAME/` beside `NAME.mrxs`), its index or a data file is missing.",
        "Upload the whole folder next to the `.mrxs` file, with `Slidedat.ini`, `Index.dat` and"
        " every `Data*.dat` the message names, then process the item again.",
    ),
    "slide_incomplete": ReasonHelp(
        "A DICOM whole-slide series lacks levels or instances.",
        "Upload every `.dcm` instance of the series into the item's folder, then process the"
        " item again.",
    ),
    "timeout": ReasonHelp(
        "The item took longer than its time limit, or no result came back in time.",
        "Raise `limits.item_timeout_seconds` (or the queue's entry in"
        " `limits.queue_timeout_seconds`) for sources this large, or check that a worker"
        " consumes the item's queue.",
    ),
    "storage_unavailable": ReasonHelp(
        "The storage service kept failing (throttling, 5xx, resets, timeouts) after every retry.",
        "Check the provider's status and the network; the item is safe to process again as is.",
    ),
    "poison": ReasonHelp(
        "The item killed its worker process too many times (out of memory or a crash) and was"
        " stopped so it does not loop.",
        "Give the workers more memory or lower the limits for such sources, then process the"
        " item again; `worker.max_deliveries` sets the cap.",
    ),
    "invalid_item": ReasonHelp(
        "The item id, slot or key is not one mediaworker accepts (empty, absolute, `..`,"
        " control characters).",
        "Fix the item as the message says and send it again.",
    ),
    "internal_error": ReasonHelp(
        "A fault of mediaworker itself, not of the media.",
        "Report it with the id the message carries: the worker's log line with that id holds"
        " the traceback. The item is safe to process again.",
    ),
    "missing_assets": ReasonHelp(
        "Verification of a read-only integration found pre-extracted assets missing or"
        " invalid (this is a status, listed with the reasons).",
        "Run `mediaworker preextract` for those items again and upload its output, or upload"
        " the keys the result names.",
    ),
}


def help_for(code: str) -> ReasonHelp:
    """The help for a reason code; an unknown code (a newer worker's) still gets a line."""
    return REASONS.get(code, ReasonHelp("A reason this version does not know.", "Upgrade."))


def markdown_table() -> str:
    rows = ["| reason | what happened | what to do |", "| --- | --- | --- |"]
    rows += [f"| `{code}` | {h.meaning} | {h.fix} |" for code, h in REASONS.items()]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
