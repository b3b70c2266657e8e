"""The Triton kernels (ops/pallas_gpu.py) in Pallas interpret mode on the CPU (compiled on a
GPU backend), against the reference: outputs and dq, dk, dv under a random cotangent; also that they lower to Triton IR
(no GPU needed for that) and the impl dispatch in ops/__init__.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from luna_lra import ops
from kernel_checks import BF16_TOL, F32_TOL, SEED, case, check, rel
from luna_lra.ops import pallas_gpu, reference

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
    fn, ref = ((pallas_gpu.pack_attention, reference.pack_attention) if kind == "pack"
               else (pallas_gpu.unpack_attention, reference.unpack_attention))
    _check(fn, ref, q, k, v, mask, F32_TOL, interpret=INTERPRET, block_q=16, block_k=16,
           num_splits=2, dropout_rate=rate, dropout_seed=SEED)


@pytest.mark.parametrize("kind", ["pack", "unpack"])
def test_default_blocks_and_bfloat16(kind):
    q, k, v, mask = case(20 + (kind == "pack"), kind, jnp.bfloat16)
    fn, ref = ((pallas_gpu.pack_attention, reference.pack_attention) if kind == "pack"
               else (pallas_gpu.unpack_attention, reference.unpack_attention))
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
    opt = dict(plan.options)
    assert opt["dq_block_k"] < plan.block_k and opt["dkdv_block_k"] < plan.block_k
    assert opt["dkdv_block_q"] < plan.block_q
    fn, ref = ((pallas_gpu.pack_attention, reference.pack_attention) if kind == "pack"
               else (pallas_gpu.unpack_attention, reference.unpack_attention))
    _check(fn, ref, q, k, v, mask, F32_TOL, interpret=INTERPRET, dropout_rate=0.1,
           dropout_seed=SEED)


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
    b, h, d, n, l = 2, 8, 64, 1024, 256 if kind == "unpack" else 128
    lq, lk = (l, n) if kind == "pack" else (n, l)
    fn = getattr(pallas_gpu, f"{kind}_attention")

    def f(q, k, v, mask, g):
        out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, mask, dropout_rate=0.1,
                                              dropout_seed=SEED), q, k, v)
        return out, vjp(g)

    spec = lambda m: jax.ShapeDtypeStruct((b, m, h, d), jnp.bfloat16)
    exp = export.export(jax.jit(f), platforms=["cuda"], disabled_checks=[
        export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(
            spec(lq), spec(lk), spec(lk), jax.ShapeDtypeStruct((b, lk), jnp.bool_), spec(lq))
    assert exp.mlir_module().count("__gpu$xla.gpu.triton") == 3  # fwd, dq, dkdv


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
    # As if a JAX without Pallas's Triton backend ran on a GPU: auto takes the reference,
    # an explicit "pallas" reports the import error.
    def missing(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(ops, "resolve_impl", lambda impl, **kw: "pallas_gpu")
    monkeypatch.setattr(ops.importlib, "import_module", missing)
    q, k = jnp.zeros((1, 16, 2, 64)), jnp.zeros((1, 256, 2, 64))
    assert ops._pick("auto", q, k, False) == (reference, {})
    with pytest.raises(ImportError, match="pallas_gpu"):
        ops._pick("pallas", q, k, False)
