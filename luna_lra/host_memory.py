"""Host memory settings for the buffers XLA:CPU allocates on every step.

XLA:CPU allocates one buffer for a compiled program's temporaries on every call (180 MiB for
the Luna-16 training step of `python -m luna_lra.benchmark official`, 208 MiB for Luna-256)
and frees it after the call. glibc's malloc maps a request that large afresh and unmaps it
when it is freed, so each step faulted in and zeroed all of it again, 4 KiB at a time (about
46,000 page faults, a fifth of the Luna-16 step's time on two cores); and on a virtual
machine whose host takes back free guest memory (virtio-balloon free page reporting), the
first step after a pause of a second or two paid again for the host to supply those pages
(0.3-0.7 s of system time at Luna-256). Four glibc tunables (glibc 2.35 and newer):

- glibc.malloc.hugetlb=1: what malloc maps goes on transparent huge pages (2 MiB pages);
- glibc.malloc.arena_max=1, glibc.malloc.mmap_max=0, glibc.malloc.trim_threshold=2**62:
  every thread allocates from the one heap (a thread's own arena maps large requests afresh
  whatever mmap_max says), never from a mapping of its own, and the heap is never shrunk. The
  freed buffer stays mapped for the next call: no page faults after the first steps, at the
  price of keeping the process's peak (plus some fragmentation: about 1.3-1.5 GiB resident
  for the two Luna steps of the step benchmark in one process, against 1.0-1.2 GiB).

glibc reads tunables only when a process starts, so the trainer and the benchmarks, run as
programs, start themselves again at once with them added to GLIBC_TUNABLES: the same process
(pid), command and environment otherwise. A tunable that GLIBC_TUNABLES names already is left
as it is (`glibc.malloc.hugetlb=0`, `glibc.malloc.mmap_max=65536` turn those parts off).
"""

from __future__ import annotations

import os
import sys

TUNABLES = {"glibc.malloc.hugetlb": "1", "glibc.malloc.arena_max": "1",
            "glibc.malloc.mmap_max": "0", "glibc.malloc.trim_threshold": str(2**62)}
THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def available() -> bool:
    """Whether malloc can be told to use huge pages here: Linux with transparent huge pages
    not off, glibc 2.35 or newer."""
    try:
        with open(THP_MODE) as f:
            if "[never]" in f.read():
                return False
    except OSError:
        return False
    try:
        lib, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
        return lib == "glibc" and tuple(map(int, version.split(".")[:2])) >= (2, 35)
    except (AttributeError, OSError, ValueError):  # another OS or libc
        return False


def _settings() -> list:
    return os.environ.get("GLIBC_TUNABLES", "").split(":")


def in_use() -> bool:
    """Whether this process started with malloc's huge pages on."""
    return available() and "glibc.malloc.hugetlb=1" in _settings()


def tunables() -> str:
    """The GLIBC_TUNABLES this process runs with ("" for none)."""
    return os.environ.get("GLIBC_TUNABLES", "")


def restart_with_tunables() -> None:
    """Replaces this process by its own command line with TUNABLES added to GLIBC_TUNABLES
    (those it does not name already), where available(). Call it first thing in a program's
    `if __name__ == "__main__":`, before JAX allocates anything."""
    named = {s.split("=")[0] for s in _settings() if s}
    missing = [f"{k}={v}" for k, v in TUNABLES.items() if k not in named]
    if not available() or not missing:
        return
    env = dict(os.environ, GLIBC_TUNABLES=":".join(filter(None, [tunables(), *missing])))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)
