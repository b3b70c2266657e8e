"""Luna pack/unpack attention as Pallas kernels lowered through Mosaic (TPU).

Same signature and numerics as reference.py and the same three kernels as pallas_gpu.py, but
walked the Mosaic way: the streamed axis is the last, sequential ("arbitrary") grid dimension,
Pallas pipelines its blocks HBM -> VMEM, and the running softmax statistics / gradient sums
live in VMEM scratch across those grid steps.

  fwd   grid (batch, head, q block, key split, key step): online softmax over key blocks.
  dq    same grid, accumulating dq.
  dkdv  grid (batch, head, key block, query split, query step), accumulating dk, dv.

The split axes are "parallel" so a two-core chip (megacore) can share one (batch, head) when
batch * heads is small; partial results are combined outside. Mosaic tiles the last two dims of
a block by (8, 128) unless they span the whole array, so the kernels work on [batch, heads,
len, dim] (transposed here: a head cannot be a block of [batch, len, heads, dim]), row
statistics are [.., len, 1] and the key mask [batch, 1, len].

Lengths need not be block multiples and nothing is padded: the last block of an axis is then
partial. Pallas copies only its part inside the array into VMEM and writes back only that part;
the rest of the VMEM block holds stale data, which the kernels zero before use and exclude
from the keys by their index (key validity from the length, not only from the mask).
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from luna_lra.ops import _pallas_common as common

_TARGET_PROGRAMS = 2  # TensorCores per chip that "parallel" grid axes can be spread over


# pack_attention(q, k, v, key_mask, *, dropout_rate, dropout_rng, dropout_seed, interpret,
# block_q, block_k, num_splits) and unpack_attention(...): see _pallas_common.entry_points.
pack_attention, unpack_attention = common.entry_points(sys.modules[__name__])


def make_plan(kind, b, h, lq, lk, d, dtype, rate, interpret, *, block_q, block_k, num_splits):
    # A block spanning a whole axis is always a legal Mosaic tile; otherwise keep query blocks
    # a multiple of 8 sublanes and key blocks (lanes of the score tile) of 128.
    if kind == "pack":
        bq = block_q or (lq if lq <= 256 else 256)
        bk = block_k or (lk if lk <= 512 else 512)
    else:
        bk = block_k or (lk if lk <= 1024 else 512)
        rows = 256 if bk <= 256 else 128
        bq = block_q or (lq if lq <= rows else rows)
    nqb, nkb = common.cdiv(lq, bq), common.cdiv(lk, bk)
    ks = num_splits or common.auto_splits(b * h * nqb, nkb, _TARGET_PROGRAMS)
    qs = num_splits or common.auto_splits(b * h * nkb, nqb, _TARGET_PROGRAMS)
    if interpret is True:
        interpret = pltpu.InterpretParams()
    blocks = common.BlockSizes(bq, bk)  # the three kernels walk the same blocks
    return common.Plan(
        fwd=blocks, dq=blocks, dkdv=blocks, q_splits=common.split(nqb, qs)[0],
        k_splits=common.split(nkb, ks)[0], head_dim=d, scale=d**-0.5, rate=rate,
        interpret=interpret or False)


def _call(plan, kernel, name, grid, in_specs, out_specs, out_shape, scratch):
    return pl.pallas_call(
        kernel, out_shape=out_shape, grid=grid, in_specs=in_specs, out_specs=out_specs,
        scratch_shapes=scratch,
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel",) * 4 + ("arbitrary",)),
        interpret=plan.interpret, name=name)


def _bhld(x):  # [B, L, H, D] -> [B, H, L, D]
    return jnp.transpose(x, (0, 2, 1, 3))


def _from_parts(x):  # partials [S, B, H, L, D] -> [S, B, L, H, D]
    return jnp.transpose(x, (0, 1, 3, 2, 4))


def _specs(plan, lq_blocks, lk_blocks, per, outer_is_q):
    """Block specs for grid (b, h, outer, split, step). The streamed block index is
    split * per + step, clamped (the last split may be short; its extra steps are skipped)."""
    inner = lambda s, t, n: jnp.minimum(s * per + t, n - 1)
    if outer_is_q:
        qi = lambda o, s, t: o
        ki = lambda o, s, t: inner(s, t, lk_blocks)
    else:
        qi = lambda o, s, t: inner(s, t, lq_blocks)
        ki = lambda o, s, t: o
    d, bq, bk = plan.head_dim, plan.fwd.block_q, plan.fwd.block_k
    return dict(
        q=pl.BlockSpec((None, None, bq, d), lambda b, h, o, s, t: (b, h, qi(o, s, t), 0)),
        k=pl.BlockSpec((None, None, bk, d), lambda b, h, o, s, t: (b, h, ki(o, s, t), 0)),
        mask=pl.BlockSpec((None, 1, bk), lambda b, h, o, s, t: (b, 0, ki(o, s, t))),
        stats=pl.BlockSpec((None, None, bq, 1), lambda b, h, o, s, t: (b, h, qi(o, s, t), 0)),
        seed=pl.BlockSpec(memory_space=pltpu.SMEM),
    )


def _part_spec(blk, d):  # output partials [S, B, H, L, D] (or [.., L, 1]) for grid (b, h, o, s, t)
    return pl.BlockSpec((None, None, None, blk, d), lambda b, h, o, s, t: (s, b, h, o, 0))


def _prepare(q, k, v, mask, *rest):
    return (_bhld(q), _bhld(k), _bhld(v), mask[:, None, :], *rest)


def _grid(plan, lq, lk, splits_of):
    """(query blocks, key blocks, splits, blocks per split); splits_of: "k" or "q"."""
    nqb, nkb = common.cdiv(lq, plan.fwd.block_q), common.cdiv(lk, plan.fwd.block_k)
    if splits_of == "k":
        return (nqb, nkb, *common.split(nkb, plan.k_splits))
    return (nqb, nkb, *common.split(nqb, plan.q_splits))


# ------------------------------------------------------------- the partial last block of an axis

def _zero_past(x, first_row, length):
    """x [rows, cols], a block whose first row is row `first_row` of an axis of `length`, with
    the rows past the end (stale VMEM of a partial block) set to 0."""
    if length % x.shape[0] == 0:
        return x
    rows = first_row + lax.broadcasted_iota(jnp.int32, x.shape, 0)
    return jnp.where(rows < length, x, jnp.zeros_like(x))


def _key_ok(mask_ref, first_key, lk, shape):
    """[bq, bk] bool: the key is real (mask) and inside the array (index < lk)."""
    mask = mask_ref[...]  # [1, bk] int32
    if lk % shape[1]:
        keys = first_key + lax.broadcasted_iota(jnp.int32, mask.shape, 1)
        mask = jnp.where(keys < lk, mask, 0)
    return common.key_ok(mask, shape)


# ------------------------------------------------------------------------------- forward

def _fwd_kernel(seed_ref, q_ref, k_ref, v_ref, mask_ref, o_ref, lse_ref, m_sc, l_sc, acc_sc, *,
                plan, lk, nkb, per):
    b, h, i, s, t = (pl.program_id(a) for a in range(5))
    j = s * per + t
    bq, bk = plan.fwd.block_q, plan.fwd.block_k

    @pl.when(t == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, common.NEG, jnp.float32)
        l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
        acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

    @pl.when(j < nkb)
    def _step():
        # Query rows past the end only make output rows that are not written back.
        ok = _key_ok(mask_ref, j * bk, lk, (bq, bk))
        sc = common.scores(q_ref[...], k_ref[...], ok, plan.scale)
        keep = common.keep_mask(plan, seed_ref[0], b, h, i * bq, j * bk, (bq, bk))
        v = _zero_past(v_ref[...], j * bk, lk)  # P is 0 past the end, but 0 * NaN is not
        m, l, acc = common.online_softmax_step(m_sc[...], l_sc[...], acc_sc[...], sc, ok, v,
                                               keep)
        m_sc[...], l_sc[...], acc_sc[...] = m, l, acc

    @pl.when(t == per - 1)
    def _done():
        out, lse = common.finish_softmax(plan, m_sc[...], l_sc[...], acc_sc[...])
        o_ref[...] = out.astype(o_ref.dtype)
        lse_ref[...] = lse


def fwd(plan, q, k, v, mask, seed):
    (b, lq, h, d), lk = q.shape, k.shape[1]
    bq = plan.fwd.block_q
    nqb, nkb, ns, per = _grid(plan, lq, lk, "k")
    sp = _specs(plan, nqb, nkb, per, outer_is_q=True)
    o_dtype = q.dtype if ns == 1 else jnp.float32  # partials stay float32 for the combine
    o, lse = _call(
        plan, functools.partial(_fwd_kernel, plan=plan, lk=lk, nkb=nkb, per=per),
        "luna_attn_fwd", (b, h, nqb, ns, per),
        [sp["seed"], sp["q"], sp["k"], sp["k"], sp["mask"]],
        [_part_spec(bq, d), _part_spec(bq, 1)],
        [jax.ShapeDtypeStruct((ns, b, h, lq, d), o_dtype),
         jax.ShapeDtypeStruct((ns, b, h, lq, 1), jnp.float32)],
        [pltpu.VMEM((bq, 1), jnp.float32), pltpu.VMEM((bq, 1), jnp.float32),
         pltpu.VMEM((bq, d), jnp.float32)],
    )(seed, *_prepare(q, k, v, mask))
    return _from_parts(o), lse


# ------------------------------------------------------------------------------ backward

def _dq_kernel(seed_ref, q_ref, k_ref, v_ref, mask_ref, do_ref, lse_ref, delta_ref, dq_ref,
               dq_sc, *, plan, lk, nkb, per):
    b, h, i, s, t = (pl.program_id(a) for a in range(5))
    j = s * per + t
    bq, bk = plan.dq.block_q, plan.dq.block_k

    @pl.when(t == 0)
    def _init():
        dq_sc[...] = jnp.zeros(dq_sc.shape, jnp.float32)

    @pl.when(j < nkb)
    def _step():
        # Keys past the end: zero k and v, as dS = 0 there multiplies them. Query rows past
        # the end only make dq rows that are not written back.
        k, v = _zero_past(k_ref[...], j * bk, lk), _zero_past(v_ref[...], j * bk, lk)
        ok = _key_ok(mask_ref, j * bk, lk, (bq, bk))
        sc = common.scores(q_ref[...], k, ok, plan.scale)
        keep = common.keep_mask(plan, seed_ref[0], b, h, i * bq, j * bk, (bq, bk))
        _, ds = common.backward_tile(plan, sc, ok, lse_ref[...], v, do_ref[...], delta_ref[...],
                                     keep)
        dq_sc[...] += common.dot(ds, k)

    @pl.when(t == per - 1)
    def _done():
        dq_ref[...] = (dq_sc[...] * plan.scale).astype(dq_ref.dtype)


def dq(plan, q, k, v, mask, seed, do, lse, delta):
    (b, lq, h, d), lk = q.shape, k.shape[1]
    bq = plan.dq.block_q
    nqb, nkb, ns, per = _grid(plan, lq, lk, "k")
    sp = _specs(plan, nqb, nkb, per, outer_is_q=True)
    out = _call(
        plan, functools.partial(_dq_kernel, plan=plan, lk=lk, nkb=nkb, per=per), "luna_attn_dq",
        (b, h, nqb, ns, per),
        [sp["seed"], sp["q"], sp["k"], sp["k"], sp["mask"], sp["q"], sp["stats"], sp["stats"]],
        _part_spec(bq, d),
        jax.ShapeDtypeStruct((ns, b, h, lq, d), q.dtype if ns == 1 else jnp.float32),
        [pltpu.VMEM((bq, d), jnp.float32)],
    )(seed, *_prepare(q, k, v, mask, _bhld(do), lse, delta))
    return _from_parts(out)


def _dkdv_kernel(seed_ref, q_ref, k_ref, v_ref, mask_ref, do_ref, lse_ref, delta_ref, dk_ref,
                 dv_ref, dk_sc, dv_sc, *, plan, lq, lk, nqb, per):
    b, h, j, s, t = (pl.program_id(a) for a in range(5))
    i = s * per + t
    bq, bk = plan.dkdv.block_q, plan.dkdv.block_k

    @pl.when(t == 0)
    def _init():
        dk_sc[...] = jnp.zeros(dk_sc.shape, jnp.float32)
        dv_sc[...] = jnp.zeros(dv_sc.shape, jnp.float32)

    @pl.when(i < nqb)
    def _step():
        # Query rows past the end read as zeros (q, dO, lse, delta): P = 1 on real keys there,
        # but dP = dO V^T = 0 and dS = P (dP - delta) = 0, so they add nothing to dk and dv.
        # Keys past the end only make dk, dv rows that are not written back.
        q, do = _zero_past(q_ref[...], i * bq, lq), _zero_past(do_ref[...], i * bq, lq)
        lse, delta = _zero_past(lse_ref[...], i * bq, lq), _zero_past(delta_ref[...], i * bq, lq)
        ok = _key_ok(mask_ref, j * bk, lk, (bq, bk))
        sc = common.scores(q, k_ref[...], ok, plan.scale)
        keep = common.keep_mask(plan, seed_ref[0], b, h, i * bq, j * bk, (bq, bk))
        pd, ds = common.backward_tile(plan, sc, ok, lse, v_ref[...], do, delta, keep)
        dk_sc[...] += common.dot(ds.T, q)
        dv_sc[...] += common.dot(pd.T, do)

    @pl.when(t == per - 1)
    def _done():
        dk_ref[...] = (dk_sc[...] * plan.scale).astype(dk_ref.dtype)
        dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)


def dkdv(plan, q, k, v, mask, seed, do, lse, delta):
    (b, lq, h, d), lk = q.shape, k.shape[1]
    bk = plan.dkdv.block_k
    nqb, nkb, ns, per = _grid(plan, lq, lk, "q")
    sp = _specs(plan, nqb, nkb, per, outer_is_q=False)
    part = jax.ShapeDtypeStruct((ns, b, h, lk, d), k.dtype if ns == 1 else jnp.float32)
    dk, dv = _call(
        plan, functools.partial(_dkdv_kernel, plan=plan, lq=lq, lk=lk, nqb=nqb, per=per),
        "luna_attn_dkdv", (b, h, nkb, ns, per),
        [sp["seed"], sp["q"], sp["k"], sp["k"], sp["mask"], sp["q"], sp["stats"], sp["stats"]],
        [_part_spec(bk, d), _part_spec(bk, d)], [part, part],
        [pltpu.VMEM((bk, d), jnp.float32), pltpu.VMEM((bk, d), jnp.float32)],
    )(seed, *_prepare(q, k, v, mask, _bhld(do), lse, delta))
    return _from_parts(dk), _from_parts(dv)
