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


def _folded_case(seed, batch, n, l, heads, head_dim):
    """The long side x [batch, n, dim], the short side's q (or k, v) [batch, l, heads,
    head_dim], weights [dim, dim] and biases [dim] of scale ~1, and masks with one full
    example and one with no real position."""
    rng = np.random.default_rng(seed)
    d = heads * head_dim
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    x, short = normal(batch, n, d), normal(batch, l, heads, head_dim)
    weights = [normal(d, d) * d**-0.5 for _ in range(3)]
    biases = [normal(d) * 0.3 for _ in range(3)]
    lengths = rng.integers(1, n + 1, size=batch)
    lengths[0], lengths[-1] = n, 0
    mask = lambda m: jnp.arange(m)[None, :] < jnp.asarray(np.minimum(lengths, m))[:, None]
    return x, short, weights, biases, mask(n), mask(l)


FOLDED_CASES = [(3, 101, 16, 4, 8), (2, 37, 5, 2, 16), (3, 50, 4, 4, 4)]


@pytest.mark.parametrize("rate", [0.0, 0.3])
@pytest.mark.parametrize("case", FOLDED_CASES)
def test_pack_folded_is_pack_attention_over_the_projections(case, rate):
    x, q, (w_k, w_v, _), (b_k, b_v, _), x_mask, _ = _folded_case(0, *case)
    h, e = q.shape[2:]
    kw = dict(dropout_rate=rate, dropout_seed=jnp.uint32(7))
    project = lambda x, w, b: (x @ w + b).reshape(x.shape[:2] + (h, e))

    def plain(q, x, w_k, w_v, b_v):  # b_k: any key bias, which the softmax ignores
        k, v = project(x, w_k, b_k), project(x, w_v, b_v)
        return reference.attention(q, k, v, x_mask, **kw)

    folded = lambda q, x, w_k, w_v, b_v: xla.pack_folded(q, x, w_k, w_v, b_v, x_mask, **kw)
    args = (q, x, w_k, w_v, b_v)
    loss = lambda fn: lambda *a: jnp.sum(jnp.sin(fn(*a)))
    with jax.default_matmul_precision("highest"):
        out, want = folded(*args), plain(*args)
        grads = jax.jit(jax.grad(loss(folded), argnums=range(5)))(*args)
        want_grads = jax.jit(jax.grad(loss(plain), argnums=range(5)))(*args)
    assert _rel(out, want) < 2e-6
    assert np.all(np.asarray(out[-1]) == 0.0)  # no real position: zeros, as the reference
    for g, w in zip(grads, want_grads):
        assert _rel(g, w) < 1e-5


@pytest.mark.parametrize("rate", [0.0, 0.3])
@pytest.mark.parametrize("rows", [None, 1])  # every row; the CLS row alone
@pytest.mark.parametrize("case", FOLDED_CASES)
def test_unpack_folded_is_unpack_attention_then_the_output_projection(case, rows, rate):
    x, k, (w_q, w_o, w_v), (b_q, b_o, b_v), _, p_mask = _folded_case(1, *case)
    x = x if rows is None else x[:, :rows]
    b, l, h, e = k.shape
    v = (k.reshape(b, l, -1) @ w_v + b_v).reshape(k.shape)  # any values: k's projection
    kw = dict(dropout_rate=rate, dropout_seed=jnp.uint32(9))

    def plain(x, w_q, b_q, k, v, w_o, b_o):
        q = (x @ w_q + b_q).reshape(x.shape[:2] + (h, e))
        y = reference.attention(q, k, v, p_mask, **kw)
        return y.reshape(x.shape) @ w_o + b_o

    folded = lambda *a: xla.unpack_folded(*a, p_mask, **kw)
    args = (x, w_q, b_q, k, v, w_o, b_o)
    loss = lambda fn: lambda *a: jnp.sum(jnp.sin(fn(*a)))
    with jax.default_matmul_precision("highest"):
        out, want = folded(*args), plain(*args)
        grads = jax.jit(jax.grad(loss(folded), argnums=range(7)))(*args)
        want_grads = jax.jit(jax.grad(loss(plain), argnums=range(7)))(*args)
    assert out.shape == x.shape
    assert _rel(out, want) < 2e-6
    for g, w in zip(grads, want_grads):
        assert _rel(g, w) < 1e-5


def test_folding_where_it_saves_multiply_adds():
    from luna_lra import ops

    assert xla.folding_saves(heads=4, proj_len=16, dim=128)  # the CPU step's Luna-16
    assert xla.folding_saves(heads=8, proj_len=16, dim=512)  # the LRA recipes' Luna-16
    assert not xla.folding_saves(heads=4, proj_len=256, dim=128)
    assert not xla.folding_saves(heads=8, proj_len=128, dim=512)
    assert not xla.folding_saves(heads=4, proj_len=16, dim=64)  # 4/5 of them: the tiny demo
    assert not xla.folding_saves(heads=4, proj_len=16, dim=48)  # h l = d + l: no saving
    assert ops.folds(4, 16, 128, impl="xla") and ops.folds(4, 16, 128, impl="auto")
    assert not ops.folds(4, 16, 128, impl="pallas", interpret=True)  # the kernels, not XLA
    assert not ops.folds(4, 256, 128, impl="xla")
