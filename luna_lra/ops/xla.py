"""The fast XLA form of pack and unpack attention: what `impl="xla"` runs on every device.

It computes what reference.py's `attention` computes (tested equal to float32 rounding,
forward and gradients), as a loop over a few (example, head) pairs at a time (lax.map): each
step's [q_len, kv_len] scores, probabilities and their gradients stay in a core's cache
instead of going through memory as whole [batch, heads, q_len, kv_len] arrays, as the plain
einsums' do. The backward pass is written out (the standard softmax gradient) and keeps q, k,
v, the output and each row's logsumexp, recomputing the probabilities (and the dropout mask)
pair by pair: cheaper than writing them out and reading them back. Masked keys enter as a
bias on the scores, not as selects over them. On XLA:CPU (2 cores, Luna-256 at n = 1,001) this takes
about 0.45x the time of the plain einsums under autodiff, forward and backward.

That is a CPU form: on a GPU or TPU a loop of small steps would leave the device idle, and
XLA fuses the plain einsums well, so there the XLA path is reference.attention itself (the
baseline the Pallas kernels are measured against).

pack_folded / unpack_folded take the long side before its projections and fold them into the
attention, for a short side small enough that this saves work (folding_saves: Luna-16); Luna
runs them on the CPU in place of the projections and pack_attention / unpack_attention.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from luna_lra.ops import dropout as dropout_lib
from luna_lra.ops import reference
from luna_lra.ops.reference import F32

# Score elements per step (pairs * q_len * kv_len, about): 4 MB of float32 scores, which with
# their probabilities and gradients stays in a core's L3 cache. Fewer, larger steps run
# faster on XLA:CPU than cache-sized ones down to a point: Luna-16 at n = 1,001 (32 pairs)
# in one step rather than two, pack + unpack forward and backward 13 ms instead of 20, and
# Luna-256 in steps of 4 pairs rather than 1, 98 ms instead of 106 (8 pairs: 110).
CHUNK_ELEMENTS = 1024 * 1024


def pack_attention(q, k, v, key_mask, *, dropout_rate=0.0, dropout_rng=None, dropout_seed=None):
    """Pack: q = P side [batch, l, heads, head_dim]; k, v = X side [batch, n, heads, head_dim];
    key_mask [batch, n]. Returns [batch, l, heads, head_dim]."""
    return attention(q, k, v, key_mask, dropout_rate=dropout_rate, dropout_rng=dropout_rng,
                     dropout_seed=dropout_seed)


def unpack_attention(q, k, v, key_mask, *, dropout_rate=0.0, dropout_rng=None,
                     dropout_seed=None):
    """Unpack: q = X side [batch, n, heads, head_dim]; k, v = packed side [batch, l, heads,
    head_dim]; key_mask [batch, l]. Returns [batch, n, heads, head_dim]."""
    return attention(q, k, v, key_mask, dropout_rate=dropout_rate, dropout_rng=dropout_rng,
                     dropout_seed=dropout_seed)


def attention(q, k, v, key_mask, *, dropout_rate=0.0, dropout_rng=None, dropout_seed=None):
    """reference.attention's contract: q [batch, q_len, heads, head_dim], k, v [batch, kv_len,
    heads, head_dim], key_mask [batch, kv_len]; the same dropout bits."""
    if jax.default_backend() != "cpu":
        return reference.attention(q, k, v, key_mask, dropout_rate=dropout_rate,
                                   dropout_rng=dropout_rng, dropout_seed=dropout_seed)
    reference.check_shapes(q, k, v, key_mask)
    seed = dropout_lib.resolve_seed(dropout_rate, dropout_rng, dropout_seed)
    return _attention(q, k, v, key_mask, seed, float(dropout_rate))


def _dropped(p, keep, rate):
    return p if keep is None else jnp.where(keep, p / (1.0 - rate), 0.0)


def _scores_grad(p, dp, query_dot):
    """The softmax gradient p * (dp - sum(p * dp)) from the probabilities' gradient dp, with
    each query's sum(p * dp) given (broadcast over its keys): it is the dot product of the
    query's output and its gradient, which costs a pass over [q_len, head_dim] instead of one
    over [q_len, kv_len]. Written unfactored, as XLA:CPU runs it fastest: with both changes
    pack + unpack forward and backward at Luna-256 took 0.92-0.96x the time of
    p * (dp - sum(p * dp)), and with the dot alone, factored, 0.98-1.02x. Zero wherever p is
    (masked keys, all-masked rows)."""
    return p * dp - p * query_dot


def pairs_per_chunk(pairs: int, q_len: int, kv_len: int) -> int:
    """(example, head) pairs per step: as many as keep the step's scores
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
def _attention(q, k, v, key_mask, seed, rate):
    return _attention_fwd(q, k, v, key_mask, seed, rate)[0]


