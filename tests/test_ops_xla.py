"""The fast XLA form (ops/xla.py) of pack_attention / unpack_attention, a few (example, head)
pairs at a time, against the oracle (reference.attention): outputs and gradients to float32
rounding, masks, all-padded examples, dropout (the same mask bits), bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from luna_lra.ops import reference, xla


def _case(seed, batch, q_len, kv_len, heads, head_dim, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.normal(size=(batch, n, heads, head_dim)), dtype)
               for n in (q_len, kv_len, kv_len))
    lengths = rng.integers(1, kv_len + 1, size=batch)
    lengths[0], lengths[-1] = kv_len, 0  # one full example, one with every key masked
    return q, k, v, jnp.arange(kv_len)[None, :] < jnp.asarray(lengths)[:, None]


CASES = [  # (op, batch, q_len, kv_len, heads, head_dim)
    (xla.pack_attention, 3, 16, 101, 4, 32),  # Luna-16, 4 heads (the CPU step)
    (xla.pack_attention, 3, 40, 53, 4, 8),
    (xla.unpack_attention, 3, 101, 16, 8, 16),
    (xla.unpack_attention, 2, 29, 5, 4, 16),
    (xla.unpack_attention, 2, 1, 33, 5, 8),  # the CLS row alone (last_layer_cls_only)
]


def _rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))


@pytest.mark.parametrize("rate", [0.0, 0.3])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0].__name__}{c[1:]}")
def test_matches_the_reference_with_gradients(case, rate, monkeypatch):
    op, *shape = case
    q, k, v, mask = _case(0, *shape)
    # 2 (example, head) pairs per step: several steps and a last, shorter one
    monkeypatch.setattr(xla, "CHUNK_ELEMENTS", 2 * q.shape[1] * k.shape[1])
    kw = dict(dropout_rate=rate, dropout_seed=jnp.uint32(11))
    loss = lambda fn: lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v, mask, **kw)))
    with jax.default_matmul_precision("highest"):
        out, want = op(q, k, v, mask, **kw), reference.attention(q, k, v, mask, **kw)
        grads = jax.jit(jax.grad(loss(op), argnums=(0, 1, 2)))(q, k, v)
        want_grads = jax.jit(jax.grad(loss(reference.attention), argnums=(0, 1, 2)))(q, k, v)
    assert _rel(out, want) < 2e-6
    assert np.all(np.asarray(out[-1]) == 0.0)  # every key masked: zeros
    for g, w in zip(grads, want_grads):
        assert _rel(g, w) < 2e-6
        assert np.all(np.isfinite(np.asarray(g)))
    if op is xla.pack_attention:  # masked keys get no weight, so no gradient
        key_grads = np.asarray(grads[1])
        assert np.all(key_grads[~np.asarray(mask)] == 0.0)


def test_bfloat16_inputs_keep_a_float32_softmax():
    q, k, v, mask = _case(1, 2, 16, 64, 4, 16, jnp.bfloat16)
    out = xla.pack_attention(q, k, v, mask)
    assert out.dtype == jnp.bfloat16
    want = reference.attention(q, k, v, mask)
    assert _rel(out.astype(jnp.float32), want.astype(jnp.float32)) < 1e-2


def test_pairs_per_chunk_keeps_a_step_within_the_budget():
    assert xla.pairs_per_chunk(32, 256, 1001) == 4  # Luna-256 at n = 1,001: 4 pairs a step
    assert xla.pairs_per_chunk(32, 16, 1001) == 32  # Luna-16: every pair at once
    assert xla.pairs_per_chunk(32, 256, 4096) == 1
    assert xla.pairs_per_chunk(32, 1, 256) == 32  # the CLS row alone: every pair at once


@pytest.mark.parametrize("op, l, heads", [(xla.unpack_attention, 4, 2), (xla.pack_attention, 6, 3)])
def test_dropout_mask_is_the_references(op, l, heads):
    """The mask is drawn pair by pair; its bits are attention's [b, h, rows, cols]: with v =
    identity rows, the output shows which weights were kept."""
    b, n = 2, 9
    q_len, kv_len = (l, n) if op is xla.pack_attention else (n, l)
    q, k, _, _ = _case(3, b, q_len, kv_len, heads, kv_len)
    v = jnp.broadcast_to(jnp.eye(kv_len)[None, :, None, :], (b, kv_len, heads, kv_len))
    mask = jnp.ones((b, kv_len), bool)
    kw = dict(dropout_rate=0.5, dropout_seed=jnp.uint32(5))
    keep = lambda fn: np.asarray(fn(q, k, v, mask, **kw)) != 0.0
    np.testing.assert_array_equal(keep(op), keep(reference.attention))
