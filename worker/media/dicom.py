"""DICOM whole-slide images (VL Whole Slide Microscopy Image Storage): one series of `.dcm`
instances in one folder, one instance per pyramid level plus LABEL and OVERVIEW images.

Everything the worker needs before OpenSlide opens a series is decided here, from the instances'
headers only (bounded reads, never the pixel data):
- which files are instances of the item's series (`select_series`): OpenSlide reads every file of
  the folder that shares the opened instance's SeriesInstanceUID, so only those are fetched;
- whether the series is complete (`check_dicom_complete`): OpenSlide opens a series with a level
  missing without a word, and one whose frames stop short fails later, halfway through the tiles;
- whether the sizes the headers claim are within the limits, before anything is allocated.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial

from worker.config import Limits
from worker.errors import CorruptMedia, SlideIncomplete, TooLarge, UnsupportedFormat
from worker.kinds.dicom import is_dicom, is_instance_name

log = logging.getLogger(__name__)

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
HEADER_BYTES = 256 * 1024
"""Most read from the start of an instance to parse its header (without the pixel data)."""
FIRST_READ_BYTES = 16 * 1024
"""What a remote header read asks for first: the header of a slide instance fits in a few KiB."""
MAX_FOLDER_FILES = 1000
"""`.dcm` files a slide's folder may hold: a series has a few dozen at most, and each costs a
header read."""
_STOP_TAG = 0x00480008
"""Parsing stops here, after TotalPixelMatrixRows (0048,0007): past it come the optical paths
(with their ICC profiles), the per-frame positions and the pixel data, none of them needed."""
MAX_FRAMES_PER_TILE = 16
"""Frames an instance may hold per tile of its matrix (focal planes x optical paths); a claim
beyond it is refused before OpenSlide builds a frame index that large."""
FLAVORS = {"VOLUME": "level", "LABEL": "label", "OVERVIEW": "overview", "THUMBNAIL": "thumbnail"}


class HeaderTooLong(CorruptMedia):
    """The header did not end within the bytes read."""


def not_dicom(name: str) -> CorruptMedia:
    return CorruptMedia(f"{name}: not a DICOM file (no DICM marker after the 128-byte preamble)")


@dataclass(frozen=True)
class Instance:
    """What one instance's header says, as far as selection and the checks need."""

    name: str
    size: int
    sop_class: str
    series_uid: str
    flavor: str
    tile: tuple[int, int]
    """Columns and Rows: the size of one frame."""
    frames: int
    matrix: tuple[int, int]
    """TotalPixelMatrixColumns and Rows: the size of the whole image at this level."""
    concatenation: str
    part: int
    parts: int
    tiled_full: bool

    @property
    def is_level(self) -> bool:
        return self.flavor == "VOLUME"

    @property
    def tiles(self) -> int:
        """Frames a TILED_FULL instance needs for one plane of its matrix."""
        if min(self.tile) <= 0:
            return 0
        return math.ceil(self.matrix[0] / self.tile[0]) * math.ceil(self.matrix[1] / self.tile[1])


def parse_header(data: bytes, name: str, size: int) -> Instance | None:
    """The header of an instance from its first bytes (at most `HEADER_BYTES` of a file of
    `size` bytes); None when they are not a DICOM file."""
    if not is_dicom(data):
        return None
    stopped: list[bool] = []

    def stop(tag: int, vr: str | None, length: int) -> bool:
        if tag >= _STOP_TAG:
            stopped.append(True)
        return bool(stopped)

    try:
        ds = read_partial(io.BytesIO(data), stop_when=stop)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise CorruptMedia(f"{name}: not a readable DICOM header ({exc})") from None
    if not stopped and len(data) < size:
        raise HeaderTooLong(
            f"{name}: its DICOM header runs past the first {len(data) // 1024} KiB before the"
            " image size; a whole-slide instance keeps that much in far less"
        )
    return _instance(ds, name, size)


