"""The building blocks both encoders share, written for speed with the parameters and numbers
of their flax.linen / PyTorch counterparts:

- `Dense` (`linear`): nn.Dense's parameters and output, with a hand-written backward pass that
  suits XLA:CPU (weight gradient as (g^T x)^T, bias gradient as a matmul, `sum_leading`).
- `DenseKernel` + `fused_dense`: several nn.Dense layers that read the same input as one
  matmul over their concatenated kernels (same parameter names, shapes and initial values).
- `LayerNorm`: nn.LayerNorm's parameters and output (two-pass variance), with a hand-written
  backward pass whose broadcasts XLA cannot share with the forward pass (and so keep alive).
- `Dropout`: nn.Dropout's exact mask bits; jax.random's threefry runs as a rolled loop over
  whole arrays on XLA:CPU, here its rounds are unrolled into one fused pass (7x faster there).
- `gelu`: PyTorch's F.gelu formula, x/2 (1 + erf(x/sqrt 2)), or flax's tanh form;
  `feed_forward`: Dense -> GELU -> dropout -> Dense as one custom_vjp (the GELU's backward in
  one fused pass).
- `Dropout` and `bernoulli` can draw a mask for the first rows of each example only, the bits
  the whole array's mask has there (the last layer under CLS pooling computes only those).
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
_SQRT_2_OVER_PI = np.float32(np.sqrt(2.0 / np.pi))


def gelu(x, approximate: bool = False):
    """GELU: exact, x/2 (1 + erf(x/sqrt 2)) as PyTorch's F.gelu computes it (jax.nn.gelu's
    erfc form runs several times slower on XLA:CPU), or with approximate=True the tanh form
    of flax's nn.gelu default, jax.nn.gelu(approximate=True)."""
    c = lambda v: np.float32(v).astype(x.dtype)
    if approximate:
        return x * (c(0.5) * (c(1.0) + jnp.tanh(c(_SQRT_2_OVER_PI) * (x + c(0.044715) * x**3))))
    return x * 0.5 * (1.0 + jax.lax.erf(x * c(_SQRT_HALF)))


def gelu_grad(x, approximate: bool = False):
    """d gelu(x) / dx."""
    c = lambda v: np.float32(v).astype(x.dtype)
    if approximate:
        t = jnp.tanh(c(_SQRT_2_OVER_PI) * (x + c(0.044715) * x**3))
        dinner = c(_SQRT_2_OVER_PI) * (c(1.0) + c(3 * 0.044715) * x * x)
        return c(0.5) * (c(1.0) + t) + c(0.5) * x * (c(1.0) - t * t) * dinner
    cdf = 0.5 * (1.0 + jax.lax.erf(x * c(_SQRT_HALF)))
    return cdf + x * jnp.exp(-0.5 * x * x) * c(_INV_SQRT_2PI)


def sum_leading(t, keep: int = 1):
    """t summed over all but its last `keep` axes, as a ones-vector matmul: XLA:CPU reduces
    over major axes about 25x slower than it runs this GEMV (6.7 ms vs 0.27 ms for
    [8, 1001, 128] over the batch); accumulates in float32."""
    rows = int(np.prod(t.shape[:t.ndim - keep]))
    out = jnp.dot(jnp.ones((rows,), t.dtype), t.reshape(rows, -1),
                  preferred_element_type=jnp.float32, precision=jax.lax.Precision.HIGHEST)
    return out.reshape(t.shape[t.ndim - keep:]).astype(t.dtype)


@jax.custom_vjp
def linear(x, w, b):
    """x [..., k] @ w [k, n] + b [n] (b None: no bias)."""
    y = jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))
    return y if b is None else y + b


def _linear_fwd(x, w, b):
    return linear(x, w, b), (x, w, b is None)


def _linear_bwd(res, g):
    x, w, no_bias = res
    dx, dw, db = _linear_grads(x, w, g)
    return dx, dw, None if no_bias else db


def _linear_grads(x, w, g):
    """(dx, dw, db) of x @ w + b for the output gradient g."""
    dx = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())))
    return dx, weight_grad(x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])), sum_leading(g)


