"""The fast XLA form of pack and unpack attention: what `impl="xla"` runs on every device.

It computes what reference.py's `attention` computes (tested equal to float32 rounding,
forward and gradients), in one of two layouts, each with a written-out backward pass (the
standard softmax gradient):

- Block-diagonal, when the short side is small (heads * l <= BLOCK_DIAGONAL_MAX_ROWS): the
  short side's heads are spread over a [heads * l, heads * head_dim] block-diagonal matrix, so
  every matmul reads and writes the long side in its own [batch, n, heads * head_dim] layout.
  That costs `heads` times the attention's (small) matmul FLOPs and saves the long side's
  head-major transposes (on XLA:CPU a copy per operand and gradient); the backward pass keeps
  q, k, v, the probabilities and the dropout mask.
- Chunked, for larger short sides (Luna-128/256): a loop over a few (example, head) pairs at a
  time, so that each step's [l, n] scores, probabilities and their gradients stay in a core's
  cache instead of going through memory as whole [batch, heads, l, n] arrays (on XLA:CPU about
  half the time of the plain einsums at l = 256). The backward pass keeps q, k, v and the
  logsumexp of each row, and recomputes the probabilities (and the dropout mask) pair by pair:
  cheaper than writing and reading them back.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from luna_lra.ops import dropout as dropout_lib
from luna_lra.ops import reference
from luna_lra.ops.reference import F32

# Rows of the short side's block-diagonal matrix (heads * l) up to which pack/unpack use it:
# Luna-16 with up to 8 heads; Luna-128/256 run the chunked form (block-diagonal: 8-16x the
# FLOPs).
BLOCK_DIAGONAL_MAX_ROWS = 128
# Score elements per step of the chunked form (pairs * q_len * kv_len, about): 1 MB of float32
# scores, which with their probabilities and gradients stays in a core's L2/L3 cache.
CHUNK_ELEMENTS = 256 * 1024


def pack_attention(q, k, v, key_mask, *, dropout_rate=0.0, dropout_rng=None, dropout_seed=None):
    """Pack: q = P side [batch, l, heads, head_dim]; k, v = X side [batch, n, heads, head_dim];
    key_mask [batch, n]. Returns [batch, l, heads, head_dim]."""
    return _block_diagonal_or_plain(_pack_block_diagonal, q, q, k, v, key_mask,
                                    dropout_rate, dropout_rng, dropout_seed)


def unpack_attention(q, k, v, key_mask, *, dropout_rate=0.0, dropout_rng=None, dropout_seed=None):
    """Unpack: q = X side [batch, n, heads, head_dim]; k, v = packed side [batch, l, heads,
    head_dim]; key_mask [batch, l]. Returns [batch, n, heads, head_dim]."""
    return _block_diagonal_or_plain(_unpack_block_diagonal, k, q, k, v, key_mask,
                                    dropout_rate, dropout_rng, dropout_seed)


def _block_diagonal_or_plain(block_diagonal, short, q, k, v, key_mask, dropout_rate,
                             dropout_rng, dropout_seed):
    """The block-diagonal form when the short side (pack's q, unpack's k) is small enough,
    else the chunked one."""
    reference.check_shapes(q, k, v, key_mask)
    seed = dropout_lib.resolve_seed(dropout_rate, dropout_rng, dropout_seed)
    form = block_diagonal if block_diagonal_pays(short) else _chunked
    return form(q, k, v, key_mask, seed, float(dropout_rate))


def block_diagonal_pays(short):
    """short: the short side [batch, l, heads, head_dim] (pack's q, unpack's k)."""
    return short.shape[1] * short.shape[2] <= BLOCK_DIAGONAL_MAX_ROWS


def _block_diagonal(t):
    """t [batch, heads, r, c] -> [batch, heads * r, heads * c], head i's block at (i, i)."""
    b, h, r, c = t.shape
    eye = jnp.eye(h, dtype=bool)[None, :, None, :, None]
    return jnp.where(eye, t[:, :, :, None, :], 0).reshape(b, h * r, h * c)