def _instance(ds: object, name: str, size: int) -> Instance:
    def value(keyword: str, default: object = None) -> object:
        return getattr(ds, keyword, default)

    def number(keyword: str) -> int:
        try:
            return int(value(keyword, 0) or 0)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return 0

    image_type = value("ImageType", []) or []
    flavors = [str(v).upper() for v in image_type] if isinstance(image_type, Iterable) else []
    meta = getattr(ds, "file_meta", None)
    sop = str(value("SOPClassUID", "") or getattr(meta, "MediaStorageSOPClassUID", "") or "")
    return Instance(
        name=name,
        size=size,
        sop_class=sop,
        series_uid=str(value("SeriesInstanceUID", "") or ""),
        flavor=flavors[2] if len(flavors) > 2 else "",
        tile=(number("Columns"), number("Rows")),
        frames=number("NumberOfFrames") or 1,
        matrix=(number("TotalPixelMatrixColumns"), number("TotalPixelMatrixRows")),
        concatenation=str(value("ConcatenationUID", "") or ""),
        part=number("InConcatenationNumber"),
        parts=number("InConcatenationTotalNumber"),
        tiled_full=str(value("DimensionOrganizationType", "") or "") == "TILED_FULL",
    )


def read_header(path: Path) -> Instance | None:
    with path.open("rb") as f:
        data = f.read(HEADER_BYTES)
    return parse_header(data, path.name, path.stat().st_size)


# --- which instances make the item's series ----------------------------------------------------


def select_series(instances: list[Instance], given: str | None, folder: str) -> list[Instance]:
    """The instances of the item's series: those sharing the given instance's SeriesInstanceUID,
    or for a folder item the folder's one series. A folder holding several series is refused,
    naming an instance of each, so the caller can register the one they mean."""
    wsi = [i for i in instances if i.sop_class == WSI_SOP_CLASS and i.series_uid]
    if given is not None:
        start = next((i for i in instances if i.name == given), None)
        if start is None:
            raise not_dicom(given)
        _require_wsi(start)
        return [i for i in wsi if i.series_uid == start.series_uid]
    series: dict[str, list[Instance]] = defaultdict(list)
    for instance in wsi:
        series[instance.series_uid].append(instance)
    if not series:
        raise UnsupportedFormat(
            f"{folder}: holds no DICOM whole-slide instance (VL Whole Slide Microscopy .dcm files);"
            " register the slide's own folder, or a plain image as type 'image'"
        )
    if len(series) > 1:
        examples = ", ".join(folder + min(m.name for m in group) for group in series.values())
        raise UnsupportedFormat(
            f"{folder}: holds {len(series)} DICOM slide series, so the folder does not say which"
            f" slide to process; register one instance of the series you mean instead ({examples})"
        )
    return next(iter(series.values()))


def _require_wsi(instance: Instance) -> None:
    if instance.sop_class != WSI_SOP_CLASS:
        raise UnsupportedFormat(
            f"{instance.name}: a DICOM file, but not a whole-slide image (SOP class"
            f" {instance.sop_class or 'missing'}, not VL Whole Slide Microscopy"
            f" {WSI_SOP_CLASS}); only whole-slide series are processed as slides"
        )
    if not instance.series_uid:
        raise CorruptMedia(f"{instance.name}: a DICOM slide instance without SeriesInstanceUID")


def main_instance(series: list[Instance]) -> Instance:
    """The instance to open the series by: its largest level (any instance would do for
    OpenSlide; this one is stable and names the slide best)."""
    levels = [i for i in series if i.is_level] or series
    return max(levels, key=lambda i: (i.matrix[0] * i.matrix[1], i.name))


# --- completeness and limits, on the fetched series --------------------------------------------