def weight_grad(x, g):
    """x^T g for x [rows, k], g [rows, n]. XLA:CPU runs x^T g outside YNNPACK, on a
    transposed operand; contracting over a unit axis as well makes it copy x into a
    transposed layout first (on all cores) and run a plain YNNPACK matmul: 1.1-1.5x faster
    at the CPU step's shapes."""
    if jax.default_backend() != "cpu":
        return jnp.dot(x.T, g)
    return jnp.einsum("umk,umn->kn", x[None], g[None])


linear.defvjp(_linear_fwd, _linear_bwd)


@jax.custom_vjp
def add_positions(x, table):
    """x [batch, n, dim] + table[None] [1, n, dim]."""
    return x + table[None]


add_positions.defvjp(lambda x, table: (x + table[None], None),
                     lambda _, g: (g, sum_leading(g, keep=2)))


ZEROS = nn.initializers.zeros_init()


def _dense_params(module, in_features, features, kernel_init, bias_init):
    """nn.Dense's parameters in its order: kernel [in, features], then bias (None without
    bias_init)."""
    kernel = module.param("kernel", kernel_init, (in_features, features), jnp.float32)
    if bias_init is None:
        return kernel, None
    return kernel, module.param("bias", bias_init, (features,), jnp.float32)


class Dense(nn.Module):
    """nn.Dense(features, kernel_init, bias_init, dtype) with the same parameters, through
    `linear`; bias_init None: no bias (nn.Dense(use_bias=False))."""

    features: int
    kernel_init: Callable
    dtype: jnp.dtype = jnp.float32
    bias_init: Callable | None = ZEROS

    @nn.compact
    def __call__(self, x):
        kernel, bias = _dense_params(self, x.shape[-1], self.features, self.kernel_init,
                                     self.bias_init)
        cast = lambda t: None if t is None else t.astype(self.dtype)
        return linear(x.astype(self.dtype), cast(kernel), cast(bias))


class DenseKernel(nn.Module):
    """The kernel [in, features] and bias (None without bias_init) of an nn.Dense of this
    name, not applied: fused_dense concatenates several (same parameter names, shapes and
    initial values as the nn.Dense)."""

    features: int
    kernel_init: Callable
    bias_init: Callable | None = ZEROS

    @nn.compact
    def __call__(self, in_features: int):
        return _dense_params(self, in_features, self.features, self.kernel_init, self.bias_init)


def fused_dense(x, kernels, dtype):
    """x [..., in] through several (kernel, bias) pairs at once: one matmul, split after.
    Computes in `dtype` as nn.Dense(dtype=dtype) does. The biases are all arrays or all
    None."""
    w = jnp.concatenate([k for k, _ in kernels], axis=1).astype(dtype)
    biases = [b for _, b in kernels]
    b = None if biases[0] is None else jnp.concatenate(biases).astype(dtype)
    y = linear(x.astype(dtype), w, b)
    return jnp.split(y, np.cumsum([k.shape[1] for k, _ in kernels])[:-1], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def feed_forward(x, w1, b1, w2, b2, keep, rate: float, approximate: bool):
    """x [..., dim] @ w1 + b1 -> GELU -> dropout (keep mask, or None) -> @ w2 + b2, with one
    fused pass for the GELU's backward (its derivative from the kept pre-activation).

    (Recomputing GELU(h) in the backward pass instead of keeping it saved 16 MB per layer of
    live memory but ran 6% slower on XLA:CPU: one more erf pass, and no smaller arena.)"""
    return _feed_forward_fwd(x, w1, b1, w2, b2, keep, rate, approximate)[0]


def _feed_forward_fwd(x, w1, b1, w2, b2, keep, rate, approximate):
    h = linear(x, w1, b1)
    a = _dropped(gelu(h, approximate), keep, rate)
    return linear(a, w2, b2), (x, h, a, w1, w2, keep)


def _feed_forward_bwd(rate, approximate, res, g):
    x, h, a, w1, w2, keep = res
    da, dw2, db2 = _linear_grads(a, w2, g)
    # tied to da, h is a new value: else XLA merges this erf with the forward's and keeps it
    da, h = jax.lax.optimization_barrier((da, h))
    dh = _dropped(da, keep, rate) * gelu_grad(h, approximate)
    dx, dw1, db1 = _linear_grads(x, w1, dh)
    return dx, dw1, db1, dw2, db2, None


feed_forward.defvjp(_feed_forward_fwd, _feed_forward_bwd)


def _dropped(t, keep, rate):
    """Inverted dropout with a given keep mask, as Dropout applies it (None: no dropout)."""
    return t if keep is None else jax.lax.select(keep, t / (1.0 - rate), jnp.zeros_like(t))


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
    # Tied to g, rstd and scale are new values here: else XLA shares their [batch, n, dim]
    # broadcasts with the forward pass's and keeps them alive from the forward to here.
    g, rstd, scale = jax.lax.optimization_barrier((g, rstd, scale))
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


def _threefry_bits(key_data, index):
    """jax.random.bits(key, shape)[i] for the flat element indices i in `index` (a uint32
    array), for a threefry2x32 key with jax_threefry_partitionable (the default): threefry2x32
    of the 64-bit element index, both output words xor-ed. Written out round by round (JAX's
    own CPU lowering loops over whole arrays)."""
    k0, k1 = key_data[0], key_data[1]
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x1 = index + ks[1]
    x0 = jnp.broadcast_to(ks[0], index.shape)  # the index's high word is 0 below 2**32
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r)))
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0 ^ x1


