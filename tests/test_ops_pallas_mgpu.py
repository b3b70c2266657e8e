"""The Mosaic GPU kernels (ops/pallas_mgpu.py) in GPU interpret mode on the CPU, with the race
detector on, against the reference: outputs and dq, dk, dv under a random cotangent, at tiny
ragged shapes and at the blocks make_plan picks for the shapes the models run; that they lower
for an H100 (no GPU needed: Mosaic's own checks of layouts, wgmma shapes, TMA and shared
memory run in the lowering); and the impl dispatch between Mosaic GPU, Triton and XLA.

GPU interpret mode needs JAX >= 0.11: on older JAX the kernel tests skip, the dispatch tests
run. Interpret mode runs every SMEM access, TMA copy and wgmma as a host callback, so the
shapes are small: about 2 minutes on two CPU cores. On a Hopper GPU backend
(JAX_PLATFORMS=cuda, as the GPU script runs them) the same tests check the compiled kernels."""

import importlib
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernel_checks import BF16_TOL, F32_TOL, SEED, check, lowering_case, rel, run_compiled
from luna_lra import ops
from luna_lra.ops import _pallas_common as common
from luna_lra.ops import reference

HAS_MGPU = hasattr(plgpu, "InterpretGPUParams")
ON_GPU = jax.default_backend() == "gpu"  # else interpret mode on the CPU, race detector on


def _skip_reason():
    if not HAS_MGPU:
        return f"Mosaic GPU interpret mode needs JAX >= 0.11 (jax {jax.__version__})"
    if ON_GPU and not jax.devices()[0].compute_capability.startswith("9."):
        return "the compiled Mosaic GPU kernels need a Hopper GPU (sm_90: wgmma)"
    return None


needs_mgpu = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
F16_TOL = BF16_TOL / 4  # float16 keeps 3 more mantissa bits than bfloat16
TOL = {jnp.dtype(jnp.bfloat16): BF16_TOL, jnp.dtype(jnp.float16): F16_TOL,
       jnp.dtype(jnp.float32): F32_TOL}


def _mgpu():
    return importlib.import_module("luna_lra.ops.pallas_mgpu")


def _races():
    """The GPU interpreter's race-detector state (not public API: None if a jax moves it)."""
    try:
        return importlib.import_module(
            "jax._src.pallas.mosaic_gpu.interpret.interpret_pallas_call")
    except ImportError:
        warnings.warn("GPU interpret race-detector state not found in this jax; not checked")
        return None


def _check(kind, q, k, v, mask, **kw):
    detector = None if ON_GPU else _races()
    if detector is not None:
        detector.reset_gpu_interpret_mode_state()

    def no_races():
        assert detector is None or not detector.get_races().races_found, (
            "the GPU interpreter's race detector reported a data race")

    fn = getattr(_mgpu(), f"{kind}_attention")
    ref = getattr(reference, f"{kind}_attention")
    check(fn, ref, q, k, v, mask, TOL[q.dtype], after_kernel=no_races, quick_compile=not ON_GPU,
          interpret=False if ON_GPU else plgpu.InterpretGPUParams(detect_races=True), **kw)


def _case(kind, n, l, d, dtype, batch=3, seed=0):
    """Random inputs (one head), the long side n and the short side l: example 0's real keys
    end inside a block, example 1 is all padding, example 2 (if batch 3) has fewer real keys
    than l."""
    rng = np.random.default_rng(seed)
    lq, lk = (l, n) if kind == "pack" else (n, l)
    q, k, v = (jnp.asarray(rng.normal(size=(batch, m, 1, d)), dtype) for m in (lq, lk, lk))
    lengths = jnp.array([lk - 5, 0, l - 1][:batch])
    return q, k, v, jnp.arange(lk)[None, :] < lengths[:, None]


@needs_mgpu
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("kind", ["pack", "unpack"])
def test_tiny_ragged_shapes(kind, dtype):
    # n = 150: three 64-row blocks, the last ragged, and no multiple of 8 (bfloat16: the long
    # blocks come in plain SMEM rows and are retiled; float32: its split pieces are made in
    # whole tiles, and the outputs leave through plain rows); l = 37: the short side padded to
    # 40 rows and walked in three 16-column chunks (forced), the last ragged; two splits of
    # the three long blocks (the second split's last block lies wholly past the end); dropout
    # on.
    q, k, v, mask = _case(kind, 150, 37, 64, dtype)
    chunk = dict(block_q=16) if kind == "pack" else dict(block_k=16)
    _check(kind, q, k, v, mask, num_splits=2, dropout_rate=0.25, dropout_seed=SEED, **chunk)


