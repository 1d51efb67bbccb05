"""The identifiers an item carries (SPEC section 3), checked before anything uses them.

`item_id` and `slot` become folder names of the output layout and `key` is sent to storage, so a
value that escapes (`../victim`, `a/../../b`), forges a log line (a newline) or is too long to be
a key is refused where it enters, before any request: exit 2 on the command line, `invalid_item`
through the queue.
"""

from __future__ import annotations

import re

from worker.errors import InvalidItem

NAME_MAX = 128
KEY_MAX_BYTES = 1024
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def name_problem(value: str) -> str | None:
    """Why `value` is not one plain name (SPEC 3's `item_id` and `slot`), or None."""
    if not _NAME.fullmatch(value):
        return f"1 to {NAME_MAX} characters of A-Z a-z 0-9 . _ - only"
    if value in (".", ".."):
        return "may not be '.' or '..'"
    return None


def key_problem(key: str) -> str | None:
    """Why `key` is not a storage key SPEC 3 accepts, or None."""
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if not 1 <= size <= KEY_MAX_BYTES:
        return f"must be 1 to {KEY_MAX_BYTES} bytes of UTF-8 (this one is {size})"
    if _CONTROL.search(key):
        return "may not hold NUL or control characters"
    return None


def check_name(field: str, value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise InvalidItem(f"{field} {printable(value)}: {problem}")
    return value


def check_key(key: str) -> str:
    problem = key_problem(key)
    if problem is not None:
        raise InvalidItem(f"key {printable(key)}: {problem}")
    return key


def printable(value: str, limit: int = 120) -> str:
    """`value` quoted for a message or a log line: control characters escaped, long values cut,
    so a hostile key can neither forge a line nor flood one."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return repr(shown)


def escape_controls(text: str) -> str:
    """`text` with each control character written as an escape (`\\n`, `\\x1b`, ...)."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)
