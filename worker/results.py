"""Celery's Redis result backend, storing each task's result in one round trip instead of two.

Celery never lets a late duplicate of a task (a redelivery after its worker was lost) overwrite
a result already stored as `SUCCESS`: it reads the stored result (GET), then sets and publishes
the new one (SET + PUBLISH) in a second round trip. `RedisResultBackend` keeps that rule and
does both in one Lua script, which Redis runs atomically (so no duplicate can slip in between
the check and the write either). Everything else, reading results included, is Celery's.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

_STORE_UNLESS_SUCCEEDED = """
local stored = redis.call('GET', KEYS[1])
if stored then
    local ok, meta = pcall(cjson.decode, stored)
    if ok and type(meta) == 'table' and meta['status'] == ARGV[3] then
        return 0
    end
end
local expires = tonumber(ARGV[2])
if expires > 0 then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', expires)
else
    redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""
"""KEYS[1]: the result's key (also the channel senders wait on); ARGV: the encoded result, its
expiry in seconds (0: none), and the state that is never overwritten. Returns 1 if stored."""

BACKEND_PATH = f"{__name__}:RedisResultBackend"


def backend_url(url: str) -> str:
    """The `result_backend` setting for a Redis URL: this backend on that server. Celery reads
    `module:Class+redis://...` as a backend class and its URL."""
    return f"{BACKEND_PATH}+{url}"


class RedisResultBackend(RedisBackend):  # type: ignore[misc]  (Celery is untyped)
    @cached_property
    def _store_script(self) -> Any:
        return self.client.register_script(_STORE_UNLESS_SUCCEEDED)

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend", state=state,
                                    task_id=task_id)  # fmt: skip
        expires = self.failure_expires if state == states.FAILURE else self.expires
        key = self.get_key_for_task(task_id)
        self.ensure(self._store_unless_succeeded, (key, value, expires or 0))
        return result

    def _store_unless_succeeded(self, key: bytes | str, value: str | bytes, expires: int) -> int:
        return int(
            self._store_script(
                keys=[key], args=[value, int(expires), states.SUCCESS], client=self.client
            )
        )
