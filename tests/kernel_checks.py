"""Shared by the kernel tests (test_ops_pallas_*.py): random cases with ragged and all-padded
examples (tiny ones, and ones at the shapes the models run), and the kernel-vs-reference check
of outputs and dq, dk, dv."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from luna_lra.ops import reference

SEED = np.uint32(0xDEADBEEF)  # above 2**31: the kernels' int32 view must keep the seed's bits
F32_TOL, BF16_TOL = 1e-5, 1e-2

# Interpret-mode kernels are big CPU programs; LLVM optimisation costs more than it saves here.
QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def run_compiled(f, *args, quick=True):
    return jax.jit(f).lower(*args).compile(QUICK_COMPILE if quick else None)(*args)


def kernel_and_oracle(module, kind):
    """(module's pack/unpack_attention, the oracle's) for kind 'pack' or 'unpack'."""
    name = f"{kind}_attention"
    return getattr(module, name), getattr(reference, name)


def lowering_case(fn, b, h, d, lq, lk, dtype=jnp.bfloat16):
    """What the lowering tests export: fn's output and its gradients (dropout 0.1) as one
    function of (q, k, v, mask, output gradient), and those arguments' specs (dtype)."""
    def out_and_grads(q, k, v, mask, g):
        out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, mask, dropout_rate=0.1,
                                              dropout_seed=SEED), q, k, v)
        return out, vjp(g)

    spec = lambda m: jax.ShapeDtypeStruct((b, m, h, d), dtype)
    return out_and_grads, (spec(lq), spec(lk), spec(lk), jax.ShapeDtypeStruct((b, lk), jnp.bool_),
                           spec(lq))


def rel(a, b):
    """Norm-wise relative error ||a - b|| / ||b||."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def case(seed, kind, dtype=jnp.float32, head_dim=None):
    """Random tiny shapes; batch 3 = one ragged example, one all-padded, one shorter than l.
    head_dim: instead of a random one of 8, 16, 32."""
    rng = np.random.default_rng(seed)
    n, l, d = int(rng.integers(40, 71)), int(rng.integers(3, 10)), int(rng.choice([8, 16, 32]))
    d = head_dim or d
    lq, lk = (l, n) if kind == "pack" else (n, l)
    q, k, v = (jnp.asarray(rng.normal(size=(3, m, 2, d)), dtype) for m in (lq, lk, lk))
    ragged = int(rng.integers(l + 1, n)) if kind == "pack" else lk
    lengths = jnp.array([ragged, 0, int(rng.integers(1, l))])
    return q, k, v, jnp.arange(lk)[None, :] < lengths[:, None]


def real_case(kind, n, l, head_dim, dtype, heads):
    """Random inputs at a shape the models run: the long side n, the packed side l. Batch 2:
    example 0's real keys end inside a block (pack: 37 short of n; unpack: 3 short of l),
    example 1 is all padding."""
    rng = np.random.default_rng(n + l + head_dim)
    lq, lk = (l, n) if kind == "pack" else (n, l)
    q, k, v = (jnp.asarray(rng.normal(size=(2, m, heads, head_dim)), dtype) for m in (lq, lk, lk))
    lengths = jnp.array([lk - (37 if kind == "pack" else 3), 0])
    return q, k, v, jnp.arange(lk)[None, :] < lengths[:, None]


def plan_id(case):
    """A test id for a REAL_PLANS entry ((kind, n, l, head_dim, dtype, dropout, heads), want)."""
    (kind, n, l, d, dtype, rate, heads), _ = case
    return f"{kind}-n{n}-l{l}-d{d}-{jnp.dtype(dtype).name}-p{rate}-h{heads}"


def check(fn, ref, q, k, v, mask, tol, *, quick_compile=True, after_kernel=None, **kw):
    """fn(q, k, v, mask, **kw) against ref (float32 math, highest precision): out, dq, dk, dv
    within tol, zero for the all-padded example, finite. after_kernel() runs once the kernel has
    (e.g. to read a race detector)."""
    def fwd_bwd(f, q, k, v, g):
        out, vjp = jax.vjp(lambda q, k, v: f(q, k, v, mask), q, k, v)
        return (out, *vjp(g))

    g = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), q.dtype)
    # Float32 kernels follow JAX's matmul precision (TF32 dots by default on a GPU, as XLA's;
    # Mosaic's default may be lower too); "highest" gives IEEE float32, which 1e-5 needs.
    highest = (jax.default_matmul_precision("highest") if q.dtype == jnp.float32
               else contextlib.nullcontext())
    with highest:
        got = jax.block_until_ready(run_compiled(
            lambda *a: fwd_bwd(lambda *x: fn(*x, **kw), *a), q, k, v, g, quick=quick_compile))
    if after_kernel is not None:
        after_kernel()
    up = lambda x: x.astype(jnp.float32)  # bf16 cases compare with float32 math on the same inputs
    rate = {n: kw[n] for n in ("dropout_rate", "dropout_seed") if n in kw}
    with jax.default_matmul_precision("highest"):  # no TF32 in the reference on a GPU
        want = run_compiled(lambda *a: fwd_bwd(lambda *x: ref(*x, **rate), *a),
                            up(q), up(k), up(v), up(g), quick=quick_compile)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        err = rel(a, b)
        assert err < tol, f"{name}: norm-wise relative error ||a-b||/||b|| = {err:.2e} >= {tol}"
        assert np.all(np.asarray(a[1]) == 0.0), f"{name} of the all-padded example is not zero"
        assert np.all(np.isfinite(np.asarray(a, np.float32))), f"{name} is not finite"
