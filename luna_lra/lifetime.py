"""A trainer started by a sweep dies with the sweep: the sweep names itself in the trainer's
environment (PARENT_ENV) and the trainer asks the kernel to send it SIGTERM when that process
dies, however it dies (SIGKILL included). SIGTERM makes the trainer save a checkpoint of the
step it reached and exit 143, so the next start of the sweep resumes it."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_ENV = "LUNA_LRA_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def child_env(env=None) -> dict[str, str]:
    """The environment for a trainer this process starts and owns."""
    return {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}


def die_with_parent() -> None:
    """In a trainer whose starter set PARENT_ENV (Linux): SIGTERM when that process dies, or
    now if it has died already."""
    parent = os.environ.pop(PARENT_ENV, None)  # not for processes this one starts
    if not parent or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