def _diagonal_blocks(t, heads: int):
    """[batch, heads * r, heads * c] -> its diagonal blocks [batch, heads, r, c] (the other
    blocks are dropped exactly: each sum adds zeros to one value)."""
    b, hr, hc = t.shape
    eye = jnp.eye(heads, dtype=bool)[None, :, None, :, None]
    return jnp.where(eye, t.reshape(b, heads, hr // heads, heads, hc // heads), 0).sum(3)


def _dropped(p, keep, rate):
    return p if keep is None else jnp.where(keep, p / (1.0 - rate), 0.0)


def _scores_grad(p, dp_dropped, keep, rate):
    """Gradient of the scores from that of the dropped-out probabilities: the softmax gradient
    p * (dp - sum(p * dp)), zero wherever p is (masked keys, all-masked rows)."""
    dp = _dropped(dp_dropped, keep, rate)
    return p * (dp - jnp.sum(p * dp, axis=-1, keepdims=True))


# ----------------------------------------------------------------------------- pack


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _pack_block_diagonal(q, k, v, key_mask, seed, rate):
    return _pack_fwd(q, k, v, key_mask, seed, rate)[0]


def _pack_fwd(q, k, v, key_mask, seed, rate):
    """Scores [batch, heads * l, n]: the block-diagonal P side against X as it is. The scale
    goes on the small q_bd, not on the scores."""
    b, l, h, d = q.shape
    n = k.shape[1]
    q_bd = _block_diagonal(jnp.transpose(q, (0, 2, 1, 3)) * d**-0.5)  # [b, h*l, h*d]
    s = jnp.einsum("bqc,bkc->bqk", q_bd, k.reshape(b, n, h * d), preferred_element_type=F32)
    p = reference.masked_softmax(s, key_mask[:, None, :])
    keep = None
    if rate > 0.0:  # the mask of [b, h, l, n], whose layout this is
        keep = dropout_lib.attention_keep_mask(seed, (b, h, l, n), rate).reshape(p.shape)
    o = jnp.einsum("bqk,bkc->bqc", _dropped(p, keep, rate).astype(v.dtype),
                   v.reshape(b, n, h * d), preferred_element_type=F32)
    out = jnp.transpose(_diagonal_blocks(o, h), (0, 2, 1, 3)).astype(q.dtype)
    return out, (q_bd, k, v, p, keep)


def _pack_bwd(rate, res, g):
    q_bd, k, v, p, keep = res
    b, n, h, d = k.shape
    k2, v2 = k.reshape(b, n, h * d), v.reshape(b, n, h * d)
    g_bd = _block_diagonal(jnp.transpose(g, (0, 2, 1, 3)))  # [b, h*l, h*d]
    dp = jnp.einsum("bqc,bkc->bqk", g_bd, v2, preferred_element_type=F32)
    ds = _scores_grad(p, dp, keep, rate).astype(k.dtype)
    dv = jnp.einsum("bqk,bqc->bkc", _dropped(p, keep, rate).astype(g.dtype), g_bd,
                    preferred_element_type=F32)
    dk = jnp.einsum("bqk,bqc->bkc", ds, q_bd, preferred_element_type=F32)
    dq_bd = jnp.einsum("bqk,bkc->bqc", ds, k2, preferred_element_type=F32) * d**-0.5
    dq = jnp.transpose(_diagonal_blocks(dq_bd, h), (0, 2, 1, 3))
    return (dq.astype(q_bd.dtype), dk.reshape(k.shape).astype(k.dtype),
            dv.reshape(v.shape).astype(v.dtype), None, None)


_pack_block_diagonal.defvjp(_pack_fwd, _pack_bwd)


# ----------------------------------------------------------------------------- unpack


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _unpack_block_diagonal(q, k, v, key_mask, seed, rate):
    return _unpack_fwd(q, k, v, key_mask, seed, rate)[0]


def _unpack_keep(seed, shape, rate):
    """attention_keep_mask's bits for [b, h, n, l] laid out as [b, n, h, l]."""
    b, n, h, l = (jnp.arange(s, dtype=jnp.uint32) for s in shape)
    return dropout_lib.keep_mask(seed, b[:, None, None, None], h[None, None, :, None],
                                 n[None, :, None, None], l[None, None, None, :], rate)


def _unpack_fwd(q, k, v, key_mask, seed, rate):
    """Scores [batch, n, heads * l]: X as it is against the block-diagonal packed side (the
    scale on it). The probabilities are kept as [batch, n, heads * l], the layout the matmuls
    read: one array, where two views of it made XLA write two."""
    b, n, h, d = q.shape
    l = k.shape[1]
    k_bd = _block_diagonal(jnp.transpose(k, (0, 2, 3, 1)) * d**-0.5)  # [b, h*d, h*l]
    v_bd = _block_diagonal(jnp.transpose(v, (0, 2, 1, 3)))  # [b, h*l, h*d]
    q2 = q.reshape(b, n, h * d)
    s = jnp.einsum("bnc,bcj->bnj", q2, k_bd, preferred_element_type=F32)
    p = reference.masked_softmax(s.reshape(b, n, h, l), key_mask[:, None, None, :])
    keep = _unpack_keep(seed, p.shape, rate).reshape(b, n, h * l) if rate > 0.0 else None
    p = p.reshape(b, n, h * l)
    o = jnp.einsum("bnj,bjc->bnc", _dropped(p, keep, rate).astype(v.dtype), v_bd,
                   preferred_element_type=F32)
    return o.reshape(q.shape).astype(q.dtype), (q, k_bd, v_bd, p, keep)


def _unpack_bwd(rate, res, g):
    q, k_bd, v_bd, p, keep = res
    b, n, h, d = q.shape
    q2, g2 = q.reshape(b, n, h * d), g.reshape(b, n, h * d)
    dp = jnp.einsum("bnc,bjc->bnj", g2, v_bd, preferred_element_type=F32)
    heads = lambda t: None if t is None else t.reshape(b, n, h, -1)  # softmax groups
    ds = _scores_grad(heads(p), heads(dp), heads(keep), rate).reshape(p.shape).astype(q.dtype)
    dq = jnp.einsum("bnj,bcj->bnc", ds, k_bd, preferred_element_type=F32)
    dk_bd = jnp.einsum("bnc,bnj->bcj", q2, ds, preferred_element_type=F32) * d**-0.5
    dv_bd = jnp.einsum("bnj,bnc->bjc", _dropped(p, keep, rate).astype(g.dtype), g2,
                       preferred_element_type=F32)
    dk = jnp.transpose(_diagonal_blocks(dk_bd, h), (0, 3, 1, 2))  # [b, h, d, l] -> [b, l, h, d]
    dv = jnp.transpose(_diagonal_blocks(dv_bd, h), (0, 2, 1, 3))
    return (dq.reshape(q.shape).astype(q.dtype), dk.astype(k_bd.dtype), dv.astype(v_bd.dtype),
            None, None)


_unpack_block_diagonal.defvjp(_unpack_fwd, _unpack_bwd)


# ----------------------------------------------------------------------------- chunked


def pairs_per_chunk(pairs: int, q_len: int, kv_len: int) -> int:
    """(example, head) pairs per step of the chunked form: as many as keep the step's scores
    within CHUNK_ELEMENTS elements (at least 1)."""
    return max(1, min(pairs, CHUNK_ELEMENTS // (q_len * kv_len)))


def _pairs(t):
    """[batch, len, heads, ...] -> [batch * heads, len, ...]: pair p = example * heads + head."""
    t = jnp.swapaxes(t, 1, 2)
    return t.reshape((-1,) + t.shape[2:])


def _from_pairs(t, heads):
    """_pairs' inverse."""
    return jnp.swapaxes(t.reshape((-1, heads) + t.shape[1:]), 1, 2)


def _pair_keep(seed, pair, heads, shape, rate):
    """attention_keep_mask's bits for one pair's [q_len, kv_len]."""
    pair = pair.astype(jnp.uint32)
    row, col = (jnp.arange(s, dtype=jnp.uint32) for s in shape)
    return dropout_lib.keep_mask(seed, pair // heads, pair % heads, row[:, None], col[None, :],
                                 rate)


def _pair_scores(q, k, key_bias):
    """One pair's scores [q_len, kv_len] of the scaled q against k, plus the key bias (NEG at
    masked keys: their exp is 0 whenever the row has a real key)."""
    return jnp.dot(q, k.T, preferred_element_type=F32) + key_bias[None, :]


def _by_pairs(fn, heads, *args):
    """fn(pair index, *its slices) over every (example, head) pair, a chunk of pairs_per_chunk
    pairs per step (lax.map)."""
    pairs, q_len = args[0].shape[:2]
    c = pairs_per_chunk(pairs, q_len, args[1].shape[1])
    # batch_size=1 would still batch each step's matmuls (over a length-1 axis), more slowly
    return jax.lax.map(lambda a: fn(*a), (jnp.arange(pairs), *args),
                       batch_size=c if c > 1 else None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _chunked(q, k, v, key_mask, seed, rate):
    return _chunked_fwd(q, k, v, key_mask, seed, rate)[0]


def _chunked_fwd(q, k, v, key_mask, seed, rate):
    """The probabilities as masked_softmax computes them, and each row's logsumexp (+inf for
    a row whose keys are all masked: its recomputed probabilities are 0). Masked keys enter
    as a bias on the scores, not as selects over them."""
    h, d = q.shape[2:]
    bias = jnp.repeat(jnp.where(key_mask, 0.0, reference.NEG), h, axis=0)  # [pairs, kv_len]

    def pair(i, q, k, v, bias):
        s = _pair_scores(q, k, bias)
        top = jnp.max(s, axis=-1, keepdims=True)
        e = jnp.exp(s - top)
        den = jnp.sum(e, axis=-1, keepdims=True)
        live = top > 0.5 * reference.NEG  # the row has a real key
        p = e * jnp.where(live, 1.0 / den, 0.0)
        keep = _pair_keep(seed, i, h, p.shape, rate) if rate > 0.0 else None
        o = jnp.dot(_dropped(p, keep, rate).astype(v.dtype), v, preferred_element_type=F32)
        lse = jnp.where(live, top + jnp.log(den), jnp.inf)
        return o.astype(q.dtype), lse[:, 0]

    qp, kp, vp = _pairs(q * d**-0.5), _pairs(k), _pairs(v)
    o, lse = _by_pairs(pair, h, qp, kp, vp, bias)
    return _from_pairs(o, h), (qp, kp, vp, bias, lse, seed)


def _chunked_bwd(rate, res, g):
    qp, kp, vp, bias, lse, seed = res
    h, d = g.shape[2:]

    def pair(i, q, k, v, bias, lse, g):
        p = jnp.exp(_pair_scores(q, k, bias) - lse[:, None])
        keep = _pair_keep(seed, i, h, p.shape, rate) if rate > 0.0 else None
        dp = jnp.dot(g, v.T, preferred_element_type=F32)
        ds = _scores_grad(p, dp, keep, rate).astype(q.dtype)
        dq = jnp.dot(ds, k, preferred_element_type=F32) * d**-0.5
        dk = jnp.dot(ds.T, q, preferred_element_type=F32)
        dv = jnp.dot(_dropped(p, keep, rate).astype(g.dtype).T, g, preferred_element_type=F32)
        return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)

    grads = _by_pairs(pair, h, qp, kp, vp, bias, lse, _pairs(g))
    return (*(_from_pairs(t, h) for t in grads), None, None)


_chunked.defvjp(_chunked_fwd, _chunked_bwd)
