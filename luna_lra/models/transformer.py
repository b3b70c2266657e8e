"""The softmax Transformer baseline of the LRA paper (pre-LayerNorm), and the feed-forward block
both encoders share."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from luna_lra import ops
from luna_lra.checks import ConfigError
from luna_lra.models.config import Model, ModelConfig, choice, flag, number
from luna_lra.models.embed import bias_init, dense_init
from luna_lra.models.layers import (Dense, DenseKernel, Dropout, LayerNorm, feed_forward,
                                    fused_dense)


@dataclasses.dataclass(frozen=True)
class TransformerConfig(ModelConfig):
    """The Transformer's fields (beside the shared ones)."""

    name: str = "transformer"
    qkv_dim: int = number(0, doc="width of q/k/v (LRA's qkv_dim); 0 = emb_dim")
    tie_layer_weights: bool = flag(False, "one set of layer weights for every layer")
    attention_impl: str = choice("xla", "dot_product", "cudnn", doc="xla: luna_lra.ops' "
                                 "attention (with dropout); dot_product: jax.nn's XLA form; "
                                 "cudnn: its cuDNN flash kernel (GPU); the last two have no "
                                 "attention dropout")

    @property
    def attention_dim(self) -> int:
        return self.qkv_dim or self.emb_dim

    def check(self) -> None:
        super().check()
        if self.attention_impl != "xla" and self.attention_dropout_rate > 0:
            raise ConfigError(f"config field model.attention_impl={self.attention_impl!r}: "
                              "has no attention dropout; set model.attention_dropout_rate=0 "
                              "or use 'xla'")


# What every LRA Transformer baseline shares (lra_benchmarks/models/transformer and the tasks'
# train.py): fixed sinusoidal positions unless a config sets learn_pos_emb, no embedding
# LayerNorm, flax's inits (model.init='lra': no q/k/v/out biases), tanh GELU, LayerNorm
# epsilon 1e-6, Adam(0.9, 0.98, eps 1e-9) with a warm-up from 0. Each task's recipe sets the
# dropout after the MLP's GELU to the model's dropout rate (LRA's MlpBlock).
LRA_TRANSFORMER = dict(
    model=dict(positions="sinusoidal", embed_layer_norm=False, init="lra", gelu="tanh",
               layer_norm_epsilon=1e-6),
    optim=dict(b1=0.9, b2=0.98, eps=1e-9, warmup_init_lr=0.0),
)


class FeedForward(nn.Module):
    """Dense(mlp_dim) -> GELU (model.gelu: exact or tanh) -> activation dropout -> Dense(dim),
    as one layers.feed_forward (same parameters as two nn.Dense named fc1 and fc2).

    full_rows=(batch, n): x [batch * rows, dim] holds the first rows of each example of a
    [batch * n, dim] stream; the activation dropout mask is that stream's there."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x, *, deterministic: bool, full_rows=None):
        cfg = self.config
        init, b_init = dense_init(cfg.init, "ffn"), bias_init(cfg.init, "ffn")
        d = x.shape[-1]
        w1, b1 = DenseKernel(cfg.mlp_dim, init, b_init, name="fc1")(d)
        w2, b2 = DenseKernel(d, init, b_init, name="fc2")(cfg.mlp_dim)
        rate = cfg.activation_dropout_rate
        keep = None
        if not deterministic and rate > 0.0:
            drop = Dropout(rate, name="Dropout_0")
            hidden = x.shape[:-1] + (cfg.mlp_dim,)
            if full_rows is None:
                keep = drop.keep_mask(hidden)
            else:
                rows = x.size // (full_rows[0] * d)
                keep = drop.keep_mask(full_rows + (cfg.mlp_dim,), rows).reshape(hidden)
        cast = lambda t: t.astype(cfg.compute_dtype)
        return feed_forward(cast(x), cast(w1), cast(b1), cast(w2), cast(b2), keep, rate,
                            cfg.gelu == "tanh")


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
    """Pre-LN: x + Attn(LN(x)), then x + FFN(LN(x)). q, k and v are model.qkv_dim wide (the
    model width when 0), split into heads; the output projection maps them back to the model
    width (flax's SelfAttention(qkv_features=...), as LRA). x [batch, n, dim]; with `rows`,
    only the first `rows` positions come out (queries from those, keys and values from all),
    with the full stream's dropout masks there."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool, rows=None):
        cfg = self.config
        b, n, d = x.shape
        r = n if rows is None else rows
        full = None if rows is None else (b, n, d)
        y = LayerNorm(epsilon=cfg.layer_norm_epsilon, name="attention_norm")(x)
        y = self.attention(y, mask, deterministic, rows)
        drop = lambda name, t: Dropout(cfg.dropout_rate, name=name)(
            t, deterministic=deterministic, full_shape=full)
        x = x[:, :r] + drop("Dropout_0", y)
        y = LayerNorm(epsilon=cfg.layer_norm_epsilon, name="ffn_norm")(x)
        y = FeedForward(cfg, name="ffn")(y, deterministic=deterministic,
                                         full_rows=None if rows is None else (b, n))
        return x + drop("Dropout_1", y)

    def attention(self, y, mask, deterministic, rows):
        """Multi-head self-attention of y [batch, n, dim] -> [batch, rows or n, dim]."""
        cfg = self.config
        b, n, d = y.shape
        kernel = lambda name: DenseKernel(cfg.attention_dim, dense_init(cfg.init, "proj"),
                                          bias_init(cfg.init, "proj"), name=name)(d)
        query, key, value = kernel("query"), kernel("key"), kernel("value")
        if rows is None:
            q, k, v = fused_dense(y, [query, key, value], cfg.compute_dtype)
        else:
            (q,), (k, v) = (fused_dense(y[:, :rows], [query], cfg.compute_dtype),
                            fused_dense(y, [key, value], cfg.compute_dtype))
        heads = lambda t: t.reshape(b, -1, cfg.num_heads, cfg.head_dim)
        use_dropout = not deterministic and cfg.attention_dropout_rate > 0.0
        out = self_attention(heads(q), heads(k), heads(v), mask, impl=cfg.attention_impl,
                             dropout_rate=cfg.attention_dropout_rate if use_dropout else 0.0,
                             dropout_rng=self.make_rng("dropout") if use_dropout else None)
        return Dense(d, kernel_init=dense_init(cfg.init, "out"), dtype=cfg.compute_dtype,
                     bias_init=bias_init(cfg.init, "out"), name="out")(
                         out.reshape(b, -1, cfg.attention_dim))


class TransformerEncoder(nn.Module):
    """x [batch, n, dim] (embedded), mask [batch, n] -> [batch, n, dim]; with `rows`, the last
    layer computes only the first `rows` positions ([batch, rows, dim]), what CLS pooling
    reads."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool, rows=None):
        cfg = self.config
        layers = [TransformerLayer(cfg, name=f"layer_{i}")
                  for i in range(1 if cfg.tie_layer_weights else cfg.num_layers)]
        for i in range(cfg.num_layers):
            last = i == cfg.num_layers - 1
            x = layers[i % len(layers)](x, mask, deterministic=deterministic,
                                        rows=rows if last else None)
        return LayerNorm(epsilon=cfg.layer_norm_epsilon, name="final_norm")(x)


MODEL = Model(config=TransformerConfig, encoder=TransformerEncoder, label="Transformer",
              recipe=LRA_TRANSFORMER)
