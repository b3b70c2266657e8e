"""Counter-based attention dropout shared by the oracle, the XLA form and the Pallas kernels.

The keep/drop decision for attention probability [b, h, row, col] is a pure function of
(seed, b, h, row, col): a kernel can regenerate the same mask in its backward pass without
storing it, and the reference reproduces the kernels' mask bit for bit. The hash uses only
32-bit integer multiply, xor and shift, which Triton, Mosaic and XLA all lower.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _mix32(x):
    # A 32-bit integer finaliser ("lowbias32", Wellons): every input bit flips each output
    # bit with probability close to 1/2.
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    x = x ^ (x >> 16)
    return x


def seed_from_rng(rng: jax.Array) -> jax.Array:
    """A uint32 scalar seed drawn from a JAX PRNG key."""
    return jax.random.bits(rng, (), jnp.uint32)


def resolve_seed(rate: float, rng=None, seed=None) -> jax.Array:
    """The uint32 seed of a dropout call: `seed` if given, else drawn from `rng`; 0 when
    rate is 0 (no dropout needs none)."""
    if rate <= 0.0:
        return jnp.zeros((), jnp.uint32)
    if seed is None:
        if rng is None:
            raise ValueError("dropout_rate > 0 needs dropout_rng (or dropout_seed)")
        seed = seed_from_rng(rng)
    return jnp.asarray(seed, jnp.uint32)


def keep_mask_seed(seed, index):
    """A seed for shard `index` of a computation seeded with `seed` (uint32 in and out)."""
    return _mix32(jnp.asarray(seed).astype(jnp.uint32) ^ _mix32(
        jnp.asarray(index).astype(jnp.uint32) + jnp.uint32(0x632BE5AB)))


def keep_threshold(rate: float) -> int:
    """Keep an element when its hash is >= this uint32 threshold (drop probability `rate`)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    return min(int(round(rate * 2.0**32)), 2**32 - 1)


def keep_mask(seed, batch_idx, head_idx, row_idx, col_idx, rate: float):
    """Boolean keep mask, broadcast over the integer index arrays given."""
    u = lambda a: jnp.asarray(a).astype(jnp.uint32)
    h = _mix32(u(seed) ^ _mix32(u(batch_idx) * jnp.uint32(0x9E3779B9) + u(head_idx)))
    h = _mix32(h ^ u(row_idx))
    h = _mix32(h + u(col_idx) * jnp.uint32(0x85EBCA6B))
    return h >= jnp.uint32(keep_threshold(rate))


def attention_keep_mask(seed, shape, rate: float):
    """Keep mask for attention probabilities of shape [batch, heads, rows, cols]."""
    b, h, r, c = (jnp.arange(s, dtype=jnp.uint32) for s in shape)
    return keep_mask(
        seed, b[:, None, None, None], h[None, :, None, None], r[None, None, :, None],
        c[None, None, None, :], rate,
    )