B = common.BlockSizes
REAL_PLANS = [  # (kind, n, l, head_dim, dtype, dropout): blocks (R, C as block_q/block_k)
    (("pack", 200, 256, 128, jnp.bfloat16, 0.1),  # the most SMEM: pack dk/dv, 211 KiB
     dict(fwd=B(64, 64), dq=B(64, 64), dkdv=B(32, 64))),
    (("unpack", 200, 256, 64, jnp.float16, 0.0),
     dict(fwd=B(64, 128), dq=B(64, 128), dkdv=B(64, 64))),
    (("pack", 131, 16, 64, jnp.float16, 0.1),  # n no multiple of 8: plain SMEM rows
     dict(fwd=B(16, 64), dq=B(16, 64), dkdv=B(16, 64))),
    (("unpack", 131, 128, 128, jnp.bfloat16, 0.1),
     dict(fwd=B(64, 64), dq=B(64, 64), dkdv=B(64, 32))),
    # float32 at "highest" (three bfloat16 pieces) at the most SMEM: chunks of 32, one TMA
    # stage, the per-block kernels in parts of the short side (as
    # test_float32_short_side_in_parts counts), partial results combined
    (("pack", 200, 256, 128, jnp.float32, 0.1),
     dict(fwd=B(32, 64), dq=B(32, 64), dkdv=B(32, 64), pieces=3, stages=1)),
    (("unpack", 131, 256, 128, jnp.float32, 0.1),
     dict(fwd=B(64, 32), dq=B(64, 32), dkdv=B(64, 32), pieces=3, stages=1)),
    (("unpack", 200, 16, 64, jnp.float32, 0.0),  # the recipes' l and head_dim: fits as bfloat16
     dict(fwd=B(64, 16), dq=B(64, 16), dkdv=B(64, 16), pieces=3, stages=2)),
]


@needs_mgpu
@pytest.mark.parametrize("shape, want", REAL_PLANS,
                         ids=[f"{s[0]}-n{s[1]}-l{s[2]}-d{s[3]}-{jnp.dtype(s[4]).name}-p{s[5]}"
                              for s, _ in REAL_PLANS])
def test_real_plans(shape, want):
    # The blocks "auto" runs at the models' l and head_dim (asserted first, so a change to
    # make_plan cannot silently stop testing them), at a small n with a ragged last block,
    # one split: each program pipelines all its long blocks, as at the models' sizes (below).
    kind, n, l, d, dtype, rate = shape
    q, k, v, mask = _case(kind, n, l, d, dtype, batch=2)
    with jax.default_matmul_precision("highest"):  # as check() runs float32
        plan = _mgpu().make_plan(kind, 2, 1, q.shape[1], k.shape[1], d, dtype, rate, False,
                                 block_q=None, block_k=None, num_splits=None)
    assert {name: getattr(plan, name) for name in want} == want
    _check(kind, q, k, v, mask, num_splits=1, dropout_rate=rate, dropout_seed=SEED)


@needs_mgpu
def test_float32_follows_the_matmul_precision():
    # float32 runs as bfloat16 pieces (pallas_mgpu's docstring): one under "bfloat16", two by
    # default and under "high" (bfloat16 x 3: each operand to 2^-16 of its value), three under
    # "highest" (x 6, as check() runs float32: float32 to its last bits). Forward only; the
    # other tests check the gradients at "highest".
    mgpu = _mgpu()
    q, k, v, mask = _case("pack", 150, 37, 64, jnp.float32, batch=2)
    plan = lambda: mgpu.make_plan("pack", 2, 1, 37, 150, 64, jnp.float32, 0.0, False,
                                  block_q=None, block_k=None, num_splits=None)
    assert plan().pieces == 2
    interpret = False if ON_GPU else plgpu.InterpretGPUParams()
    with jax.default_matmul_precision("highest"):
        want = run_compiled(reference.pack_attention, q, k, v, mask)
    errors = {}
    for precision, pieces in (("bfloat16", 1), ("high", 2), ("highest", 3)):
        with jax.default_matmul_precision(precision):
            assert plan().pieces == pieces
            errors[pieces] = rel(run_compiled(lambda *a: mgpu.pack_attention(
                *a, interpret=interpret), q, k, v, mask), want)
    assert errors[1] < BF16_TOL and errors[2] < 2**-16 and errors[3] < F32_TOL, errors
    assert errors[3] < errors[2] / 5 < errors[1] / 25, errors


