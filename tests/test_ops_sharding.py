"""Kernels under a device mesh run once per device on their share of the batch (shard_map)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from luna_lra import ops
mesh = Mesh(np.array(jax.devices()), ("data",))
assert len(jax.devices()) == 2
rng = np.random.default_rng(0)
q = jnp.asarray(rng.normal(size=(4, 3, 2, 8)), jnp.float32)
k = jnp.asarray(rng.normal(size=(4, 20, 2, 8)), jnp.float32)
mask = jnp.arange(20)[None] < jnp.array([[20], [5], [0], [13]])
ref = ops.pack_attention(q, k, k, mask)
with jax.set_mesh(mesh):
    f = jax.jit(lambda q, k, m: ops.pack_attention(q, k, k, m, impl="pallas", interpret=True),
                in_shardings=NamedSharding(mesh, P("data")))
    assert "manual" in f.lower(q, k, mask).as_text()  # the shard_map is there
    out = f(q, k, mask)
    g = jax.jit(lambda q, k, m: ops.pack_attention(q, k, k, m, dropout_rate=0.5,
                dropout_seed=jnp.uint32(7), impl="pallas", interpret=True))(q, k, mask)
np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
assert bool(jnp.all(jnp.isfinite(g)))
print("ok")
"""


@pytest.mark.slow
def test_pallas_kernels_under_a_mesh_match_the_reference():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
