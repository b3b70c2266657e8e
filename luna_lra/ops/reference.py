"""The oracle: plain softmax attention in jnp, which every other form is tested against (the
fast XLA form in xla.py and the Pallas kernels), as jax's `mha_reference` beside its kernels.

Pack:   the short side P (l rows) attends over the long side X (n rows).
Unpack: the long side X (n rows) attends over the packed sequence (l rows).
Both are one softmax attention with a key padding mask; they differ only in which side is
short, which matters to the faster forms, not to this one.
"""

from __future__ import annotations

import jax.numpy as jnp

from luna_lra.ops import dropout as dropout_lib

NEG = -1e30  # finite "minus infinity" of masked scores, so masked scores never make inf - inf
F32 = jnp.float32


def attention(q, k, v, key_mask, *, dropout_rate=0.0, dropout_rng=None, dropout_seed=None):
    """Softmax attention with a key padding mask.

    q: [batch, q_len, heads, head_dim]; k, v: [batch, kv_len, heads, head_dim];
    key_mask: [batch, kv_len] bool, True = real token. Scores and softmax in float32 whatever
    the input dtype, scale head_dim**-0.5; masked keys get no weight and a query whose keys are
    all masked gets zeros. Dropout on the probabilities uses the counter-based hash in
    ops/dropout.py, seeded from dropout_rng (or an explicit uint32 dropout_seed).
    Returns [batch, q_len, heads, head_dim] in q.dtype.
    """
    check_shapes(q, k, v, key_mask)
    scale = q.shape[-1] ** -0.5
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=F32) * scale
    p = masked_softmax(s, key_mask[:, None, None, :])
    if dropout_rate > 0.0:
        seed = dropout_lib.resolve_seed(dropout_rate, dropout_rng, dropout_seed)
        keep = dropout_lib.attention_keep_mask(seed, p.shape, dropout_rate)
        p = jnp.where(keep, p / (1.0 - dropout_rate), 0.0)
    out = jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v, preferred_element_type=F32)
    return out.astype(q.dtype)


def pack_attention(q, k, v, key_mask, **kw):
    """Pack: q = P side [batch, l, heads, head_dim]; k, v = X side [batch, n, heads, head_dim];
    key_mask [batch, n]. Returns [batch, l, heads, head_dim]."""
    return attention(q, k, v, key_mask, **kw)


def unpack_attention(q, k, v, key_mask, **kw):
    """Unpack: q = X side [batch, n, heads, head_dim]; k, v = packed side [batch, l, heads,
    head_dim]; key_mask [batch, l]. Returns [batch, n, heads, head_dim]."""
    return attention(q, k, v, key_mask, **kw)


def masked_softmax(s, mask):
    """Softmax over the last axis of float32 scores; masked entries 0, all-masked rows 0."""
    s = jnp.where(mask, s, NEG)
    m = jnp.max(s, axis=-1, keepdims=True)
    p = jnp.where(mask, jnp.exp(s - m), 0.0)
    denom = jnp.sum(p, axis=-1, keepdims=True)
    return p / jnp.where(denom > 0, denom, 1.0)


def check_shapes(q, k, v, key_mask):
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            f"q, k, v must be [batch, length, heads, head_dim]; got {q.shape}, {k.shape}, {v.shape}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"incompatible q {q.shape}, k {k.shape}, v {v.shape}")
    if key_mask.shape != k.shape[:2]:
        raise ValueError(f"key_mask must be [batch, kv_len] = {k.shape[:2]}, got {key_mask.shape}")
