"""The Mosaic kernels (ops/pallas_tpu.py) in TPU interpret mode on the CPU, with the race
detector on, against the reference: outputs and dq, dk, dv under a random cotangent, at tiny
shapes and at the plans make_plan picks for the shapes the models run; also that they lower to
Mosaic with ragged lengths (no TPU needed for that; Mosaic's own compile passes are not run)."""

import importlib
import warnings

import jax
import jax.numpy as jnp
import pytest
from jax import export
from jax.experimental.pallas import tpu as pltpu

from kernel_checks import (BF16_TOL, F32_TOL, SEED, case, check, kernel_and_oracle, lowering_case,
                           plan_id, real_case)
from luna_lra.ops import _pallas_common as common
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
    fn, ref = kernel_and_oracle(pallas_tpu, kind)
    _check(fn, ref, q, k, v, mask, F32_TOL, interpret=RACES, block_q=8 if kind == "pack" else 16,
           block_k=16 if kind == "pack" else None, num_splits=2, dropout_rate=rate,
           dropout_seed=SEED)


def test_default_blocks_and_bfloat16():
    # One kind only: the bf16 casts are the same code for pack and unpack; interpret is slow.
    q, k, v, mask = case(21, "pack", jnp.bfloat16)
    _check(pallas_tpu.pack_attention, reference.pack_attention, q, k, v, mask, BF16_TOL,
           interpret=True, dropout_rate=0.1, dropout_seed=SEED)


REAL_PLANS = [  # (kind, n, l, head_dim, dtype, dropout, heads): the blocks make_plan picks
    (("pack", 1000, 16, 64, jnp.bfloat16, 0.1, 2), (16, 512)),
    (("pack", 4095, 256, 128, jnp.float32, 0.0, 1), (256, 512)),
    (("unpack", 1000, 256, 128, jnp.float32, 0.0, 1), (256, 256)),
    (("unpack", 4095, 16, 64, jnp.bfloat16, 0.1, 2), (256, 16)),
]


@pytest.mark.parametrize("shape, blocks", REAL_PLANS, ids=map(plan_id, REAL_PLANS))
def test_real_plans(shape, blocks):
    # The blocks "auto" runs at the models' shapes (one for all three kernels; batch x heads
    # fills the two cores, so no splits), with n not a block multiple: the last block along n
    # is partial.
    kind, n, l, d, dtype, rate, heads = shape
    q, k, v, mask = real_case(kind, n, l, d, dtype, heads)
    plan = pallas_tpu.make_plan(kind, 2, heads, q.shape[1], k.shape[1], d, dtype, rate, RACES,
                                block_q=None, block_k=None, num_splits=None)
    want = common.BlockSizes(*blocks)
    assert (plan.fwd, plan.dq, plan.dkdv, plan.k_splits, plan.q_splits) == (want,) * 3 + (1, 1)
    assert n % (plan.fwd.block_k if kind == "pack" else plan.fwd.block_q), "n must be ragged"
    fn, ref = kernel_and_oracle(pallas_tpu, kind)
    _check(fn, ref, q, k, v, mask, F32_TOL if dtype == jnp.float32 else BF16_TOL,
           interpret=RACES, dropout_rate=rate, dropout_seed=SEED)


@pytest.mark.parametrize("kind", ["pack", "unpack"])
def test_lowers_to_mosaic(kind):
    # Pallas -> Mosaic MLIR lowering (block-shape rules included) runs without a TPU; n = 2000
    # (ListOps' length) leaves a partial last block.
    b, h, d, n, l = 2, 8, 64, 2000, 256 if kind == "unpack" else 128
    lq, lk = (l, n) if kind == "pack" else (n, l)
    f, specs = lowering_case(getattr(pallas_tpu, f"{kind}_attention"), b, h, d, lq, lk)
    exp = export.export(jax.jit(f), platforms=["tpu"])(*specs)
    assert exp.mlir_module().count("stablehlo.custom_call @tpu_custom_call") == 3
    assert "stablehlo.pad" not in exp.mlir_module()  # partial blocks, not padded copies
