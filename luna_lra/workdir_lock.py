"""One trainer per workdir: the trainer holds an exclusive lock on WORKDIR/trainer.lock while it
runs, with its host, pid and start written in it.

The lock is flock(2)'s: the kernel releases it when its process dies however it dies, so a
stale file from a dead trainer is simply taken over. A second trainer is refused (Busy); a
sweep waits until the lock is free before it starts a trainer (`wait_free`). A workdir on an
object store (gs://...) cannot be locked: runs there go unguarded.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import time
from typing import Callable

FILE = "trainer.lock"
POLL_SECONDS = 0.2


class Busy(RuntimeError):
    """Another live trainer holds the workdir; the message names it."""


def _path(workdir: str) -> str | None:
    return None if "://" in workdir else os.path.join(workdir, FILE)


def _describe(text: str) -> str:
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on host {h['host']}, started {h['started_at']}"
    except (ValueError, KeyError, TypeError):
        return "a process that wrote no details yet"


class Lock:
    """Held from `acquire()` until `release()` (or the process's end)."""

    def __init__(self, workdir: str):
        self.workdir, self.path, self.fd = workdir, _path(workdir), None

    def acquire(self) -> "Lock":
        if self.path is None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            raise Busy(f"--workdir {self.workdir} is in use by another trainer ({holder}); "
                       "wait for it to finish, or use another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({
            "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds")}).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the file stays: removing it would race a new holder
            self.fd = None


def holder(workdir: str) -> str | None:
    """Who holds the workdir's lock now ('pid P on host H, started T'), or None."""
    path = _path(workdir)
    if path is None or not os.path.isfile(path):
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return _describe(os.pread(fd, 4096, 0).decode(errors="replace"))
    finally:
        os.close(fd)


def wait_free(workdir: str, stopped: Callable[[], bool],
              on_wait: Callable[[str], None]) -> bool:
    """Returns True once no trainer holds the workdir (at once if none does), False if
    `stopped()` turns true first; `on_wait(holder)` is called once if it has to wait."""
    said = False
    while (who := holder(workdir)) is not None:
        if stopped():
            return False
        if not said:
            on_wait(who)
            said = True
        time.sleep(POLL_SECONDS)
    return True