def _attention_fwd(q, k, v, key_mask, seed, rate):
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
    return _from_pairs(o, h), (qp, kp, vp, o, bias, lse, seed)


def _attention_bwd(rate, res, g):
    """The tile laid out keys by queries, [kv_len, q_len]: then dk and dv are plain matmuls
    of it, and dq^T one of k^T (a small copy) by it, so XLA:CPU runs all of them in YNNPACK;
    on the [q_len, kv_len] tile it ran dk and dv outside, on a transposed operand (pack +
    unpack forward and backward at Luna-256 1.05x faster this way)."""
    qp, kp, vp, op, bias, lse, seed = res
    h, d = g.shape[2:]

    def pair(i, q, k, v, o, bias, lse, g):
        p = jnp.exp(jnp.dot(k, q.T, preferred_element_type=F32) + bias[:, None] - lse[None, :])
        keep = _pair_keep(seed, i, h, p.shape[::-1], rate).T if rate > 0.0 else None
        dp = _dropped(jnp.dot(v, g.T, preferred_element_type=F32), keep, rate)
        ds = _scores_grad(p, dp, jnp.sum(g.astype(F32) * o, axis=-1)[None, :]).astype(q.dtype)
        # the barrier keeps XLA from folding k^T back into the dot as a transposed operand
        dq_t = jnp.dot(jax.lax.optimization_barrier(k.T), ds, preferred_element_type=F32)
        dk = jnp.dot(ds, q, preferred_element_type=F32)
        dv = jnp.dot(_dropped(p, keep, rate).astype(g.dtype), g, preferred_element_type=F32)
        return (dq_t * d**-0.5).astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)

    dq_t, dk, dv = _by_pairs(pair, h, qp, kp, vp, op, bias, lse, _pairs(g))
    return (*(_from_pairs(t, h) for t in (jnp.swapaxes(dq_t, 1, 2), dk, dv)), None, None)


_attention.defvjp(_attention_fwd, _attention_bwd)


# --- Pack and unpack with the long side's projections folded in ---------------------------
#
# With a short side of l rows and h heads, attention over the long side's projections can be
# computed from the long side x itself: pack's scores q_h k_h^T = (q_h w_k,h^T) x^T and its
# outputs p_h v_h = (p_h x) w_v,h; unpack's scores q_h k_h^T = x (w_q,h k_h^T) and, through
# the output projection, sum_h p_h v_h w_o,h = p (v w_o). Per long-side row that is 2 h l d
# multiply-adds instead of 2 d^2 for two [n, d] projections plus 2 l d for the attention, and
# no head-major copies of [batch, n, dim] arrays. The parameters are the same; only the order
# of the sums changes.


def folding_saves(heads: int, proj_len: int, dim: int) -> bool:
    """Whether pack_folded / unpack_folded do at most half the multiply-adds of the
    projections and the attention apart: 2 h l <= d + l. (Its many small per-example matmuls
    need that margin: the CPU step's Luna-16, 128 against 144, ran 1.14x faster folded; the
    tiny demo's, d = 64, 64 against 80, 0.73x.)"""
    return 2 * heads * proj_len <= dim + proj_len


