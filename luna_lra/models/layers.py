"""The building blocks both encoders share, written for speed with the parameters and numbers
of their flax.linen / PyTorch counterparts:

- `Dense` (`linear`): nn.Dense's parameters and output, with a hand-written backward pass that
  suits XLA:CPU (weight gradient as (g^T x)^T, bias gradient as a matmul, `sum_leading`).
- `DenseKernel` + `fused_dense`: several nn.Dense layers that read the same input as one
  matmul over their concatenated kernels (same parameter names, shapes and initial values).
- `LayerNorm`: nn.LayerNorm's parameters and output (two-pass variance), with a hand-written
  backward pass.
- `Dropout`: nn.Dropout's exact mask bits; jax.random's threefry runs as a rolled loop over
  whole arrays on XLA:CPU, here its rounds are unrolled into one fused pass (7x faster there).
- `gelu`: PyTorch's F.gelu formula, x/2 (1 + erf(x/sqrt 2)), with a one-pass backward.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_SQRT_HALF = np.float32(np.sqrt(0.5))
_INV_SQRT_2PI = np.float32(1.0 / np.sqrt(2.0 * np.pi))


@jax.custom_vjp
def gelu(x):
    """The exact GELU as PyTorch computes it, x/2 (1 + erf(x/sqrt 2)). jax.nn.gelu's erfc form
    runs several times slower on XLA:CPU; its autodiff also keeps erf(x) for the backward
    pass, which here recomputes it from x in the one pass that reads the gradient."""
    return x * 0.5 * (1.0 + jax.lax.erf(x * _SQRT_HALF.astype(x.dtype)))


def _gelu_bwd(x, g):
    x = jax.lax.optimization_barrier(x)  # else XLA merges this erf with the forward's, kept
    cdf = 0.5 * (1.0 + jax.lax.erf(x * _SQRT_HALF.astype(x.dtype)))
    pdf = jnp.exp(-0.5 * x * x) * _INV_SQRT_2PI.astype(x.dtype)
    return (g * (cdf + x * pdf),)


gelu.defvjp(lambda x: (gelu(x), x), _gelu_bwd)


def sum_leading(t, keep: int = 1):
    """t summed over all but its last `keep` axes, as a ones-vector matmul: XLA:CPU reduces
    over major axes about 25x slower than it runs this GEMV (6.7 ms vs 0.27 ms for
    [8, 1001, 128] over the batch); accumulates in float32."""
    rows = int(np.prod(t.shape[:t.ndim - keep]))
    out = jnp.dot(jnp.ones((rows,), t.dtype), t.reshape(rows, -1),
                  preferred_element_type=jnp.float32)
    return out.reshape(t.shape[t.ndim - keep:]).astype(t.dtype)


@jax.custom_vjp
def linear(x, w, b):
    """x [..., k] @ w [k, n] + b [n]."""
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ()))) + b


def _linear_fwd(x, w, b):
    return linear(x, w, b), (x, w)


def _linear_bwd(res, g):
    x, w = res
    dx = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())))
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    # (g^T x)^T: XLA:CPU then copies the narrow x, not the wide g, into a transposed layout
    return dx, jnp.dot(g2.T, x2).T, sum_leading(g)


linear.defvjp(_linear_fwd, _linear_bwd)


@jax.custom_vjp
def add_positions(x, table):
    """x [batch, n, dim] + table[None] [1, n, dim]."""
    return x + table[None]


add_positions.defvjp(lambda x, table: (x + table[None], None),
                     lambda _, g: (g, sum_leading(g, keep=2)))


class Dense(nn.Module):
    """nn.Dense(features, kernel_init, dtype) with the same parameters, through `linear`."""

    features: int
    kernel_init: Callable
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return linear(x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype))


class DenseKernel(nn.Module):
    """The kernel [in, features] and bias of an nn.Dense of this name, not applied: fused_dense
    concatenates several. Parameters are created in nn.Dense's order (kernel, then bias), so
    they get the same names, shapes and initial values."""

    features: int
    kernel_init: Callable

    @nn.compact
    def __call__(self, in_features: int):
        kernel = self.param("kernel", self.kernel_init, (in_features, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return kernel, bias


def fused_dense(x, kernels, dtype):
    """x [..., in] through several (kernel, bias) pairs at once: one matmul, split after.
    Computes in `dtype` as nn.Dense(dtype=dtype) does."""
    w = jnp.concatenate([k for k, _ in kernels], axis=1).astype(dtype)
    b = jnp.concatenate([b for _, b in kernels]).astype(dtype)
    y = linear(x.astype(dtype), w, b)
    return jnp.split(y, np.cumsum([k.shape[1] for k, _ in kernels])[:-1], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x, scale, bias, eps):
    return _layer_norm_fwd(x, scale, bias, eps)[0]


def _layer_norm_fwd(x, scale, bias, eps):
    x32 = x.astype(jnp.float32)
    centred = x32 - jnp.mean(x32, axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + eps)
    xhat = centred * rstd
    # a 0-d array of x's dtype: the backward returns dx in it
    return xhat * scale + bias, (xhat, rstd, scale, jnp.zeros((), x.dtype))


def _layer_norm_bwd(eps, res, g):
    xhat, rstd, scale, x_dtype = res
    gs = g * scale
    dx = rstd * (gs - jnp.mean(gs, -1, keepdims=True)
                 - xhat * jnp.mean(gs * xhat, -1, keepdims=True))
    return dx.astype(x_dtype.dtype), sum_leading(g * xhat), sum_leading(g)


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
    """nn.LayerNorm(epsilon) over the last axis: statistics and output in float32 (as
    nn.LayerNorm's float32 parameters promote it), parameters `scale` (ones) and `bias`."""

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones_init(), (d,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (d,), jnp.float32)
        return _layer_norm(x, scale, bias, self.epsilon)


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry_bits(key_data, shape):
    """jax.random.bits(key, shape) for a threefry2x32 key with jax_threefry_partitionable (the
    default): threefry2x32 of the 64-bit element index, both output words xor-ed. Written out
    round by round (JAX's own CPU lowering loops over whole arrays)."""
    k0, k1 = key_data[0], key_data[1]
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x1 = jax.lax.iota(jnp.uint32, int(np.prod(shape))).reshape(shape) + ks[1]
    x0 = jnp.broadcast_to(ks[0], shape)  # the index's high word is 0 below 2**32 elements
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r)))
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0 ^ x1


