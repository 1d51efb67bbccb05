"""The embedded broker: messages as files in a folder, and a message handed out is never lost.

kombu's `filesystem://` transport deletes a message file when it hands the message out, so a
worker killed whole (SIGKILL, OOM, power loss) loses the items it was running. This transport
keeps kombu's folder format (a producer on `filesystem://` can still write into the folder) and
changes what happens to a message once it is handed out:

- `_get` moves the file (one `rename`, atomic) from `queue/` into `inflight/<owner>/`, where
  `<owner>` is the consuming process; `ack` deletes it; a requeue (`reject`, a pool process lost,
  the channel closing with unacknowledged messages) moves it back under its old name;
- each owner holds a POSIX lock on `inflight/<owner>.lock` for as long as it lives. The kernel
  drops the lock when the process dies, however it dies, and a reboot drops every lock;
- when a consumer starts, and every `RECOVER_EVERY_SECONDS` after, it moves the messages of
  every owner whose lock it can take (a dead one) back into `queue/`.

So nothing is written per delivery beyond the rename and the final unlink: the journal of
in-flight deliveries is the `inflight/` folder itself. Publishing writes a temporary file, fsyncs
it, renames it into place and fsyncs the folder, so a message that was sent survives a power
loss and a consumer never reads a half-written file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.transport.virtual import Empty
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

SCHEME = "mediaworker"
TRANSPORT_ALIASES.setdefault(SCHEME, "worker.embedded_broker:Transport")
RECOVER_EVERY_SECONDS = 10.0
TORN_GRACE_SECONDS = 30.0
"""A file that does not parse yet may be one a foreign producer is still writing."""
INFLIGHT = "inflight"
ACKED = ".acked"
"""Under `inflight/`: acknowledged messages waiting to be deleted; never handed out again."""


@dataclass
class _Owner:
    """This process's claim on the messages it holds; `lock` keeps the claim alive."""

    pid: int
    folder: Path
    lock: Any


_owners: dict[Path, _Owner] = {}
"""This process's claim in each `inflight` folder it consumed from."""


def _current(inflight: Path) -> _Owner | None:
    owner = _owners.get(inflight)
    # A forked child sees its parent's claims but holds none of their locks (POSIX locks are
    # not inherited): they are not its own.
    return owner if owner is not None and owner.pid == os.getpid() else None


def _own(inflight: Path) -> _Owner:
    """This process's owner folder in `inflight`, created and locked on first use."""
    owner = _current(inflight)
    if owner is None:
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        inflight.mkdir(parents=True, exist_ok=True)
        # Lock under a name recovery ignores, then publish it: a lock file is never seen
        # unlocked by another consumer while its owner lives.
        temp = inflight / f".{name}.locking"
        lock = temp.open("a")
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        temp.rename(inflight / f"{name}.lock")
        folder = inflight / name
        folder.mkdir()
        owner = _owners[inflight] = _Owner(os.getpid(), folder, lock)
    return owner


_reapers: dict[int, queue.SimpleQueue[Path]] = {}


def _reaper() -> queue.SimpleQueue[Path]:
    """This process's deleter of acknowledged message files (a daemon thread)."""
    pid = os.getpid()
    if pid not in _reapers:
        paths: queue.SimpleQueue[Path] = queue.SimpleQueue()

        def reap() -> None:
            while True:
                paths.get().unlink(missing_ok=True)

        threading.Thread(target=reap, name="mediaworker-acked-reaper", daemon=True).start()
        _reapers[pid] = paths
    return _reapers[pid]


def recover_dead_owners(queue_folder: Path, inflight: Path) -> int:
    """Move the messages of every dead owner back into the queue; returns how many."""
    owner = _current(inflight)
    mine = owner.folder.name if owner is not None else None
    moved = 0
    with contextlib.suppress(FileNotFoundError):
        for lock_path in sorted(inflight.glob("*.lock")):
            name = lock_path.name.removesuffix(".lock")
            if name != mine:
                moved += _recover_if_dead(name, queue_folder, inflight)
    return moved


def _recover_if_dead(name: str, queue_folder: Path, inflight: Path) -> int:
    lock_path = inflight / f"{name}.lock"
    try:
        fd = os.open(lock_path, os.O_WRONLY)  # never O_CREAT: a lock file gone is recovered
    except FileNotFoundError:
        return 0  # another consumer recovered it just now
    with os.fdopen(fd, "w") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return 0  # its owner is alive
        moved = 0
        folder = inflight / name
        for path in sorted(folder.glob("*")) if folder.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                path.rename(queue_folder / path.name)
                moved += 1
        with contextlib.suppress(FileNotFoundError, OSError):
            folder.rmdir()
        lock_path.unlink(missing_ok=True)
    if moved:
        log.warning(
            "embedded broker: %d message(s) handed to a worker that died were put back in"
            " the queue",
            moved,
        )
    return moved


