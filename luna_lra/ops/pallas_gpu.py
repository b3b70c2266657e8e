"""Luna pack/unpack attention as Pallas kernels lowered through Triton (NVIDIA, A100 and newer).

Same signature and numerics as reference.py (float32 softmax, key padding mask, all-masked
rows -> 0, the counter-based dropout hash). Each call is a jax.custom_vjp with three kernels:

  fwd   grid (q block, batch, head, key split): one query block stays in registers while the
        program streams key blocks with an online softmax; writes out and row logsumexp. Pack
        (few queries, many keys) splits the key axis over programs when batch*heads is small
        and combines the partial (out, lse) afterwards.
  dq    same grid: recompute P from q, k and the lse, accumulate dq over key blocks
        (dq.block_k at a time, smaller than the forward's: the backward holds more tiles).
  dkdv  grid (key block, batch, head, query split): one block of dkdv.block_k keys, loop over
        query blocks of dkdv.block_q. When there are few key blocks (unpack: a short key side)
        the queries are split over programs and the partial dk, dv summed.

The kernels read [batch, len, heads, dim] in place (block index maps pick the head), with no
copies: a ragged last block (a length that is not a block multiple) is read with masked loads
(rows past the end are 0 and touch no memory) and written with masked stores. Tiles span the
head dim rounded up to a power of two >= 16 (Triton's dot needs one), read and written with a
mask on the columns past the real head dim, so padded columns are zeros in registers only.
Masks are built only where a block can pass the end, so block-multiple shapes load plainly.
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


# pack_attention(q, k, v, key_mask, *, dropout_rate, dropout_rng, dropout_seed, interpret,
# block_q, block_k, num_splits) and unpack_attention(...): see _pallas_common.entry_points.
pack_attention, unpack_attention = common.entry_points(sys.modules[__name__])


def make_plan(kind, b, h, lq, lk, d, dtype, rate, interpret, *, block_q, block_k, num_splits):
    pow2 = lambda x: max(16, pl.next_power_of_2(x))  # Triton tiles: powers of 2, dot dims >= 16
    # Limits found by compiling for sm_90 (python -m luna_lra.ops.triton_compile): float32 dot
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
    warps = lambda rows, cols: 8 if dp > 64 or rows * cols >= 64 * 128 else 4
    # The backward kernels hold more [rows, keys] tiles and two accumulators, so they take
    # smaller blocks (powers of 2 that divide the forward's): dq walks keys in dq.block_k steps,
    # dkdv owns dkdv.block_k keys and walks queries in dkdv.block_q steps.
    dq_bk = min(bk, block_k or DQ_BLOCK_K)
    dkdv_bq, dkdv_bk = min(bq, block_q or DKDV_BLOCK_Q), min(bk, block_k or DKDV_BLOCK_K)
    nqb, nkb = common.cdiv(lq, bq), common.cdiv(lk, bk)
    ks = num_splits or common.auto_splits(b * h * nqb, nkb, _TARGET_PROGRAMS)
    dkdv_nqb, dkdv_nkb = common.cdiv(lq, dkdv_bq), common.cdiv(lk, dkdv_bk)
    qs = num_splits or common.auto_splits(b * h * dkdv_nkb, dkdv_nqb, _TARGET_PROGRAMS)
    return common.Plan(
        fwd=common.BlockSizes(bq, bk, warps(bq, bk)),
        dq=common.BlockSizes(bq, dq_bk, warps(bq, dq_bk)),
        dkdv=common.BlockSizes(dkdv_bq, dkdv_bk, warps(dkdv_bq, dkdv_bk)),
        q_splits=common.split(dkdv_nqb, qs)[0], k_splits=common.split(nkb, ks)[0],
        head_dim=dp, scale=d**-0.5, rate=rate, interpret=bool(interpret))


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
# grid's outer block, else the whole length rounded up to the kernel's inner block, which the
# kernel walks itself. The head dim's block is the tile's, dp >= D.
def _rows(blk, dp, outer):
    return pl.BlockSpec((None, blk, None, dp), lambda *g: (g[1], g[0] if outer else 0, g[2], 0))


def _stats(blk, outer):
    return pl.BlockSpec((None, None, blk, 1), lambda *g: (g[1], g[2], g[0] if outer else 0, 0))


def _keys(blk, outer):  # the int32 key mask [B, Lk]
    return pl.BlockSpec((None, blk), lambda *g: (g[1], g[0] if outer else 0))


def _parts(blk, dp):
    return pl.BlockSpec((None, None, blk, None, dp), lambda *g: (g[3], g[1], g[0], g[2], 0))


_SEED = pl.BlockSpec((1,), lambda *g: (0,))


# ------------------------------------------------------------------ ragged-edge loads, stores

def _in_bounds(ref, first_row, length, head_dim):
    """Mask of the elements of ref (a [rows] / [rows, 1] / [rows, dp] tile whose first row is
    row `first_row` of an axis of `length`) inside the array: rows < length, columns <
    head_dim. None when all are, as they are when `length` is a multiple of the rows."""
    rows = ref.shape[0]
    mask = None if length % rows == 0 else first_row + jnp.arange(rows) < length
    if len(ref.shape) == 1:
        return mask
    mask = None if mask is None else mask[:, None]
    if head_dim < ref.shape[1]:
        cols = (jnp.arange(ref.shape[1]) < head_dim)[None, :]
        mask = cols if mask is None else mask & cols
    return mask


def _load(ref, first_row, length, head_dim=1):
    """The tile, zeros outside the array (masked: those addresses are not read)."""
    mask = _in_bounds(ref, first_row, length, head_dim)
    return ref[...] if mask is None else plgpu.load(ref, mask=mask, other=0)


def _store(ref, value, first_row, length, head_dim=1):
    """Writes the tile's elements inside the array only."""
    mask = _in_bounds(ref, first_row, length, head_dim)
    if mask is None:
        ref[...] = value
    else:
        plgpu.store(ref, value, mask=mask)