def _probabilities(s, key_mask, seed, rate, heads_axis):
    """masked_softmax over the last axis (key_mask [batch, 1, 1, cols]), then dropout with
    attention_keep_mask's bits, for scores laid out [batch, heads, rows, cols] (heads_axis 1)
    or [batch, rows, heads, cols] (heads_axis 2)."""
    p = reference.masked_softmax(s, key_mask)
    if rate == 0.0:
        return p
    if heads_axis == 1:
        return _dropped(p, dropout_lib.attention_keep_mask(seed, p.shape, rate), rate)
    b, rows, h, cols = p.shape
    keep = dropout_lib.attention_keep_mask(seed, (b, h, rows, cols), rate)
    return _dropped(p, jnp.swapaxes(keep, 1, 2), rate)


def pack_folded(q, x, w_k, w_v, b_v, key_mask, *, dropout_rate=0.0, dropout_rng=None,
                dropout_seed=None):
    """pack_attention(q, x @ w_k + b_k, x @ w_v + b_v, key_mask) for any key bias b_k (it
    shifts a row of scores by a constant, which the softmax ignores), without forming the
    keys and values. q [batch, l, heads, head_dim]; x [batch, n, dim]; w_k, w_v [dim, dim];
    b_v [dim]; key_mask [batch, n]. Returns [batch, l, heads, head_dim]."""
    b, l, h, e = q.shape
    seed = dropout_lib.resolve_seed(dropout_rate, dropout_rng, dropout_seed)
    heads = lambda w: w.astype(q.dtype).reshape(-1, h, e)
    qk = jnp.einsum("blhe,dhe->bhld", q * e**-0.5, heads(w_k))
    s = jnp.einsum("bhld,bnd->bhln", qk, x.astype(q.dtype), preferred_element_type=F32)
    p = _probabilities(s, key_mask[:, None, None, :], seed, float(dropout_rate), 1)
    px = jnp.einsum("bhln,bnd->bhld", p.astype(q.dtype), x.astype(q.dtype),
                    preferred_element_type=F32)
    o = jnp.einsum("bhld,dhe->blhe", px.astype(q.dtype), heads(w_v), preferred_element_type=F32)
    # the value bias, weighted by each row's sum of (dropped-out) probabilities
    o = o + jnp.swapaxes(jnp.sum(p, axis=-1), 1, 2)[..., None] * b_v.reshape(h, e)
    return o.astype(q.dtype)


def unpack_folded(x, w_q, b_q, k, v, w_o, b_o, key_mask, *, dropout_rate=0.0,
                  dropout_rng=None, dropout_seed=None):
    """unpack_attention(x @ w_q + b_q, k, v, key_mask), its heads joined, @ w_o + b_o,
    without forming the queries or the per-head outputs. x [batch, r, dim]; w_q, w_o [dim,
    dim]; b_q, b_o [dim]; k, v [batch, l, heads, head_dim]; key_mask [batch, l]. Returns
    [batch, r, dim]."""
    b, l, h, e = k.shape
    seed = dropout_lib.resolve_seed(dropout_rate, dropout_rng, dropout_seed)
    k = k * e**-0.5
    kq = jnp.einsum("dhe,bjhe->bdhj", w_q.astype(k.dtype).reshape(-1, h, e), k)
    bias = jnp.einsum("he,bjhe->bhj", b_q.astype(k.dtype).reshape(h, e), k,
                      preferred_element_type=F32)  # the query bias's part of the scores
    s = jnp.einsum("bnd,bdhj->bnhj", x.astype(k.dtype), kq, preferred_element_type=F32)
    p = _probabilities(s + bias[:, None], key_mask[:, None, None, :], seed,
                       float(dropout_rate), 2)
    vo = jnp.einsum("bjhe,hef->bhjf", v, w_o.astype(v.dtype).reshape(h, e, -1))
    out = jnp.einsum("bnhj,bhjf->bnf", p.astype(v.dtype), vo, preferred_element_type=F32)
    return (out + b_o).astype(k.dtype)
