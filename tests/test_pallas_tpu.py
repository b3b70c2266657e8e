"""The Mosaic kernels (ops/pallas_tpu.py) in TPU interpret mode on the CPU, with the race
detector on, against the reference: outputs and dq, dk, dv under a random cotangent; also that
they lower to Mosaic (no TPU needed for that; Mosaic's own compile passes are not run)."""

import importlib
import warnings

import jax
import jax.numpy as jnp
import pytest
from jax import export
from jax.experimental.pallas import tpu as pltpu

from kernel_checks import BF16_TOL, F32_TOL, SEED, case, check
from luna_lra.ops import pallas_tpu, reference

# One simulated core: with two, the "parallel" split axes would run concurrently under the
# detector too, but the test would take ~4x longer.
RACES = pltpu.InterpretParams(detect_races=True)


def _races_found():
    # The detector's state is not public API; warn (not skip) if a jax release moves it.
    try:
        races = importlib.import_module(
            "jax._src.pallas.mosaic.interpret.interpret_pallas_call").races
    except (ImportError, AttributeError):
        warnings.warn("TPU interpret race-detector state not found in this jax; not checked")
        return False
    return bool(races is not None and races.races_found)


def _no_races():
    assert not _races_found(), "the TPU interpreter's race detector reported a data race"


def _check(fn, ref, q, k, v, mask, tol, **kw):
    check(fn, ref, q, k, v, mask, tol, after_kernel=_no_races, **kw)


@pytest.mark.parametrize("rate", [0.0, 0.25])
@pytest.mark.parametrize("kind", ["pack", "unpack"])
def test_float32_matches_reference(kind, rate):
    q, k, v, mask = case(10 + (kind == "pack") + 2 * (rate > 0), kind)
    # Small blocks: several blocks with a ragged last one (pack: 2 query blocks when l > 8);
    # two splits of the streamed axis (pack: split-K forward/dq; unpack: split queries in dk/dv).
    fn, ref = ((pallas_tpu.pack_attention, reference.pack_attention) if kind == "pack"
               else (pallas_tpu.unpack_attention, reference.unpack_attention))
    _check(fn, ref, q, k, v, mask, F32_TOL, interpret=RACES, block_q=8 if kind == "pack" else 16,
           block_k=16 if kind == "pack" else None, num_splits=2, dropout_rate=rate,
           dropout_seed=SEED)


def test_default_blocks_and_bfloat16():
    # One kind only: the bf16 casts are the same code for pack and unpack; interpret is slow.
    q, k, v, mask = case(21, "pack", jnp.bfloat16)
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
