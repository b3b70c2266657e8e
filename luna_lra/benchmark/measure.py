"""What every benchmark here shares: timing a compiled function, memory (XLA's analysis, the
device's peak, a process's resident set), telling an out-of-memory failure from another error,
the machine's description, and writing a table's .md and .json."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import sys
import time

import jax

from luna_lra import provenance

# XLA (RESOURCE_EXHAUSTED), the host allocator, Python, and XLA:CPU's matmul library (YNNPACK
# reports a failed scratch allocation as an internal error) when its memory is capped.
OOM_TEXT = re.compile(r"RESOURCE_EXHAUSTED|out of memory|\bOOM\b|bad_alloc|Cannot allocate "
                      r"memory|failed to allocate|MemoryError", re.IGNORECASE)
CAPPED_OOM_TEXT = re.compile(r"YNNPACK operation failed|alloc", re.IGNORECASE)


def failure(e: BaseException, capped: bool = False) -> str:
    """'OOM (measured)' for an allocation failure, else 'error: <type>: <first line>'."""
    text = f"{type(e).__name__}: {e}"
    if isinstance(e, MemoryError) or OOM_TEXT.search(text) or (
            capped and CAPPED_OOM_TEXT.search(text)):
        return "OOM (measured)"
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return f"error: {type(e).__name__}: {first}"


def timed(fn, args, runs: int):
    """(compile seconds, median run seconds, compiled) of jit(fn) on args, one warm-up run."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times), compiled


def program_bytes(compiled):
    """XLA's footprint of one program: arguments + outputs + temporaries - aliased (None if
    the backend has no memory analysis)."""
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                   - m.alias_size_in_bytes)
    except Exception:  # backend without memory analysis
        return None


def device_peak():
    """memory_stats()['peak_bytes_in_use'] of device 0 (None where unavailable)."""
    return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")


def proc_status_bytes(key: str):
    """A /proc/self/status size field (VmRSS, VmHWM, VmSize) in bytes, None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def malloc_trim():
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def mem_available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """'<cpu>, N cores (M usable)' without an accelerator, else the devices and the host."""
    backend = jax.default_backend()
    if backend == "cpu":
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
        return f"{cpu_model_name()}, {os.cpu_count()} cores ({usable} usable)"
    return (f"{len(jax.devices())} x {jax.devices()[0].device_kind} ({backend}), host "
            f"{cpu_model_name()}, {os.cpu_count()} cores")


def load_average():
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def provenance_meta(prog: str = "python -m luna_lra.benchmark") -> dict:
    """machine, jax version, backend, commit and the command line, for every results table."""
    return dict(machine=machine(), device_kind=jax.devices()[0].device_kind,
                backend=jax.default_backend(), jax_version=jax.__version__,
                commit=provenance.git_commit(), command=f"{prog} " + " ".join(sys.argv[1:]))


def write_table(out_dir: str, name: str, markdown: str, data: dict) -> str:
    """OUT/name.md and OUT/name.json; returns the path without the suffix."""
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, name)
    with open(base + ".md", "w") as f:
        f.write(markdown)
    with open(base + ".json", "w") as f:
        json.dump(data, f, indent=2)
    return base


def fmt(x, spec=".2f"):
    return "—" if x is None else format(x, spec)


def length_name(n: int) -> str:
    """16384 -> '16K'; 1000 -> '1000'."""
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)
