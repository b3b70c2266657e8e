"""Huge pages for the buffers XLA:CPU allocates on every step.

XLA:CPU allocates one buffer for a compiled program's temporaries on every call (180 MiB for
the Luna-16 training step of `python -m luna_lra.benchmark official`) and frees it after the
call. glibc's malloc maps a request that large afresh and unmaps it when it is freed, so each
step faults in and zeroes all of it again, 4 KiB at a time: about 46,000 page faults, a fifth
of that step's time on two cores. glibc's tunable `glibc.malloc.hugetlb=1` (glibc 2.35 and
newer) makes malloc ask the kernel for transparent huge pages on such mappings: 2 MiB pages,
512 times fewer faults. glibc reads tunables only when a process starts, so the trainer and the
benchmarks, run as programs, start themselves again at once with it set: the same process
(pid), command and environment otherwise. A GLIBC_TUNABLES that names glibc.malloc.hugetlb
already (`=0` turns this off) is left as it is.
"""

from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb"
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


def tunables() -> str:
    """The GLIBC_TUNABLES this process runs with ("" for none)."""
    return os.environ.get("GLIBC_TUNABLES", "")


def in_use() -> bool:
    """Whether this process started with malloc's huge pages on."""
    return available() and f"{TUNABLE}=1" in tunables().split(":")


def restart_with_huge_pages() -> None:
    """Replaces this process by its own command line with glibc.malloc.hugetlb=1 added to
    GLIBC_TUNABLES, where available() and the environment does not set it already. Call it
    first thing in a program's `if __name__ == "__main__":`, before JAX allocates anything."""
    current = tunables()
    if not available() or f"{TUNABLE}=" in current:
        return
    env = dict(os.environ, GLIBC_TUNABLES=":".join(filter(None, (current, f"{TUNABLE}=1"))))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)