def check_dicom_complete(path: Path, limits: Limits) -> None:
    """Before OpenSlide opens `path`: its series (the `.dcm` files beside it that share its
    SeriesInstanceUID) is a whole-slide image within the limits, with every level and instance."""
    folder = path.parent
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and is_instance_name(p.name))
    instances = [i for i in (read_header(folder / n) for n in names) if i is not None]
    series = select_series(instances, path.name, "")
    for instance in series:
        _check_claims(instance, limits)
    problems = _missing_parts(series)
    if problems:
        raise SlideIncomplete(
            f"DICOM slide {path.name} is incomplete: {'; '.join(problems)}; upload every"
            " instance of the series into its folder, then process it again"
        )


def _check_claims(instance: Instance, limits: Limits) -> None:
    """Header sizes against the limits, before OpenSlide allocates by them."""
    width, height = instance.matrix
    if width <= 0 or height <= 0 or min(instance.tile) <= 0:
        raise CorruptMedia(
            f"{instance.name}: its header gives no image size (TotalPixelMatrixColumns/Rows,"
            " Columns/Rows); the instance is damaged, export it again"
        )
    if width * height > limits.max_slide_pixels:
        raise TooLarge(
            f"{instance.name} claims a {width}x{height} pixel image, over the limit of"
            f" {limits.max_slide_pixels:,} pixels per slide (limits.max_slide_pixels)"
        )
    if instance.tile[0] * instance.tile[1] > limits.max_image_pixels:
        raise TooLarge(
            f"{instance.name} claims {instance.tile[0]}x{instance.tile[1]} pixel tiles, over the"
            f" limit of {limits.max_image_pixels:,} pixels per image (limits.max_image_pixels)"
        )
    if instance.frames > instance.tiles * MAX_FRAMES_PER_TILE:
        raise CorruptMedia(
            f"{instance.name} claims {instance.frames:,} frames, more than a"
            f" {width}x{height} image of {instance.tile[0]}x{instance.tile[1]} tiles can hold;"
            " the instance is damaged, export it again"
        )


def _missing_parts(series: list[Instance]) -> list[str]:
    levels: dict[tuple[int, int], list[Instance]] = defaultdict(list)
    for instance in series:
        if instance.is_level:
            levels[instance.matrix].append(instance)
    if not levels:
        return ["no pyramid level (no instance whose ImageType is VOLUME) is in the series"]
    problems = []
    for matrix, parts in sorted(levels.items(), reverse=True):
        problems += _level_problems(matrix, parts)
    return problems + _missing_levels(sorted(levels, reverse=True))


def _level_problems(matrix: tuple[int, int], parts: list[Instance]) -> list[str]:
    """Instances missing from a level's concatenation; a TILED_FULL level short of frames."""
    where = f"level {matrix[0]}x{matrix[1]}"
    total = max(p.parts for p in parts)
    if total > 1:
        present = {p.part for p in parts}
        missing = [str(n) for n in range(1, total + 1) if n not in present]
        if missing:
            return [f"{where} lacks instance {', '.join(missing)} of its {total} (concatenation)"]
        frames = sum(p.frames for p in parts)
    else:
        frames = max(p.frames for p in parts)
    first = parts[0]
    if first.tiled_full and frames < first.tiles:
        names = ", ".join(sorted(p.name for p in parts))
        return [f"{where} ({names}) holds {frames} of the {first.tiles} tiles its image needs"]
    return []


def _missing_levels(sizes: list[tuple[int, int]]) -> list[str]:
    """Gaps in the pyramid: levels step down by one factor (2, sometimes 4), so a step that is a
    power of the smallest one skips levels. Two levels alone cannot show a gap."""
    if len(sizes) < 3:
        return []
    base = sizes[0][0]
    downsamples = [round(base / width) for width, _ in sizes]
    steps = [b / a for a, b in itertools.pairwise(downsamples)]
    factor = min(steps)
    if factor < 2:
        return []
    problems = []
    for downsample, step in zip(downsamples, steps, strict=False):
        skipped = round(math.log(step, factor)) - 1
        for k in range(1, skipped + 1):
            lost = downsample * round(factor**k)
            width, height = (math.ceil(v / lost) for v in sizes[0])
            problems.append(f"level {width}x{height} (downsample {lost}) is missing")
    return problems
