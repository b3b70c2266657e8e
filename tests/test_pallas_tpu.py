"""The Mosaic kernels (ops/pallas_tpu.py) in TPU interpret mode on the CPU, with the race
detector on, against the reference: outputs and dq, dk, dv under a random cotangent; also that
they lower to Mosaic (no TPU needed for that; Mosaic's own compile passes are not run)."""

import contextlib
import importlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from jax.experimental.pallas import tpu as pltpu

from luna_lra.ops import pallas_tpu, reference

SEED = np.uint32(0xDEADBEEF)  # above 2**31: the kernels' int32 view must keep the seed's bits
F32_TOL, BF16_TOL = 1e-5, 1e-2
# One simulated core: with two, the "parallel" split axes would run concurrently under the
# detector too, but the test would take ~4x longer.
RACES = pltpu.InterpretParams(detect_races=True)


# Interpret-mode kernels are big CPU programs; LLVM optimisation costs more than it saves here.
_QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _run(f, *args):
    return jax.jit(f).lower(*args).compile(_QUICK_COMPILE)(*args)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _case(seed, kind, dtype=jnp.float32):
    """Random tiny shapes; batch 3 = one ragged example, one all-padded, one shorter than l."""
    rng = np.random.default_rng(seed)
    n, l, d = int(rng.integers(40, 71)), int(rng.integers(3, 10)), int(rng.choice([8, 16, 32]))
    lq, lk = (l, n) if kind == "pack" else (n, l)
    q, k, v = (jnp.asarray(rng.normal(size=(3, m, 2, d)), dtype) for m in (lq, lk, lk))
    ragged = int(rng.integers(l + 1, n)) if kind == "pack" else lk
    lengths = jnp.array([ragged, 0, int(rng.integers(1, l))])
    return q, k, v, jnp.arange(lk)[None, :] < lengths[:, None]


def _races_found():
    # The detector's state is not public API; warn (not skip) if a jax release moves it.
    try:
        races = importlib.import_module(
            "jax._src.pallas.mosaic.interpret.interpret_pallas_call").races
    except (ImportError, AttributeError):
        warnings.warn("TPU interpret race-detector state not found in this jax; not checked")
        return False
    return bool(races is not None and races.races_found)


def _check(fn, ref, q, k, v, mask, tol, **kw):
    def run(f, q, k, v, g):
        out, vjp = jax.vjp(lambda q, k, v: f(q, k, v, mask), q, k, v)
        return (out, *vjp(g))

    g = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), q.dtype)
    # Float32 kernels follow JAX's matmul precision (Mosaic's default contraction may be
    # lower than float32 on a TPU); "highest" asks for float32, which a 1e-5 comparison needs.
    highest = (jax.default_matmul_precision("highest") if q.dtype == jnp.float32
               else contextlib.nullcontext())
    with highest:
        got = jax.block_until_ready(
            _run(lambda *a: run(lambda *x: fn(*x, **kw), *a), q, k, v, g))
    assert not _races_found(), "the TPU interpreter's race detector reported a data race"
    up = lambda x: x.astype(jnp.float32)  # bf16 cases compare with float32 math on the same inputs
    rate = {n: kw[n] for n in ("dropout_rate", "dropout_seed") if n in kw}
    want = _run(lambda *a: run(lambda *x: ref(*x, **rate), *a), up(q), up(k), up(v), up(g))
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        err = _rel(a, b)
        assert err < tol, f"{name}: norm-wise relative error ||a-b||/||b|| = {err:.2e} >= {tol}"
        assert np.all(np.asarray(a[1]) == 0.0), f"{name} of the all-padded example is not zero"
        assert np.all(np.isfinite(np.asarray(a, np.float32))), f"{name} is not finite"


@pytest.mark.parametrize("rate", [0.0, 0.25])
@pytest.mark.parametrize("kind", ["pack", "unpack"])
def test_float32_matches_reference(kind, rate):
    q, k, v, mask = _case(10 + (kind == "pack") + 2 * (rate > 0), kind)
    # Small blocks: several blocks with a ragged last one (pack: 2 query blocks when l > 8);
    # two splits of the streamed axis (pack: split-K forward/dq; unpack: split queries in dk/dv).
    fn, ref = ((pallas_tpu.pack_attention, reference.pack_attention) if kind == "pack"
               else (pallas_tpu.unpack_attention, reference.unpack_attention))
    _check(fn, ref, q, k, v, mask, F32_TOL, interpret=RACES, block_q=8 if kind == "pack" else 16,
           block_k=16 if kind == "pack" else None, num_splits=2, dropout_rate=rate,
           dropout_seed=SEED)


def test_default_blocks_and_bfloat16():
    # One kind only: the bf16 casts are the same code for pack and unpack; interpret is slow.
    q, k, v, mask = _case(21, "pack", jnp.bfloat16)
    _check(pallas_tpu.pack_attention, reference.pack_attention, q, k, v, mask, BF16_TOL,
           interpret=True, dropout_rate=0.1, dropout_seed=SEED)


@pytest.mark.parametrize("kind", ["pack", "unpack"])
def test_lowers_to_mosaic(kind):
    # Pallas -> Mosaic MLIR lowering (block-shape rules included) runs without a TPU.
    b, h, d, n, l = 2, 8, 64, 2048, 256 if kind == "unpack" else 128
    lq, lk = (l, n) if kind == "pack" else (n, l)
    fn = getattr(pallas_tpu, f"{kind}_attention")

    def f(q, k, v, mask, g):
        out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, mask, dropout_rate=0.1,
                                              dropout_seed=SEED), q, k, v)
        return out, vjp(g)

    spec = lambda m: jax.ShapeDtypeStruct((b, m, h, d), jnp.bfloat16)
    exp = export.export(jax.jit(f), platforms=["tpu"])(
        spec(lq), spec(lk), spec(lk), jax.ShapeDtypeStruct((b, lk), jnp.bool_), spec(lq))
    assert exp.mlir_module().count("stablehlo.custom_call @tpu_custom_call") == 3
