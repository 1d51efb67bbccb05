"""MIRAX slides: `NAME.mrxs` with its data in the folder `NAME/` beside it (`Slidedat.ini`,
`Index.dat`, `Data*.dat`).

The item is the `.mrxs` key; the files of its folder are not items. Fetching lists that folder
(the only bucket-level call processing makes, hence `s3:ListBucket`) and downloads all of it
beside the `.mrxs`; the local copy is checked complete (`worker.media.mirax`) before OpenSlide
opens it, since OpenSlide's own error for a missing part is vague.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from worker.kinds import Format, Resolved, extensions

if TYPE_CHECKING:
    from worker.config import Limits
    from worker.storage.base import ReadableStorage

SUFFIX = ".mrxs"


def is_mirax(key: str) -> bool:
    return key.lower().endswith(SUFFIX)


def mirax_prefix(key: str) -> str:
    """`dir/NAME.mrxs` -> `dir/NAME/`: the folder a MIRAX slide keeps its data in."""
    return key[: -len(SUFFIX)] + "/"


class MiraxSource:
    """The `.mrxs` and every object in its folder, downloaded side by side."""

    def resolve(self, storage: ReadableStorage, key: str, max_bytes: int | None) -> Resolved:
        from worker.errors import MiraxIncomplete, TooLarge
        from worker.fetch import list_folder, relative, total

        main = storage.head(key)  # a missing `.mrxs` is `not_found`, whatever its folder holds
        prefix = mirax_prefix(key)
        parts = list_folder(storage, f"MIRAX slide {key}", prefix)
        if not parts:
            raise MiraxIncomplete(
                f"MIRAX slide {key}: its folder {prefix} is empty or missing in"
                f" {storage.integration or 'the bucket'}; upload the whole folder beside the .mrxs"
            )
        if max_bytes is not None and total(parts) > max_bytes:
            raise TooLarge(
                f"MIRAX slide {key}: its folder {prefix} holds {total(parts):,} bytes, over the"
                f" limit of {max_bytes:,} (limits.max_source_bytes); raise it if this slide is"
                " expected"
            )
        name = key.rsplit("/", 1)[-1]
        folder = name[: -len(SUFFIX)]
        files = [(p.key, f"{folder}/{relative(p.key, prefix, 'MIRAX part')}") for p in parts]
        return Resolved(key, main, key, ((key, name), *files))

    def item_key(self, key: str, claimed: set[str]) -> str | None:
        if not is_mirax(key):
            return None
        # `NAME.mrxs` lists before `NAME/...` ('.' < '/'), so its folder is claimed in time.
        claimed.add(mirax_prefix(key))
        return key


def _check(path: Path, limits: Limits) -> None:
    from worker.media.mirax import check_mirax_complete

    check_mirax_complete(path)


FORMATS = (
    Format(
        "mirax",
        "slide",
        extensions("mrxs"),
        extension_decides=True,
        source=MiraxSource(),
        check=_check,
    ),
)
