"""Luna pack/unpack attention as Pallas kernels lowered through Triton (NVIDIA, A100 and newer).

Same signature and numerics as reference.py (float32 softmax, key padding mask, all-masked
rows -> 0, the counter-based dropout hash). Each call is a jax.custom_vjp with three kernels:

  fwd   grid (q block, batch, head, key split): one query block stays in registers while the
        program streams key blocks with an online softmax; writes out and row logsumexp. Pack
        (few queries, many keys) splits the key axis over programs when batch*heads is small
        and combines the partial (out, lse) afterwards.
  dq    same grid: recompute P from q, k and the lse, accumulate dq over key blocks
        (dq_block_k at a time, smaller than the forward's: the backward holds more tiles).
  dkdv  grid (key block, batch, head, query split): one block of dkdv_block_k keys, loop over
        query blocks of dkdv_block_q. When there are few key blocks (unpack: a short key side)
        the queries are split over programs and the partial dk, dv summed.

The kernels read [batch, len, heads, dim] in place (block index maps pick the head), so no
transposes; lengths are zero-padded to block multiples and masked, the head dim to a power of
two >= 16 (Triton's dot).
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from luna_lra.ops import _pallas_common as common

_TARGET_PROGRAMS = 256  # about two waves of CTAs on a 108..132-SM card; split below that
NUM_STAGES = 2  # software pipelining depth of the key/query loops
DQ_BLOCK_K, DKDV_BLOCK_K, DKDV_BLOCK_Q = 32, 64, 32  # backward blocks, at most the forward's


def pack_attention(q, k, v, key_mask, *, dropout_rate=0.0, dropout_rng=None, dropout_seed=None,
                   interpret=False, block_q=None, block_k=None, num_splits=None):
    """Pack: q = P side [batch, l, heads, head_dim]; k, v = X side [batch, n, heads, head_dim];
    key_mask [batch, n]. block_q/block_k/num_splits override the heuristics (tests, tuning)."""
    return common.attention(
        _backend, "pack", q, k, v, key_mask, dropout_rate=dropout_rate, dropout_rng=dropout_rng,
        dropout_seed=dropout_seed, interpret=interpret, block_q=block_q, block_k=block_k,
        num_splits=num_splits)


def unpack_attention(q, k, v, key_mask, *, dropout_rate=0.0, dropout_rng=None, dropout_seed=None,
                     interpret=False, block_q=None, block_k=None, num_splits=None):
    """Unpack: q = X side [batch, n, heads, head_dim]; k, v = packed side [batch, l, heads,
    head_dim]; key_mask [batch, l]. The whole key side is one block unless block_k says less."""
    return common.attention(
        _backend, "unpack", q, k, v, key_mask, dropout_rate=dropout_rate, dropout_rng=dropout_rng,
        dropout_seed=dropout_seed, interpret=interpret, block_q=block_q, block_k=block_k,
        num_splits=num_splits)


def make_plan(kind, b, h, lq, lk, d, dtype, rate, interpret, *, block_q, block_k, num_splits):
    pow2 = lambda x: max(16, pl.next_power_of_2(x))  # Triton tiles: powers of 2, dot dims >= 16
    # Limits found by compiling for sm_90 (python -m luna_lra.triton_compile): float32 dot
    # operands at head_dim 128 pass H100's 227 KiB of shared memory at 128 query rows, and
    # float32 (FMA, not tensor-core) dots spill registers at [32, 256] score tiles.
    itemsize = jnp.dtype(dtype).itemsize
    if kind == "pack":  # all (few) queries in one block, up to 128; stream the keys
        bq = block_q or min(pow2(lq), 64 if d * itemsize > 256 else 128)
        bk = block_k or min(pow2(lk), 128 if d <= 64 else 64)
    else:  # the whole short key side in one block; stream the queries
        bk = block_k or pow2(lk)
        rows = 64 if bk <= 128 else 32 if itemsize < 4 else 16  # s tile [bq, bk] in registers
        bq = block_q or min(pow2(lq), rows)
    for name, blk in (("block_q", bq), ("block_k", bk)):
        if blk < 16 or blk & (blk - 1):
            raise ValueError(f"{name}={blk}: Triton blocks must be powers of 2, at least 16")
    dp = pow2(d)
    # The backward kernels hold more [rows, keys] tiles and two accumulators, so they take
    # smaller blocks (powers of 2 that divide the forward's): dq walks keys in dq_block_k steps,
    # dkdv owns dkdv_block_k keys and walks queries in dkdv_block_q steps.
    dq_bk = min(bk, block_k or DQ_BLOCK_K)
    dkdv_bk = min(bk, block_k or DKDV_BLOCK_K)
    dkdv_bq = min(bq, block_q or DKDV_BLOCK_Q)
    nqb, nkb = -(-lq // bq), -(-lk // bk)
    ks = num_splits or common.auto_splits(b * h * nqb, nkb, _TARGET_PROGRAMS)
    dkdv_nqb, dkdv_nkb = nqb * (bq // dkdv_bq), nkb * (bk // dkdv_bk)
    qs = num_splits or common.auto_splits(b * h * dkdv_nkb, dkdv_nqb, _TARGET_PROGRAMS)
    warps = lambda rows, cols: 8 if dp > 64 or rows * cols >= 64 * 128 else 4
    return common.Plan(
        block_q=bq, block_k=bk, q_splits=common.split(dkdv_nqb, qs)[0],
        k_splits=common.split(nkb, ks)[0], head_dim=dp, scale=d**-0.5, rate=rate,
        interpret=bool(interpret),
        options=(("dkdv_block_k", dkdv_bk), ("dkdv_block_q", dkdv_bq), ("dkdv_warps",
                 warps(dkdv_bq, dkdv_bk)), ("dq_block_k", dq_bk), ("dq_warps", warps(bq, dq_bk)),
                 ("fwd_warps", warps(bq, bk))))


def _call(plan, kernel, name, grid, in_specs, out_specs, out_shape, num_warps):
    return pl.pallas_call(
        kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
        compiler_params=plgpu.CompilerParams(num_warps=num_warps,
                                             num_stages=NUM_STAGES),
        interpret=plan.interpret, name=name)


def _pid():
    return tuple(pl.program_id(a) for a in range(4))


# Grids are (outer block, batch, head, split). Block specs over [B, L, H, D] (rows of one head),
# [B, H, L, 1] row statistics, and partial results [S, B, L, H, D]; `outer`: the rows are the
# grid's outer block, else the whole (padded) length, which the kernel walks itself.
def _rows(blk, d, outer):
    return pl.BlockSpec((None, blk, None, d), lambda *g: (g[1], g[0] if outer else 0, g[2], 0))


def _stats(blk, outer):
    return pl.BlockSpec((None, None, blk, 1), lambda *g: (g[1], g[2], g[0] if outer else 0, 0))


def _parts(blk, d):
    return pl.BlockSpec((None, None, blk, None, d), lambda *g: (g[3], g[1], g[0], g[2], 0))


_SEED = pl.BlockSpec((1,), lambda *g: (0,))


# ------------------------------------------------------------------------------- forward

def _fwd_kernel(seed_ref, q_ref, k_ref, v_ref, mask_ref, o_ref, lse_ref, *, plan, nkb, per):
    i, b, h, s = _pid()
    bq, bk = plan.block_q, plan.block_k
    q = q_ref[...]

    def body(j, carry):
        ks = pl.ds(pl.multiple_of(j * bk, bk), bk)
        ok = common.key_ok(mask_ref[ks][None, :], (bq, bk))
        sc = common.scores(q, k_ref[ks, :], ok, plan.scale)
        keep = common.keep_mask(plan, seed_ref[0], b, h, i * bq, j * bk, (bq, bk))
        return common.online_softmax_step(*carry, sc, ok, v_ref[ks, :], keep)

    init = (jnp.full((bq, 1), common.NEG, jnp.float32), jnp.zeros((bq, 1), jnp.float32),
            jnp.zeros((bq, plan.head_dim), jnp.float32))
    m, l, acc = lax.fori_loop(s * per, jnp.minimum((s + 1) * per, nkb), body, init)
    out, lse = common.finish_softmax(plan, m, l, acc)
    o_ref[...] = out.astype(o_ref.dtype)
    lse_ref[...] = lse


def fwd(plan, q, k, v, mask, seed):
    (b, lq, h, d), lk = q.shape, k.shape[1]
    nqb, nkb = lq // plan.block_q, lk // plan.block_k
    ns, per = common.split(nkb, plan.k_splits)
    o_dtype = q.dtype if ns == 1 else jnp.float32  # partials stay float32 for the combine
    kernel = functools.partial(_fwd_kernel, plan=plan, nkb=nkb, per=per)
    return _call(
        plan, kernel, "luna_attn_fwd", (nqb, b, h, ns),
        [_SEED, _rows(plan.block_q, d, True), _rows(lk, d, False), _rows(lk, d, False),
         pl.BlockSpec((None, lk), lambda *g: (g[1], 0))],
        [_parts(plan.block_q, d),
         pl.BlockSpec((None, None, None, plan.block_q, 1), lambda *g: (g[3], g[1], g[2], g[0], 0))],
        [jax.ShapeDtypeStruct((ns, b, lq, h, d), o_dtype),
         jax.ShapeDtypeStruct((ns, b, h, lq, 1), jnp.float32)],
        dict(plan.options)["fwd_warps"],
    )(seed, q, k, v, mask)


# ------------------------------------------------------------------------------ backward

def _dq_kernel(seed_ref, q_ref, k_ref, v_ref, mask_ref, do_ref, lse_ref, delta_ref, dq_ref, *,
               plan, bk, nkb, per):
    i, b, h, s = _pid()
    bq = plan.block_q
    q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]

    def body(j, dq):
        ks = pl.ds(pl.multiple_of(j * bk, bk), bk)
        k = k_ref[ks, :]
        ok = common.key_ok(mask_ref[ks][None, :], (bq, bk))
        sc = common.scores(q, k, ok, plan.scale)
        keep = common.keep_mask(plan, seed_ref[0], b, h, i * bq, j * bk, (bq, bk))
        _, ds = common.backward_tile(plan, sc, ok, lse, v_ref[ks, :], do, delta, keep)
        return dq + common.dot(ds, k)

    dq = lax.fori_loop(s * per, jnp.minimum((s + 1) * per, nkb), body,
                       jnp.zeros((bq, plan.head_dim), jnp.float32))
    dq_ref[...] = (dq * plan.scale).astype(dq_ref.dtype)


def dq(plan, q, k, v, mask, seed, do, lse, delta):
    (b, lq, h, d), lk = q.shape, k.shape[1]
    opt = dict(plan.options)
    bk = opt["dq_block_k"]  # divides block_k: the key splits are the forward's
    nqb, nkb = lq // plan.block_q, lk // bk
    ns, per = common.split(lk // plan.block_k, plan.k_splits)
    kernel = functools.partial(_dq_kernel, plan=plan, bk=bk, nkb=nkb,
                               per=per * (plan.block_k // bk))
    return _call(
        plan, kernel, "luna_attn_dq", (nqb, b, h, ns),
        [_SEED, _rows(plan.block_q, d, True), _rows(lk, d, False), _rows(lk, d, False),
         pl.BlockSpec((None, lk), lambda *g: (g[1], 0)), _rows(plan.block_q, d, True),
         _stats(plan.block_q, True), _stats(plan.block_q, True)],
        _parts(plan.block_q, d),
        jax.ShapeDtypeStruct((ns, b, lq, h, d), q.dtype if ns == 1 else jnp.float32),
        opt["dq_warps"],
    )(seed, q, k, v, mask, do, lse, delta)


def _dkdv_kernel(seed_ref, q_ref, k_ref, v_ref, mask_ref, do_ref, lse_ref, delta_ref, dk_ref,
                 dv_ref, *, plan, bq, bk, nqb, per):
    j, b, h, s = _pid()
    k, v = k_ref[...], v_ref[...]
    ok = common.key_ok(mask_ref[...][None, :], (bq, bk))

    def body(i, carry):
        qs = pl.ds(pl.multiple_of(i * bq, bq), bq)
        q, do = q_ref[qs, :], do_ref[qs, :]
        sc = common.scores(q, k, ok, plan.scale)
        keep = common.keep_mask(plan, seed_ref[0], b, h, i * bq, j * bk, (bq, bk))
        pd, ds = common.backward_tile(plan, sc, ok, lse_ref[qs, :], v, do, delta_ref[qs, :], keep)
        return carry[0] + common.dot(ds.T, q), carry[1] + common.dot(pd.T, do)

    zeros = jnp.zeros((bk, plan.head_dim), jnp.float32)
    dk, dv = lax.fori_loop(s * per, jnp.minimum((s + 1) * per, nqb), body, (zeros, zeros))
    dk_ref[...] = (dk * plan.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def dkdv(plan, q, k, v, mask, seed, do, lse, delta):
    (b, lq, h, d), lk = q.shape, k.shape[1]
    opt = dict(plan.options)
    bq, bk = opt["dkdv_block_q"], opt["dkdv_block_k"]  # divide the padded lengths
    nqb, nkb = lq // bq, lk // bk
    ns, per = common.split(nqb, plan.q_splits)
    kernel = functools.partial(_dkdv_kernel, plan=plan, bq=bq, bk=bk, nqb=nqb, per=per)
    part = jax.ShapeDtypeStruct((ns, b, lk, h, d), k.dtype if ns == 1 else jnp.float32)
    return _call(
        plan, kernel, "luna_attn_dkdv", (nkb, b, h, ns),
        [_SEED, _rows(lq, d, False), _rows(bk, d, True), _rows(bk, d, True),
         pl.BlockSpec((None, bk), lambda *g: (g[1], g[0])), _rows(lq, d, False),
         _stats(lq, False), _stats(lq, False)],
        [_parts(bk, d), _parts(bk, d)],
        [part, part],
        opt["dkdv_warps"],
    )(seed, q, k, v, mask, do, lse, delta)


_backend = sys.modules[__name__]  # _pallas_common calls make_plan, fwd, dq, dkdv from here