# ------------------------------------------------------------------------------- forward

def _fwd_kernel(seed_ref, q_ref, k_ref, v_ref, mask_ref, o_ref, lse_ref, *, plan, lq, lk, d,
                per):
    i, b, h, s = _pid()
    bq, bk = plan.fwd.block_q, plan.fwd.block_k
    q = _load(q_ref, i * bq, lq, d)

    def body(j, carry):
        start = pl.multiple_of(j * bk, bk)
        ks = pl.ds(start, bk)
        ok = common.key_ok(_load(mask_ref.at[ks], start, lk)[None, :], (bq, bk))
        sc = common.scores(q, _load(k_ref.at[ks, :], start, lk, d), ok, plan.scale)
        keep = common.keep_mask(plan, seed_ref[0], b, h, i * bq, j * bk, (bq, bk))
        v = _load(v_ref.at[ks, :], start, lk, d)  # zeros past the end: P is 0 there, 0*NaN not
        return common.online_softmax_step(*carry, sc, ok, v, keep)

    init = (jnp.full((bq, 1), common.NEG, jnp.float32), jnp.zeros((bq, 1), jnp.float32),
            jnp.zeros((bq, plan.head_dim), jnp.float32))
    m, l, acc = lax.fori_loop(s * per, jnp.minimum((s + 1) * per, common.cdiv(lk, bk)), body,
                              init)
    out, lse = common.finish_softmax(plan, m, l, acc)
    _store(o_ref, out.astype(o_ref.dtype), i * bq, lq, d)
    _store(lse_ref, lse, i * bq, lq)


def fwd(plan, q, k, v, mask, seed):
    (b, lq, h, d), lk = q.shape, k.shape[1]
    bq, bk, dp = plan.fwd.block_q, plan.fwd.block_k, plan.head_dim
    ns, per = common.split(common.cdiv(lk, bk), plan.k_splits)
    o_dtype = q.dtype if ns == 1 else jnp.float32  # partials stay float32 for the combine
    kernel = functools.partial(_fwd_kernel, plan=plan, lq=lq, lk=lk, d=d, per=per)
    keys = common.round_up(lk, bk)
    return _call(
        plan, kernel, "luna_attn_fwd", (common.cdiv(lq, bq), b, h, ns),
        [_SEED, _rows(bq, dp, True), _rows(keys, dp, False), _rows(keys, dp, False),
         _keys(keys, False)],
        [_parts(bq, dp),
         pl.BlockSpec((None, None, None, bq, 1), lambda *g: (g[3], g[1], g[2], g[0], 0))],
        [jax.ShapeDtypeStruct((ns, b, lq, h, d), o_dtype),
         jax.ShapeDtypeStruct((ns, b, h, lq, 1), jnp.float32)],
        plan.fwd.num_warps,
    )(seed, q, k, v, mask)


# ------------------------------------------------------------------------------ backward

def _dq_kernel(seed_ref, q_ref, k_ref, v_ref, mask_ref, do_ref, lse_ref, delta_ref, dq_ref, *,
               plan, lq, lk, d, per):
    i, b, h, s = _pid()
    bq, bk = plan.dq.block_q, plan.dq.block_k
    q, do = _load(q_ref, i * bq, lq, d), _load(do_ref, i * bq, lq, d)
    lse, delta = _load(lse_ref, i * bq, lq), _load(delta_ref, i * bq, lq)

    def body(j, dq):
        start = pl.multiple_of(j * bk, bk)
        ks = pl.ds(start, bk)
        k = _load(k_ref.at[ks, :], start, lk, d)  # zeros past the end: dS is 0 there
        ok = common.key_ok(_load(mask_ref.at[ks], start, lk)[None, :], (bq, bk))
        sc = common.scores(q, k, ok, plan.scale)
        keep = common.keep_mask(plan, seed_ref[0], b, h, i * bq, j * bk, (bq, bk))
        _, ds = common.backward_tile(plan, sc, ok, lse, _load(v_ref.at[ks, :], start, lk, d), do,
                                     delta, keep)
        return dq + common.dot(ds, k)

    dq = lax.fori_loop(s * per, jnp.minimum((s + 1) * per, common.cdiv(lk, bk)), body,
                       jnp.zeros((bq, plan.head_dim), jnp.float32))
    _store(dq_ref, (dq * plan.scale).astype(dq_ref.dtype), i * bq, lq, d)


