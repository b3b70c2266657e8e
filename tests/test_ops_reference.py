"""The reference attention cores against jax.nn.dot_product_attention and a float64 numpy oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from luna_lra import ops
from luna_lra.ops import dropout as dropout_lib


def _numpy_attention(q, k, v, key_mask):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    mask = np.asarray(key_mask)[:, None, None, :]
    s = np.where(mask, s, -np.inf)
    out = np.zeros(q.shape, np.float64)
    for b in range(q.shape[0]):
        if not mask[b].any():
            continue  # all keys masked: zeros
        m = s[b].max(-1, keepdims=True)
        p = np.exp(s[b] - m)
        p /= p.sum(-1, keepdims=True)
        out[b] = np.einsum("hqk,khd->qhd", p, v[b])
    return out


def _random_case(seed, batch, q_len, kv_len, heads, head_dim, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.normal(size=(batch, n, heads, head_dim)), dtype)
               for n in (q_len, kv_len, kv_len))
    lengths = rng.integers(0, kv_len + 1, size=batch)
    lengths[0] = kv_len  # one full row, one possibly empty
    key_mask = jnp.arange(kv_len)[None, :] < jnp.asarray(lengths)[:, None]
    return q, k, v, key_mask


SHAPES = [  # (batch, q_len, kv_len, heads, head_dim)
    (2, 4, 37, 2, 8),  # pack-like: short queries, long ragged keys
    (3, 29, 5, 4, 16),  # unpack-like: long queries, short keys
    (1, 1, 1, 1, 4),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fn", [ops.pack_attention, ops.unpack_attention])
def test_matches_float64_numpy(shape, fn):
    q, k, v, key_mask = _random_case(0, *shape)
    key_mask = key_mask.at[-1].set(False) if shape[0] > 1 else key_mask  # an all-padded example
    out = fn(q, k, v, key_mask)
    ref = _numpy_attention(q, k, v, key_mask)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=2e-5, atol=2e-6)
    if shape[0] > 1:
        assert np.all(np.asarray(out[-1]) == 0.0)


@pytest.mark.parametrize("shape", SHAPES[:2])
def test_matches_jax_dot_product_attention_with_grads(shape):
    q, k, v, key_mask = _random_case(1, *shape)
    key_mask = key_mask.at[:, 0].set(True)  # jax's op has no all-masked convention; avoid it

    def ours(q, k, v):
        return jnp.sum(jnp.sin(ops.pack_attention(q, k, v, key_mask)))

    def theirs(q, k, v):
        mask = key_mask[:, None, None, :]
        return jnp.sum(jnp.sin(jax.nn.dot_product_attention(q, k, v, mask=mask)))

    np.testing.assert_allclose(ours(q, k, v), theirs(q, k, v), rtol=1e-5)
    g_ours = jax.grad(ours, argnums=(0, 1, 2))(q, k, v)
    g_theirs = jax.grad(theirs, argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g_ours, g_theirs):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def test_gradients_are_finite_and_zero_for_all_masked_rows():
    q, k, v, key_mask = _random_case(2, 2, 3, 6, 2, 4)
    key_mask = key_mask.at[1].set(False)
    grads = jax.grad(lambda q, k, v: ops.unpack_attention(q, k, v, key_mask).sum(),
                     argnums=(0, 1, 2))(q, k, v)
    for g in grads:
        assert np.all(np.isfinite(g))
        assert np.all(np.asarray(g[1]) == 0.0)


def test_padded_keys_do_not_change_the_output():
    q, k, v, _ = _random_case(3, 2, 4, 10, 2, 8)
    mask = jnp.arange(10)[None, :] < jnp.array([[6], [10]])
    out = ops.pack_attention(q, k, v, mask)
    garbage = jax.random.normal(jax.random.key(9), k.shape) * 100
    pad = ~mask[:, :, None, None]
    out2 = ops.pack_attention(q, jnp.where(pad, garbage, k), jnp.where(pad, garbage, v), mask)
    np.testing.assert_allclose(out, out2, rtol=1e-6, atol=1e-6)


def test_bfloat16_inputs_use_float32_softmax():
    q, k, v, key_mask = _random_case(4, 2, 8, 33, 2, 16, dtype=jnp.bfloat16)
    out = ops.pack_attention(q, k, v, key_mask)
    assert out.dtype == jnp.bfloat16
    ref = _numpy_attention(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), key_mask)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=3e-2, atol=3e-2)


def test_dropout_mask_matches_the_hash_and_rate():
    q, k, v, key_mask = _random_case(5, 2, 16, 64, 2, 8)
    key_mask = jnp.ones_like(key_mask)
    rate = 0.3
    seed = jnp.uint32(1234)
    out = ops.reference.pack_attention(q, k, v, key_mask, dropout_rate=rate, dropout_seed=seed)
    keep = dropout_lib.attention_keep_mask(seed, (2, 2, 16, 64), rate)
    assert abs(float(1.0 - keep.mean()) - rate) < 0.02
    # Rebuild the expected output from the explicit mask in numpy.
    s = np.einsum("bqhd,bkhd->bhqk", np.float64(q), np.float64(k)) / np.sqrt(8)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p = np.where(np.asarray(keep), p / (1 - rate), 0.0)
    expected = np.einsum("bhqk,bkhd->bqhd", p, np.float64(v))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # Same seed, same mask; another seed, another mask.
    out_again = ops.reference.pack_attention(q, k, v, key_mask, dropout_rate=rate, dropout_seed=seed)
    np.testing.assert_array_equal(out, out_again)
    other = dropout_lib.attention_keep_mask(jnp.uint32(1235), (2, 2, 16, 64), rate)
    assert float(jnp.mean(other != keep)) > 0.2


def test_bad_shapes_are_refused():
    q, k, v, key_mask = _random_case(6, 2, 4, 8, 2, 4)
    with pytest.raises(ValueError, match="key_mask"):
        ops.pack_attention(q, k, v, key_mask[:, :5])
    with pytest.raises(ValueError, match="impl"):
        ops.pack_attention(q, k, v, key_mask, impl="cuda")


def test_record_choices_says_what_each_call_ran():
    q = jnp.ones((1, 4, 1, 32))
    k = jnp.ones((1, 8, 1, 32))
    mask = jnp.ones((1, 8), bool)
    with ops.record_choices() as choices:
        ops.pack_attention(q, k, k, mask, impl="auto")  # CPU: auto runs the reference
        ops.pack_attention(q, k, k, mask, impl="pallas", interpret=True)
        ops.unpack_attention(k, q, q, jnp.ones((1, 4), bool), impl="xla")
    assert choices == [("pack", "xla"), ("pack", "pallas_gpu (interpret)"), ("unpack", "xla")]
    ops.pack_attention(q, k, k, mask)  # outside the context: not recorded
    assert len(choices) == 3