def bernoulli(rng, p: float, shape):
    """jax.random.bernoulli(rng, p, shape), bit for bit."""
    typed = jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
    impl = (str(jax.random.key_impl(rng)) if typed
            else getattr(jax.config, "jax_default_prng_impl", None))
    # anything else (another generator, the old bit layout, 2**32 elements): JAX's own
    if (impl != "threefry2x32" or getattr(jax.config, "jax_threefry_partitionable", None)
            is not True or int(np.prod(shape)) >= 2**32):
        return jax.random.bernoulli(rng, p, shape)
    bits = _threefry_bits(jax.random.key_data(rng) if typed else rng, shape)
    # jax.random.uniform's float in [0, 1) from the top 23 bits, compared as jax does
    floats = jax.lax.bitcast_convert_type((bits >> np.uint32(9)) | np.uint32(0x3F800000),
                                          jnp.float32) - np.float32(1.0)
    return floats < np.float32(p)


class Dropout(nn.Module):
    """nn.Dropout(rate) with the same rng stream and mask (see `bernoulli`)."""

    rate: float

    @nn.compact
    def __call__(self, x, *, deterministic: bool):
        if deterministic or self.rate == 0.0:
            return x
        if self.rate == 1.0:
            return jnp.zeros_like(x)
        keep_prob = 1.0 - self.rate
        keep = bernoulli(self.make_rng("dropout"), keep_prob, x.shape)
        return jax.lax.select(keep, x / keep_prob, jnp.zeros_like(x))
