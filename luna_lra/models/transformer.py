"""The softmax Transformer baseline of the LRA paper (pre-LayerNorm), and the feed-forward block
both encoders share."""

from __future__ import annotations

import flax.linen as nn
import jax

from luna_lra import ops
from luna_lra.models.config import ModelConfig
from luna_lra.models.embed import dense_init
from luna_lra.models.layers import Dense, DenseKernel, Dropout, LayerNorm, fused_dense, gelu


class FeedForward(nn.Module):
    """Dense(mlp_dim) -> GELU (exact) -> activation dropout -> Dense(dim)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x, *, deterministic: bool):
        cfg = self.config
        init = dense_init(cfg.init, "ffn")
        h = Dense(cfg.mlp_dim, kernel_init=init, dtype=cfg.dtype, name="fc1")(x)
        h = Dropout(cfg.activation_dropout_rate, name="Dropout_0")(
            gelu(h), deterministic=deterministic)
        return Dense(x.shape[-1], kernel_init=init, dtype=cfg.dtype, name="fc2")(h)


def self_attention(q, k, v, mask, *, impl: str, dropout_rate: float, dropout_rng):
    """Full softmax self-attention, [batch, n, heads, head_dim] in and out.

    impl "xla": the reference core of luna_lra.ops (with attention dropout); "dot_product":
    jax.nn.dot_product_attention as XLA lowers it; "cudnn": its cuDNN flash-attention kernel
    (GPU only). The last two have no attention dropout, so they refuse a rate above zero.
    """
    if impl == "xla":
        return ops.attention(q, k, v, mask, dropout_rate=dropout_rate, dropout_rng=dropout_rng)
    if dropout_rate > 0.0 and dropout_rng is not None:
        raise ValueError(f"model.attention_impl={impl!r} has no attention dropout; "
                         "set model.attention_dropout_rate=0 or use 'xla'")
    return jax.nn.dot_product_attention(
        q, k, v, mask=mask[:, None, None, :],
        implementation=None if impl == "dot_product" else "cudnn")


class TransformerLayer(nn.Module):
    """Pre-LN: x + Attn(LN(x)), then x + FFN(LN(x))."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool):
        cfg = self.config
        b, n, d = x.shape
        y = LayerNorm(epsilon=1e-5, name="attention_norm")(x)
        kernels = [DenseKernel(d, dense_init(cfg.init, "proj"), name=name)(d)
                   for name in ("query", "key", "value")]
        q, k, v = (t.reshape(b, n, cfg.num_heads, cfg.head_dim)
                   for t in fused_dense(y, kernels, cfg.dtype))
        use_dropout = not deterministic and cfg.attention_dropout_rate > 0.0
        y = self_attention(q, k, v, mask, impl=cfg.attention_impl,
                           dropout_rate=cfg.attention_dropout_rate if use_dropout else 0.0,
                           dropout_rng=self.make_rng("dropout") if use_dropout else None)
        y = Dense(d, kernel_init=dense_init(cfg.init, "out"), dtype=cfg.dtype, name="out")(
            y.reshape(b, n, d))
        x = x + Dropout(cfg.dropout_rate, name="Dropout_0")(y, deterministic=deterministic)
        y = LayerNorm(epsilon=1e-5, name="ffn_norm")(x)
        y = FeedForward(cfg, name="ffn")(y, deterministic=deterministic)
        return x + Dropout(cfg.dropout_rate, name="Dropout_1")(y, deterministic=deterministic)


class TransformerEncoder(nn.Module):
    """x [batch, n, dim] (embedded), mask [batch, n] -> [batch, n, dim]."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool):
        cfg = self.config
        layers = [TransformerLayer(cfg, name=f"layer_{i}")
                  for i in range(1 if cfg.tie_layer_weights else cfg.num_layers)]
        for i in range(cfg.num_layers):
            x = layers[i % len(layers)](x, mask, deterministic=deterministic)
        return LayerNorm(epsilon=1e-5, name="final_norm")(x)
