"""Errors and the reason codes of SPEC section 9.

Every failure the worker reports is one of these, so each maps to exactly one reason code::

    MediaWorkerError
    ├── ConfigError                 usage or configuration; the CLI exits 2
    ├── TransientError              worth retrying with backoff (throttling, 5xx, resets, timeouts)
    │   └── StorageUnavailable      -> storage_unavailable (once the retries are spent)
    └── PermanentError              retrying cannot help; carries its reason code
        ├── NotFound                -> not_found
        ├── PermissionDenied        -> permission_denied
        ├── UnsupportedFormat       -> unsupported_format
        ├── CorruptMedia            -> corrupt_media
        ├── TooLarge                -> too_large
        ├── MiraxIncomplete         -> mirax_incomplete
        ├── SlideIncomplete         -> slide_incomplete
        ├── ItemTimeout             -> timeout
        ├── Poison                  -> poison
        ├── InvalidItem             -> invalid_item (an item id, slot or key SPEC 3 refuses)
        └── InternalError           -> internal_error (a fault of mediaworker, never of the media)

Any other exception reaching an item's boundary is a fault of mediaworker itself: it becomes
`internal_error`, never `corrupt_media`, which only a decoder's own error may give.

Storage backends translate their SDK's errors into this tree in one table each, keeping the
provider's own code (`AccessDenied`, `AuthorizationPermissionMismatch`, `403`) as `provider_code`;
media processors translate their decoder's errors. Nothing else needs to know an SDK's exceptions.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self


class Reason(StrEnum):
    NOT_FOUND = "not_found"
    PERMISSION_DENIED = "permission_denied"
    UNSUPPORTED_FORMAT = "unsupported_format"
    CORRUPT_MEDIA = "corrupt_media"
    TOO_LARGE = "too_large"
    MIRAX_INCOMPLETE = "mirax_incomplete"
    SLIDE_INCOMPLETE = "slide_incomplete"
    TIMEOUT = "timeout"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    POISON = "poison"
    INVALID_ITEM = "invalid_item"
    INTERNAL_ERROR = "internal_error"


class MediaWorkerError(Exception):
    """Base of every error the worker raises on purpose."""

    reason: Reason | None = None
    provider_code: str = ""
    """For a storage error, the provider's own error code ("" when it gave none): `check` names
    the fix from it (a rejected key is not a missing permission)."""

    def with_code(self, code: object) -> Self:
        self.provider_code = str(code or "")
        return self


class ConfigError(MediaWorkerError):
    """The integrations file or the command line is wrong; the message names what and why."""


class TransientError(MediaWorkerError):
    """A fault that may pass: the caller retries with backoff, bounded."""

    reason = Reason.STORAGE_UNAVAILABLE


class StorageUnavailable(TransientError):
    reason = Reason.STORAGE_UNAVAILABLE


class PermanentError(MediaWorkerError):
    """Retrying cannot help; the item fails at once with this reason code."""

    reason: Reason


class NotFound(PermanentError):
    reason = Reason.NOT_FOUND


class PermissionDenied(PermanentError):
    reason = Reason.PERMISSION_DENIED


class UnsupportedFormat(PermanentError):
    reason = Reason.UNSUPPORTED_FORMAT


class CorruptMedia(PermanentError):
    reason = Reason.CORRUPT_MEDIA


class TooLarge(PermanentError):
    reason = Reason.TOO_LARGE


class MiraxIncomplete(PermanentError):
    reason = Reason.MIRAX_INCOMPLETE


class SlideIncomplete(PermanentError):
    """A multi-file slide (a DICOM series) lacks a level or an instance; the message names it."""

    reason = Reason.SLIDE_INCOMPLETE


class ItemTimeout(PermanentError):
    reason = Reason.TIMEOUT


class Poison(PermanentError):
    reason = Reason.POISON


class InvalidItem(PermanentError):
    reason = Reason.INVALID_ITEM


class InternalError(PermanentError):
    """A fault of mediaworker itself; the message carries the id its logged traceback carries."""

    reason = Reason.INTERNAL_ERROR


def reason_of(exc: BaseException) -> Reason:
    """The reason code for any exception; unknown ones are our own fault, never the media's."""
    if isinstance(exc, MediaWorkerError) and exc.reason is not None:
        return exc.reason
    if isinstance(exc, TimeoutError):
        return Reason.TIMEOUT
    if isinstance(exc, ConnectionError):
        return Reason.STORAGE_UNAVAILABLE
    if isinstance(exc, MemoryError):
        return Reason.TOO_LARGE
    return Reason.INTERNAL_ERROR