@needs_mgpu
def test_splits_at_model_sizes():
    # Batch 32 x 8 heads at n = 4096: two splits of the 64 long blocks (about two waves of
    # 132 SMs), so each program pipelines 32 blocks; with one (batch, head) many splits.
    mgpu = _mgpu()
    for kind in ("pack", "unpack"):
        lq, lk = (256, 4096) if kind == "pack" else (4096, 256)
        plan = mgpu.make_plan(kind, 32, 8, lq, lk, 64, jnp.bfloat16, 0.0, False, block_q=None,
                              block_k=None, num_splits=None)
        assert (plan.k_splits, plan.q_splits) == ((2, 1) if kind == "pack" else (1, 2))
        plan = mgpu.make_plan(kind, 1, 1, lq, lk, 64, jnp.bfloat16, 0.0, False, block_q=None,
                              block_k=None, num_splits=None)
        assert max(plan.k_splits, plan.q_splits) == 64


@needs_mgpu
def test_refuses_what_it_does_not_take():
    mgpu = _mgpu()
    plan = lambda **kw: mgpu.make_plan(**dict(
        kind="pack", b=1, h=1, lq=16, lk=1024, d=64, dtype=jnp.bfloat16, rate=0.0,
        interpret=False, block_q=None, block_k=None, num_splits=None) | kw)
    with pytest.raises(ValueError, match="float32 inputs, got int8"):
        plan(dtype=jnp.int8)
    with pytest.raises(ValueError, match="at most 256"):
        plan(lq=512)
    with pytest.raises(ValueError, match="multiple of 64"):
        plan(block_k=32)


@needs_mgpu
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("kind", ["pack", "unpack"])
def test_lowers_for_h100(kind, dtype):
    # Mosaic GPU lowers in Python, without a GPU: its checks of layouts, wgmma operand shapes
    # and swizzles, TMA boxes and shared memory (H100's 227 KiB) run at the models' largest
    # blocks (l = 256, head_dim 128) and smallest (l = 16, head_dim 64), with n = 4,096 and a
    # CLS-lengthened 4,001 (bfloat16: plain SMEM rows). bfloat16: nothing is padded at the
    # recipes' lengths; at 4,001 only rows of the key mask or of the statistics (to 4,004), no
    # [B, n, H, D] array. float32's pieces are new arrays, the long side's padded to whole
    # 8-row tiles (to 4,008) as they are made.
    fn = getattr(_mgpu(), f"{kind}_attention")
    for n, l, d in ((4096, 256, 128), (4001, 16, 64), (4001, 128, 128)):
        lq, lk = (l, n) if kind == "pack" else (n, l)

        f, specs = lowering_case(fn, 2, 8, d, lq, lk, dtype)
        with common.abstract_gpu(90):
            module = export.export(jax.jit(f), platforms=["cuda"])(*specs).mlir_module()
        padded = re.findall(r"stablehlo\.pad .*-> tensor<([\dx]+)x\w+>", module)
        if dtype == jnp.float32:
            assert all(p == f"2x{common.round_up(n, 8)}x8x{d}" or p.count("x") < 3
                       for p in padded), padded
        else:
            assert (padded == [] if n % 4 == 0 else
                    padded and all(p.count("x") < 3 for p in padded)), padded


@needs_mgpu
def test_float32_short_side_in_parts():
    # At l = 256 and head_dim 128 float32's pieces of the whole short side do not fit in SMEM
    # beside the long blocks: the per-block kernels (pack dk/dv, unpack fwd and dq) run in
    # parts of the short side, one kernel each (test_real_plans checks their numbers); the
    # accumulating ones and bfloat16 in one.
    mgpu = _mgpu()
    calls = []
    real_call = mgpu._call
    for kind, dtype, want in (("pack", jnp.float32, 1 + 1 + 8), ("unpack", jnp.float32, 4 + 8 + 1),
                              ("pack", jnp.bfloat16, 3), ("unpack", jnp.bfloat16, 3)):
        lq, lk = (256, 4096) if kind == "pack" else (4096, 256)
        f, specs = lowering_case(getattr(mgpu, f"{kind}_attention"), 2, 8, 128, lq, lk, dtype)
        calls.clear()
        with pytest.MonkeyPatch.context() as patch, common.abstract_gpu(90):
            patch.setattr(mgpu, "_call", lambda *a: calls.append(1) or real_call(*a))
            export.export(jax.jit(f), platforms=["cuda"])(*specs)
        assert len(calls) == want, (kind, dtype)


