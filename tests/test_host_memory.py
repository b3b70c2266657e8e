"""luna_lra.host_memory: the trainer and the benchmarks start themselves again with glibc's
malloc on huge pages, so XLA:CPU's per-call buffers are not faulted in 4 KiB at a time."""

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
host_memory.restart_with_huge_pages()
print(os.getpid(), os.environ.get("GLIBC_TUNABLES"), host_memory.in_use())
"""

# A jitted function whose temporaries take one 76 MiB buffer, called a few times after its
# first call: the page faults of each call.
XLA_CALLS = r"""
import json, resource
from luna_lra import host_memory
host_memory.restart_with_huge_pages()
import jax, jax.numpy as jnp
@jax.jit
def f(x):
    a, b = jax.lax.optimization_barrier((jnp.sin(x), jnp.cos(x)))
    return (a * b).sum()
x = jnp.ones(10_000_000, jnp.float32)
compiled = f.lower(x).compile()
compiled(x).block_until_ready()
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    compiled(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(dict(faults=faults, temp=compiled.memory_analysis().temp_size_in_bytes)))
"""


def run(script, tunables=None):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.splitlines()


def test_the_process_starts_again_with_the_tunable_added():
    first, second, last = run(RESTART, "glibc.malloc.arena_max=2")
    pid = first.split()[0]
    assert first == f"{pid} glibc.malloc.arena_max=2"
    assert second == f"{pid} glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert last == f"{pid} glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1 True"


def test_a_users_setting_is_left_alone():
    first, last = run(RESTART, "glibc.malloc.hugetlb=0")
    assert last == first + " False"


def test_xla_buffers_fault_in_huge_pages():
    off = json.loads(run(XLA_CALLS, "glibc.malloc.hugetlb=0")[-1])
    on = json.loads(run(XLA_CALLS)[-1])
    pages = on["temp"] // 4096
    assert pages > (32 << 20) // 4096  # above glibc's largest mmap threshold: mapped afresh
    assert all(f >= 0.9 * pages for f in off["faults"])  # every 4 KiB page, every call
    assert all(f < 0.05 * pages for f in on["faults"])