class Channel(filesystem.Channel):
    """kombu's folder channel with in-flight messages kept until acknowledged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: dict[str, Path] = {}
        self._no_ack: set[str] = set()
        self._recovered_at = 0.0

    @property
    def _queue_folder(self) -> Path:
        return Path(self.data_folder_in)

    @property
    def _inflight(self) -> Path:
        return self._queue_folder.parent / INFLIGHT

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        folder = Path(self.data_folder_out)
        name = f"{time.time_ns() // 1000:017d}_{uuid.uuid4()}.{queue}.msg"
        temp = folder / f".{name}.tmp"  # not a message name: consumers skip it
        with temp.open("wb") as out:
            out.write(dumps(payload).encode())
            out.flush()
            os.fsync(out.fileno())
        temp.rename(folder / name)
        _fsync_folder(folder)

    def _get(self, queue: str) -> Any:
        self._maybe_recover()
        wanted = f"{queue}.msg"
        # Plain names, not Path objects: this runs on every poll of every queue.
        listing = os.listdir(self._queue_folder)  # noqa: PTH208
        names = sorted(n for n in listing if n.partition(".")[2] == wanted)
        if not names:
            raise Empty()
        owner = _own(self._inflight)
        for name in names:
            held = owner.folder / name
            try:
                (self._queue_folder / name).rename(held)
            except FileNotFoundError:
                continue  # another consumer took it first
            payload = self._read(held)
            if payload is None:
                continue
            if queue in self._no_ack:
                held.unlink()
            else:
                self._held[payload["properties"]["delivery_tag"]] = held
            return payload
        raise Empty()

    def _read(self, held: Path) -> Any:
        """The message in `held`, or None if it is not one (yet)."""
        with held.open("rb") as f:
            # kombu's own folder producer writes under an exclusive lock: wait for it.
            fcntl.flock(f, fcntl.LOCK_SH)
            data = f.read()
        try:
            return loads(data)
        except ValueError:
            pass
        if time.time() - held.stat().st_mtime < TORN_GRACE_SECONDS:
            held.rename(self._queue_folder / held.name)  # still being written: later
            return None
        # Not a message, and never going to be one: out of the queue, kept for inspection.
        broken = self._queue_folder.parent / "broken"
        broken.mkdir(exist_ok=True)
        held.rename(broken / held.name)
        log.error("embedded broker: a message file that is not JSON was moved to %s", broken)
        return None

    @property
    def _acked(self) -> Path:
        return self._inflight / ACKED

    def _maybe_recover(self) -> None:
        now = time.monotonic()
        if now - self._recovered_at >= RECOVER_EVERY_SECONDS:
            if not self._recovered_at:  # first poll: what killed consumers left acknowledged
                self._acked.mkdir(parents=True, exist_ok=True)
                for leftover in self._acked.iterdir():
                    _reaper().put(leftover)
            self._recovered_at = now
            recover_dead_owners(self._queue_folder, self._inflight)

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        held = self._held.pop(delivery_tag, None)
        if held is not None:
            # Out of `inflight/` at once (a rename is cheap), deleted by a thread: removing a
            # file whose blocks were fsynced waits for the disk (~5 ms here).
            done = self._acked / held.name
            held.rename(done)
            _reaper().put(done)
        super().basic_ack(delivery_tag, multiple=multiple)

    def _restore(self, message: Any) -> None:
        """Requeue: the held file goes back under its old name (no copy, so no duplicate)."""
        held = self._held.pop(message.delivery_tag, None)
        if held is None:
            super()._restore(message)
            return
        if _current(self._inflight) is None:
            return  # a forked child's copy of its parent's state: the file is not its own
        with contextlib.suppress(FileNotFoundError):
            held.rename(self._queue_folder / held.name)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Transport(filesystem.Transport):
    """Polled from the worker's event loop (`asynchronous`): with it Celery runs its event-loop
    pool, where each pool process has its own pipes. Without it, pool processes share one job
    queue and its lock, and a pool process killed while idle (it holds that lock while it waits
    for a job) leaves the worker unable to hand out any job again."""

    Channel = Channel
    driver_type = SCHEME
    driver_name = SCHEME
    implements = filesystem.Transport.implements.extend(asynchronous=True)
    POLL_SECONDS = 0.2
    MAX_PER_POLL = 100

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        loop.call_repeatedly(self.POLL_SECONDS, self._poll_once, connection)

    def _poll_once(self, connection: Any) -> None:
        """Deliver what is waiting now, as far as the prefetch limit allows; never block."""
        with contextlib.suppress(socket.timeout):
            for _ in range(self.MAX_PER_POLL):
                self.drain_events(connection, timeout=0)