def _flat_index(shape, rows):
    """The flat indices of an array of `shape`, or (rows given) of its [:, :rows] part."""
    if rows is None:
        return jax.lax.iota(jnp.uint32, int(np.prod(shape))).reshape(shape)
    inner = int(np.prod(shape[2:]))
    b = jnp.arange(shape[0], dtype=jnp.uint32)[:, None, None] * np.uint32(shape[1] * inner)
    r = jnp.arange(rows, dtype=jnp.uint32)[None, :, None] * np.uint32(inner)
    i = jnp.arange(inner, dtype=jnp.uint32)[None, None, :]
    return (b + r + i).reshape((shape[0], rows) + tuple(shape[2:]))


def bernoulli(rng, p: float, shape, rows=None):
    """jax.random.bernoulli(rng, p, shape), bit for bit; with `rows`, only its [:, :rows]
    part, without drawing the rest."""
    typed = jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
    impl = (str(jax.random.key_impl(rng)) if typed
            else getattr(jax.config, "jax_default_prng_impl", None))
    # anything else (another generator, the old bit layout, 2**32 elements): JAX's own
    if (impl != "threefry2x32" or getattr(jax.config, "jax_threefry_partitionable", None)
            is not True or int(np.prod(shape)) >= 2**32):
        keep = jax.random.bernoulli(rng, p, shape)
        return keep if rows is None else keep[:, :rows]
    bits = _threefry_bits(jax.random.key_data(rng) if typed else rng, _flat_index(shape, rows))
    # jax.random.uniform's float in [0, 1) from the top 23 bits, compared as jax does
    floats = jax.lax.bitcast_convert_type((bits >> np.uint32(9)) | np.uint32(0x3F800000),
                                          jnp.float32) - np.float32(1.0)
    return floats < np.float32(p)


class Dropout(nn.Module):
    """nn.Dropout(rate) with the same rng stream and mask (see `bernoulli`)."""

    rate: float

    @nn.compact
    def __call__(self, x, *, deterministic: bool, full_shape=None):
        """full_shape: x holds the first rows of each example of an array of this shape
        [batch, n, ...] (flattened or not): x gets that array's mask there."""
        if deterministic or self.rate == 0.0:
            return x
        if self.rate == 1.0:
            return jnp.zeros_like(x)
        if full_shape is None:
            return _dropped(x, self.keep_mask(x.shape), self.rate)
        rows = x.size // (full_shape[0] * int(np.prod(full_shape[2:])))
        return _dropped(x, self.keep_mask(full_shape, rows).reshape(x.shape), self.rate)

    def keep_mask(self, shape, rows=None):
        """The keep mask __call__ would draw for an input of this shape (its [:, :rows])."""
        return bernoulli(self.make_rng("dropout"), 1.0 - self.rate, shape, rows)