# ------------------------------------------------------------------------------- dispatch

def test_dispatch():
    gpu = lambda impl, cc: ops.resolve_impl(impl, "gpu", compute_capability=cc)
    assert gpu("pallas", "9.0") == "pallas_mgpu" and gpu("auto", "9.0") == "pallas_mgpu"
    assert gpu("pallas", "8.0") == "pallas_gpu" and gpu("pallas", "10.0") == "pallas_gpu"
    assert gpu("mosaic", "8.0") == "pallas_mgpu" and gpu("triton", "9.0") == "pallas_gpu"
    assert gpu("auto", "7.5") == "xla"
    if not ON_GPU:  # no device to ask: Triton
        assert ops.resolve_impl("pallas", "gpu") == "pallas_gpu"
    assert ops.resolve_impl("mosaic", "tpu") == "pallas_tpu"
    assert ops.resolve_impl("mosaic", "cpu", interpret=True) == "pallas_mgpu"
    assert ops.resolve_impl("triton", "cpu", interpret=True) == "pallas_gpu"
    with pytest.raises(ValueError, match="GPU or TPU"):
        ops.resolve_impl("mosaic", "cpu")
    with pytest.raises(ValueError, match="needs a GPU"):
        ops.resolve_impl("triton", "tpu")
    bf16 = jnp.zeros((1, 4096, 2, 64), jnp.bfloat16)
    assert ops.kernel_supports(bf16[:, :256], bf16, "pallas_mgpu")
    assert not ops.kernel_supports(bf16[:, :256].astype(jnp.float32), bf16, "pallas_mgpu")
    assert not ops.kernel_supports(bf16[:, :512], bf16, "pallas_mgpu")
    assert not ops.kernel_supports(bf16[..., :32], bf16[..., :32], "pallas_mgpu")


def test_pallas_on_hopper_takes_triton_where_mosaic_does_not_go(monkeypatch):
    # As on an H100: bfloat16 goes to Mosaic GPU; float32 and l > 256 to Triton, also under
    # "auto"; without Mosaic GPU (JAX < 0.11) "pallas" and "auto" take Triton, "mosaic" fails.
    monkeypatch.setattr(ops, "resolve_impl", lambda impl, **kw: {
        "mosaic": "pallas_mgpu", "triton": "pallas_gpu"}.get(impl, "pallas_mgpu"))
    name = lambda impl, q, k: ops._pick(impl, q, k, False)[0].__name__.rsplit(".", 1)[1]
    q, k = jnp.zeros((1, 16, 2, 64), jnp.bfloat16), jnp.zeros((1, 1024, 2, 64), jnp.bfloat16)
    f32 = lambda x: x.astype(jnp.float32)
    if HAS_MGPU:
        assert name("pallas", q, k) == name("auto", q, k) == "pallas_mgpu"
    assert name("pallas", f32(q), f32(k)) == name("auto", f32(q), f32(k)) == "pallas_gpu"
    assert name("pallas", k[:, :512], k) == "pallas_gpu"

    real_import = importlib.import_module

    def without_mgpu(module):
        if module.endswith("pallas_mgpu"):
            raise ImportError("No module named 'pallas_mgpu'")
        return real_import(module)

    monkeypatch.setattr(ops.importlib, "import_module", without_mgpu)
    assert name("pallas", q, k) == name("auto", q, k) == "pallas_gpu"
    with pytest.raises(ImportError, match="pallas_mgpu"):
        ops._pick("mosaic", q, k, False)


@needs_mgpu
def test_mosaic_through_the_ops_entry_points():
    # impl="mosaic" runs the kernels (interpreted on the CPU) and is recorded as what ran.
    q, k, v, mask = _case("unpack", 64, 16, 64, jnp.bfloat16, batch=2)
    with ops.record_choices() as ran:
        out = ops.unpack_attention(q, k, v, mask, impl="mosaic", interpret=not ON_GPU)
    assert ran == [("unpack", "pallas_mgpu" + ("" if ON_GPU else " (interpret)"))]
    up = lambda x: x.astype(jnp.float32)
    assert rel(out, reference.unpack_attention(up(q), up(k), up(v), mask)) < BF16_TOL
