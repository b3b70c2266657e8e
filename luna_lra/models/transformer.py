"""The softmax Transformer baseline of the LRA paper (pre-LayerNorm), and the feed-forward block
both encoders share."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from luna_lra import ops
from luna_lra.models.embed import dense_init


class FeedForward(nn.Module):
    """Dense(mlp_dim) -> GELU -> dropout -> Dense(dim)."""

    mlp_dim: int
    init_scheme: str
    activation_dropout_rate: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, deterministic: bool):
        init = dense_init(self.init_scheme, "ffn")
        h = nn.Dense(self.mlp_dim, kernel_init=init, dtype=self.dtype, name="fc1")(x)
        h = jax.nn.gelu(h, approximate=False)  # torch's F.gelu is the exact erf form
        h = nn.Dropout(self.activation_dropout_rate)(h, deterministic=deterministic)
        return nn.Dense(x.shape[-1], kernel_init=init, dtype=self.dtype, name="fc2")(h)


def self_attention(q, k, v, mask, *, impl: str, dropout_rate: float, dropout_rng):
    """Full softmax self-attention, [batch, n, heads, head_dim] in and out.

    impl "xla": the reference core of luna_lra.ops (with attention dropout); "dot_product":
    jax.nn.dot_product_attention as XLA lowers it; "cudnn": its cuDNN flash-attention kernel
    (GPU only). The last two have no attention dropout, so they refuse a rate above zero.
    """
    if impl == "xla":
        return ops.attention(q, k, v, mask, dropout_rate=dropout_rate, dropout_rng=dropout_rng)
    if impl in ("dot_product", "cudnn"):
        if dropout_rate > 0.0 and dropout_rng is not None:
            raise ValueError(f"model.attention_impl={impl!r} has no attention dropout; "
                             "set model.attention_dropout_rate=0 or use 'xla'")
        return jax.nn.dot_product_attention(
            q, k, v, mask=mask[:, None, None, :],
            implementation=None if impl == "dot_product" else "cudnn")
    raise ValueError(f"config field model.attention_impl for the transformer: expected 'xla', "
                     f"'dot_product' or 'cudnn', got {impl!r}")


class TransformerLayer(nn.Module):
    """Pre-LN: x + Attn(LN(x)), then x + FFN(LN(x))."""

    num_heads: int
    mlp_dim: int
    init_scheme: str
    dropout_rate: float
    attention_dropout_rate: float
    activation_dropout_rate: float
    attention_impl: str = "xla"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool):
        b, n, d = x.shape
        h, hd = self.num_heads, d // self.num_heads
        proj = lambda name: nn.Dense(d, kernel_init=dense_init(self.init_scheme, "proj"), dtype=self.dtype,
                                     name=name)
        y = nn.LayerNorm(epsilon=1e-5, name="attention_norm")(x)
        q, k, v = (proj(name)(y).reshape(b, n, h, hd) for name in ("query", "key", "value"))
        use_dropout = not deterministic and self.attention_dropout_rate > 0.0
        y = self_attention(q, k, v, mask, impl=self.attention_impl,
                           dropout_rate=self.attention_dropout_rate if use_dropout else 0.0,
                           dropout_rng=self.make_rng("dropout") if use_dropout else None)
        y = nn.Dense(d, kernel_init=dense_init(self.init_scheme, "out"), dtype=self.dtype, name="out")(
            y.reshape(b, n, d))
        x = x + nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
        y = nn.LayerNorm(epsilon=1e-5, name="ffn_norm")(x)
        y = FeedForward(self.mlp_dim, self.init_scheme, self.activation_dropout_rate, self.dtype,
                        name="ffn")(y, deterministic=deterministic)
        return x + nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)


class TransformerEncoder(nn.Module):
    """x [batch, n, dim] (embedded), mask [batch, n] -> [batch, n, dim]."""

    num_layers: int
    num_heads: int
    mlp_dim: int
    init_scheme: str = "official"
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    activation_dropout_rate: float = 0.0
    tie_layer_weights: bool = False
    attention_impl: str = "xla"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool):
        make = lambda i: TransformerLayer(
            self.num_heads, self.mlp_dim, self.init_scheme, self.dropout_rate,
            self.attention_dropout_rate, self.activation_dropout_rate, self.attention_impl,
            self.dtype, name=f"layer_{i}")
        layers = [make(0)] * self.num_layers if self.tie_layer_weights else [
            make(i) for i in range(self.num_layers)]
        for layer in layers:
            x = layer(x, mask, deterministic=deterministic)
        return nn.LayerNorm(epsilon=1e-5, name="final_norm")(x)
