"""The Triton kernels (ops/pallas_gpu.py) in Pallas interpret mode on the CPU (compiled on a
GPU backend), against the reference: outputs and dq, dk, dv under a random cotangent, at tiny
shapes and at the plans make_plan picks for the shapes the models run; also that they lower to
Triton IR with masked loads and stores exactly where a block passes an array's end (no GPU
needed for that) and the impl dispatch in ops/__init__.py."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from luna_lra import ops
from kernel_checks import (BF16_TOL, F32_TOL, SEED, case, check, kernel_and_oracle, lowering_case,
                           plan_id, real_case, rel)
from luna_lra.ops import _pallas_common as common
from luna_lra.ops import pallas_gpu, reference, triton_compile

# Interpret mode on the CPU; on a GPU backend the same tests check the compiled Triton kernels.
INTERPRET = jax.default_backend() != "gpu"


def _check(fn, ref, q, k, v, mask, tol, **kw):
    check(fn, ref, q, k, v, mask, tol, quick_compile=INTERPRET, **kw)


@pytest.mark.parametrize("rate", [0.0, 0.25])
@pytest.mark.parametrize("kind", ["pack", "unpack"])
def test_float32_matches_reference(kind, rate):
    q, k, v, mask = case(10 + (kind == "pack") + 2 * (rate > 0), kind)
    # Small blocks: several blocks with a ragged last one; two splits of the streamed axis
    # (pack: split-K forward/dq with the combine; unpack: split queries in dk/dv).
    fn, ref = kernel_and_oracle(pallas_gpu, kind)
    _check(fn, ref, q, k, v, mask, F32_TOL, interpret=INTERPRET, block_q=16, block_k=16,
           num_splits=2, dropout_rate=rate, dropout_seed=SEED)


@pytest.mark.parametrize("kind", ["pack", "unpack"])
def test_default_blocks_and_bfloat16(kind):
    q, k, v, mask = case(20 + (kind == "pack"), kind, jnp.bfloat16)
    fn, ref = kernel_and_oracle(pallas_gpu, kind)
    _check(fn, ref, q, k, v, mask, BF16_TOL, interpret=INTERPRET, dropout_rate=0.1,
           dropout_seed=SEED)


@pytest.mark.parametrize("kind", ["pack", "unpack"])
def test_backward_blocks_smaller_than_forward(kind):
    # Default blocks at lengths where dq walks keys in half the forward's key block, dk/dv own
    # half a forward key block and walk queries in half a forward query block; dropout on and
    # automatic key splits (pack) so the dq loop bounds are rescaled split ranges.
    q, k, v, mask = case(40 + (kind == "pack"), kind)
    lq, lk = (40, 300) if kind == "pack" else (100, 100)
    q, k, v = (jnp.resize(x, (3, m, 2, x.shape[3])) for x, m in ((q, lq), (k, lk), (v, lk)))
    mask = jnp.arange(lk)[None, :] < jnp.array([lk - 7, 0, 5])[:, None]
    plan = pallas_gpu.make_plan(kind, 3, 2, lq, lk, q.shape[3], q.dtype, 0.1, True, block_q=None,
                                block_k=None, num_splits=None)
    assert plan.dq.block_k < plan.fwd.block_k and plan.dkdv.block_k < plan.fwd.block_k
    assert plan.dkdv.block_q < plan.fwd.block_q
    fn, ref = kernel_and_oracle(pallas_gpu, kind)
    _check(fn, ref, q, k, v, mask, F32_TOL, interpret=INTERPRET, dropout_rate=0.1,
           dropout_seed=SEED)


@pytest.mark.parametrize("kind", ["pack", "unpack"])
def test_head_dim_not_a_power_of_two(kind):
    # Tiles span 32 columns; the 8 past head_dim 24 are masked on every load and store.
    q, k, v, mask = case(50 + (kind == "pack"), kind, head_dim=24)
    fn, ref = kernel_and_oracle(pallas_gpu, kind)
    _check(fn, ref, q, k, v, mask, F32_TOL, interpret=INTERPRET, block_q=16, block_k=16,
           dropout_rate=0.1, dropout_seed=SEED)


B = common.BlockSizes
REAL_PLANS = [  # (kind, n, l, head_dim, dtype, dropout, heads): the plan make_plan picks
    (("pack", 1000, 256, 64, jnp.bfloat16, 0.1, 2),  # 128 x 128 tiles on 8 warps, split keys
     dict(fwd=B(128, 128, 8), dq=B(128, 32, 4), dkdv=B(32, 64, 4), k_splits=8, q_splits=4)),
    (("pack", 2000, 16, 64, jnp.bfloat16, 0.0, 2),
     dict(fwd=B(16, 128, 4), dq=B(16, 32, 4), dkdv=B(16, 64, 4), k_splits=16, q_splits=1)),
    (("pack", 4095, 16, 128, jnp.float32, 0.0, 1),
     dict(fwd=B(16, 64, 8), dq=B(16, 32, 8), dkdv=B(16, 64, 8), k_splits=64, q_splits=1)),
    (("pack", 4095, 256, 128, jnp.float32, 0.1, 1),
     dict(fwd=B(64, 64, 8), dq=B(64, 32, 8), dkdv=B(32, 64, 8), k_splits=32, q_splits=2)),
    (("unpack", 4095, 256, 128, jnp.bfloat16, 0.1, 1),  # split queries in dk/dv
     dict(fwd=B(32, 256, 8), dq=B(32, 32, 8), dkdv=B(32, 64, 8), k_splits=1, q_splits=32)),
    (("unpack", 4095, 16, 128, jnp.bfloat16, 0.0, 1),
     dict(fwd=B(64, 16, 8), dq=B(64, 16, 8), dkdv=B(32, 16, 8), k_splits=1, q_splits=128)),
    (("unpack", 1000, 256, 64, jnp.float32, 0.1, 2),
     dict(fwd=B(16, 256, 4), dq=B(16, 32, 4), dkdv=B(16, 64, 4), k_splits=1, q_splits=16)),
    (("unpack", 1000, 16, 64, jnp.float32, 0.0, 2),
     dict(fwd=B(64, 16, 4), dq=B(64, 16, 4), dkdv=B(32, 16, 4), k_splits=1, q_splits=32)),
]


@pytest.mark.parametrize("shape, want", REAL_PLANS, ids=map(plan_id, REAL_PLANS))
def test_real_plans(shape, want):
    # The blocks, warps and splits "auto" runs at the models' shapes, with n not a multiple of
    # any block; asserted first, so a change to make_plan cannot silently stop testing them.
    kind, n, l, d, dtype, rate, heads = shape
    q, k, v, mask = real_case(kind, n, l, d, dtype, heads)
    plan = pallas_gpu.make_plan(kind, 2, heads, q.shape[1], k.shape[1], d, dtype, rate,
                                INTERPRET, block_q=None, block_k=None, num_splits=None)
    assert {name: getattr(plan, name) for name in want} == want
    n_blocks = ((plan.fwd.block_k, plan.dq.block_k, plan.dkdv.block_k) if kind == "pack"
                else (plan.fwd.block_q, plan.dq.block_q, plan.dkdv.block_q))
    assert n % min(n_blocks), "n must leave each kernel a ragged last block"
    fn, ref = kernel_and_oracle(pallas_gpu, kind)
    _check(fn, ref, q, k, v, mask, F32_TOL if dtype == jnp.float32 else BF16_TOL,
           interpret=INTERPRET, dropout_rate=rate, dropout_seed=SEED)


def test_uneven_key_splits():
    # n = 70 -> 5 key blocks of 16; 4 requested splits become 3 splits of 2, 2 and 1 blocks.
    q, k, v, mask = case(30, "pack")
    k, v = (jnp.concatenate([x, x], axis=1)[:, :70] for x in (k, v))
    mask = jnp.concatenate([mask, mask], axis=1)[:, :70]
    _check(pallas_gpu.pack_attention, reference.pack_attention, q, k, v, mask, F32_TOL,
           interpret=INTERPRET, block_q=16, block_k=16, num_splits=4)


@pytest.mark.parametrize("kind", ["pack", "unpack"])
def test_lowers_to_triton(kind):
    # Pallas -> Triton IR lowering runs without a GPU (jax.export); PTX compilation does not.
    # n = 1000 is no block multiple, yet nothing is padded in HBM (masked loads instead).
    b, h, d, n, l = 2, 8, 64, 1000, 256 if kind == "unpack" else 128
    lq, lk = (l, n) if kind == "pack" else (n, l)
    f, specs = lowering_case(getattr(pallas_gpu, f"{kind}_attention"), b, h, d, lq, lk)
    exp = triton_compile.export_for_gpu(f, *specs)
    assert exp.mlir_module().count(triton_compile.CUSTOM_CALL) == 3  # fwd, dq, dkdv
    assert "stablehlo.pad" not in exp.mlir_module()


def _masked_and_plain(ttir, columns=None):
    """(masked, plain) counts of the tensor loads and stores in Triton IR (`tt.load ptr, mask,
    other` / `tt.store ptr, value, mask` against `tt.load ptr` / `tt.store ptr, value`);
    columns: only those of 2-d tiles with that many columns."""
    ops = re.findall(r"tt\.(?:load|store) (%[^:]*) : tensor<([\dx]+)x!tt\.ptr", ttir)
    ops = [args for args, shape in ops
           if columns is None or shape.count("x") == 1 and shape.endswith(f"x{columns}")]
    masked = sum(args.count(",") == 2 for args in ops)
    return masked, len(ops) - masked


@pytest.mark.parametrize("kind", ["pack", "unpack"])
def test_ragged_edges_are_masked_loads_and_stores(kind):
    # Every tensor access of every kernel is masked when n and l are not block multiples, and
    # every access of a [rows, 32] tile is at head_dim 24, so none reads or writes past an
    # array's end on a GPU (interpret mode cannot show that: it pads). At block multiples and
    # head_dim 32 none is.
    for n, l, d, columns, want_masked in ((1000, 9, 32, None, True), (1024, 16, 24, 32, True),
                                          (1024, 16, 32, None, False)):
        for x in triton_compile.lower_to_triton(kind, 2, 2, n, l, d, "bfloat16", 0.1):
            masked, plain = _masked_and_plain(x.ttir, columns)
            assert (masked > 0 and plain == 0) if want_masked else (masked == 0 and plain > 0), (
                n, l, d, x.kernel, masked, plain)


def test_dispatch():
    assert ops.resolve_impl("xla", "gpu") == "xla"
    assert ops.resolve_impl("pallas", "gpu") == "pallas_gpu"
    assert ops.resolve_impl("pallas", "tpu") == "pallas_tpu"
    assert ops.resolve_impl("auto", "tpu") == "pallas_tpu"
    assert ops.resolve_impl("auto", "cpu") == "xla"
    assert ops.resolve_impl("pallas", "cpu", interpret=True) == "pallas_gpu"
    with pytest.raises(ValueError, match="interpret"):
        ops.resolve_impl("pallas", "cpu")
    with pytest.raises(ValueError, match="impl"):
        ops.resolve_impl("cuda")
    q, k, v, mask = case(40, "pack")
    assert ops.kernel_supports(jnp.zeros((1, 128, 2, 64)), jnp.zeros((1, 4096, 2, 64)))
    assert not ops.kernel_supports(jnp.zeros((1, 128, 2, 8)), jnp.zeros((1, 4096, 2, 8)))
    assert not ops.kernel_supports(jnp.zeros((1, 512, 2, 64)), jnp.zeros((1, 4096, 2, 64)))
    if jax.default_backend() == "cpu":
        with pytest.raises(ValueError, match="GPU or TPU"):
            ops.pack_attention(q, k, v, mask, impl="pallas")
        np.testing.assert_array_equal(ops.pack_attention(q, k, v, mask, impl="auto"),
                                      ops.pack_attention(q, k, v, mask))
    out = ops.pack_attention(q, k, v, mask, impl="pallas", interpret=True)
    assert rel(out, reference.pack_attention(q, k, v, mask)) < F32_TOL


def test_auto_falls_back_when_the_pallas_backend_is_missing(monkeypatch):
    # As if a JAX without Pallas's Triton backend ran on a GPU: auto takes the XLA path,
    # an explicit "pallas" reports the import error.
    def missing(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(ops, "resolve_impl", lambda impl, **kw: "pallas_gpu")
    monkeypatch.setattr(ops.importlib, "import_module", missing)
    q, k = jnp.zeros((1, 16, 2, 64)), jnp.zeros((1, 256, 2, 64))
    assert ops._pick("auto", q, k, False) == (ops.xla, {})
    with pytest.raises(ImportError, match="pallas_gpu"):
        ops._pick("pallas", q, k, False)
