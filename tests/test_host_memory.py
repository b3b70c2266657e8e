"""luna_lra.host_memory: the trainer and the benchmarks start themselves again with glibc's
malloc on huge pages and keeping what it frees, so XLA:CPU's per-call buffers are not faulted
in again on every call."""

import json
import os
import subprocess
import sys

import pytest

from luna_lra import host_memory

pytestmark = pytest.mark.skipif(not host_memory.available(),
                                reason="needs Linux, glibc >= 2.35 and transparent huge pages")

RESTART = r"""
import os
from luna_lra import host_memory
print(os.getpid(), os.environ.get("GLIBC_TUNABLES"), flush=True)
host_memory.restart_with_tunables()
print(os.getpid(), os.environ.get("GLIBC_TUNABLES"), host_memory.in_use())
"""

# A jitted function whose temporaries take one 76 MiB buffer, called a few times after its
# first call: the page faults of each call, and how much the resident memory grew meanwhile.
XLA_CALLS = r"""
import json, resource, sys
from luna_lra import host_memory
if sys.argv[1:] == ["restart"]:
    host_memory.restart_with_tunables()
import jax, jax.numpy as jnp
def resident():
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS")).split()[1]) * 1024
@jax.jit
def f(x):
    a, b = jax.lax.optimization_barrier((jnp.sin(x), jnp.cos(x)))
    return (a * b).sum()
x = jnp.ones(10_000_000, jnp.float32)
compiled = f.lower(x).compile()
compiled(x).block_until_ready()
start, faults = resident(), []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    compiled(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(dict(faults=faults, temp=compiled.memory_analysis().temp_size_in_bytes,
                      growth=resident() - start)))
"""

ALL = ":".join(f"{k}={v}" for k, v in host_memory.TUNABLES.items())


def run(script, tunables=None, *args):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    out = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.splitlines()


def test_the_process_starts_again_with_the_tunables_added():
    first, second, last = run(RESTART, "glibc.malloc.arena_max=2")
    pid = first.split()[0]
    assert first == f"{pid} glibc.malloc.arena_max=2"
    ours = ":".join(f"{k}={v}" for k, v in host_memory.TUNABLES.items()
                    if k != "glibc.malloc.arena_max")
    assert second == f"{pid} glibc.malloc.arena_max=2:{ours}"
    assert last == f"{pid} glibc.malloc.arena_max=2:{ours} True"


def test_a_users_settings_are_left_alone():
    first, second, last = run(RESTART, "glibc.malloc.hugetlb=0")
    assert second.startswith(first + ":")  # the other three added
    assert "glibc.malloc.hugetlb=1" not in last and last.endswith(" False")
    first, last = run(RESTART, ALL.replace("glibc.malloc.hugetlb=1", "glibc.malloc.hugetlb=0"))
    assert last == first + " False"  # all four named: no restart


def test_xla_buffers_stay_mapped_between_calls():
    plain = json.loads(run(XLA_CALLS)[-1])
    # huge pages but malloc's defaults otherwise: the buffer is mapped afresh on every call
    huge = json.loads(run(XLA_CALLS, "glibc.malloc.hugetlb=1")[-1])
    ours = json.loads(run(XLA_CALLS, None, "restart")[-1])
    pages = plain["temp"] // 4096
    assert pages > (32 << 20) // 4096  # above glibc's largest mmap threshold
    median = lambda r: sorted(r["faults"])[len(r["faults"]) // 2]
    assert all(f >= 0.9 * pages for f in plain["faults"])  # every 4 KiB page, every call
    assert 0.9 * pages / 512 <= median(huge) < 0.05 * pages  # every 2 MiB page, every call
    assert median(ours) < 0.01 * pages  # kept mapped: (nearly) no faults at all
    assert ours["growth"] <= 2 * ours["temp"]  # what it keeps stays near one buffer