def dq(plan, q, k, v, mask, seed, do, lse, delta):
    (b, lq, h, d), lk = q.shape, k.shape[1]
    bq, bk, dp = plan.dq.block_q, plan.dq.block_k, plan.head_dim
    # The key splits are the forward's, in its key blocks; dq's key block divides those.
    ns, per = common.split(common.cdiv(lk, plan.fwd.block_k), plan.k_splits)
    kernel = functools.partial(_dq_kernel, plan=plan, lq=lq, lk=lk, d=d,
                               per=per * (plan.fwd.block_k // bk))
    keys = common.round_up(lk, bk)
    return _call(
        plan, kernel, "luna_attn_dq", (common.cdiv(lq, bq), b, h, ns),
        [_SEED, _rows(bq, dp, True), _rows(keys, dp, False), _rows(keys, dp, False),
         _keys(keys, False), _rows(bq, dp, True), _stats(bq, True), _stats(bq, True)],
        _parts(bq, dp),
        jax.ShapeDtypeStruct((ns, b, lq, h, d), q.dtype if ns == 1 else jnp.float32),
        plan.dq.num_warps,
    )(seed, q, k, v, mask, do, lse, delta)


def _dkdv_kernel(seed_ref, q_ref, k_ref, v_ref, mask_ref, do_ref, lse_ref, delta_ref, dk_ref,
                 dv_ref, *, plan, lq, lk, d, per):
    j, b, h, s = _pid()
    bq, bk = plan.dkdv.block_q, plan.dkdv.block_k
    k, v = _load(k_ref, j * bk, lk, d), _load(v_ref, j * bk, lk, d)
    ok = common.key_ok(_load(mask_ref, j * bk, lk)[None, :], (bq, bk))

    def body(i, carry):
        start = pl.multiple_of(i * bq, bq)
        qs = pl.ds(start, bq)
        # Query rows past the end read as zeros (q, dO, lse, delta): P = 1 on real keys there,
        # but dP = dO V^T = 0 and dS = P (dP - delta) = 0, so they add nothing to dk and dv.
        q, do = _load(q_ref.at[qs, :], start, lq, d), _load(do_ref.at[qs, :], start, lq, d)
        sc = common.scores(q, k, ok, plan.scale)
        keep = common.keep_mask(plan, seed_ref[0], b, h, i * bq, j * bk, (bq, bk))
        pd, ds = common.backward_tile(plan, sc, ok, _load(lse_ref.at[qs, :], start, lq), v, do,
                                      _load(delta_ref.at[qs, :], start, lq), keep)
        return carry[0] + common.dot(ds.T, q), carry[1] + common.dot(pd.T, do)

    zeros = jnp.zeros((bk, plan.head_dim), jnp.float32)
    dk, dv = lax.fori_loop(s * per, jnp.minimum((s + 1) * per, common.cdiv(lq, bq)), body,
                           (zeros, zeros))
    _store(dk_ref, (dk * plan.scale).astype(dk_ref.dtype), j * bk, lk, d)
    _store(dv_ref, dv.astype(dv_ref.dtype), j * bk, lk, d)


def dkdv(plan, q, k, v, mask, seed, do, lse, delta):
    (b, lq, h, d), lk = q.shape, k.shape[1]
    bq, bk, dp = plan.dkdv.block_q, plan.dkdv.block_k, plan.head_dim
    ns, per = common.split(common.cdiv(lq, bq), plan.q_splits)
    kernel = functools.partial(_dkdv_kernel, plan=plan, lq=lq, lk=lk, d=d, per=per)
    part = jax.ShapeDtypeStruct((ns, b, lk, h, d), k.dtype if ns == 1 else jnp.float32)
    queries = common.round_up(lq, bq)
    return _call(
        plan, kernel, "luna_attn_dkdv", (common.cdiv(lk, bk), b, h, ns),
        [_SEED, _rows(queries, dp, False), _rows(bk, dp, True), _rows(bk, dp, True),
         _keys(bk, True), _rows(queries, dp, False), _stats(queries, False),
         _stats(queries, False)],
        [_parts(bk, dp), _parts(bk, dp)],
        [part, part],
        plan.dkdv.num_warps,
    )(seed, q, k, v, mask, do, lse, delta)
