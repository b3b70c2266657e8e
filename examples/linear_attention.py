"""Bring your own model: a linear-attention encoder (Katharopoulos et al., ICML 2020, "Transformers
are RNNs") as a luna_lra model, in this one file. Nothing in luna_lra names it: a config does.

    python -m luna_lra.train --config configs/listops.py:tiny --workdir runs/linear \
        --config.model.name=examples.linear_attention [--config.model.feature_map=relu]

(from the repository root; from anywhere else, the import path by which Python finds this
file, e.g. `linear_attention` with its folder on PYTHONPATH). The model gets the harness's
embedding, pooling and classifier head, and its data, trainer, sweeps, report and benchmark.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from luna_lra.models import Model, ModelConfig
from luna_lra.models.config import choice


@dataclasses.dataclass(frozen=True)
class LinearAttentionConfig(ModelConfig):
    """The shared fields (emb_dim, num_layers, num_heads, mlp_dim, dropout rates, ...: see
    luna_lra/models/config.py) and this model's own, each with its default and its check:
    --config.model.feature_map=relu. attention_dropout_rate is unused: linear attention forms
    no attention weights to drop."""

    feature_map: str = choice("elu", "relu", doc="phi: elu(x) + 1 (the paper's) or relu(x)")


def linear_attention(q, k, v, mask, feature_map: str):
    """phi(q) (phi(k)^T v) / (phi(q) . sum phi(k)) over the real keys: O(n) in the length.
    q, k, v: [batch, n, heads, head_dim]; mask: [batch, n] bool."""
    phi = {"elu": lambda x: jax.nn.elu(x) + 1.0, "relu": jax.nn.relu}[feature_map]
    q, k = phi(q), phi(k) * mask[:, :, None, None]
    kv = jnp.einsum("bnhd,bnhe->bhde", k, v)
    norm = jnp.einsum("bnhd,bhd->bnh", q, jnp.sum(k, axis=1)) + 1e-6
    return jnp.einsum("bnhd,bhde->bnhe", q, kv) / norm[..., None]


class LinearAttentionLayer(nn.Module):
    """Pre-LN: x + attention(LN(x)), then x + MLP(LN(x))."""

    config: LinearAttentionConfig

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool):
        cfg = self.config
        b, n, d = x.shape
        drop = lambda t: nn.Dropout(cfg.dropout_rate)(t, deterministic=deterministic)
        y = nn.LayerNorm()(x)
        q, k, v = (nn.Dense(d, name=name)(y).reshape(b, n, cfg.num_heads, d // cfg.num_heads)
                   for name in ("query", "key", "value"))
        y = linear_attention(q, k, v, mask, cfg.feature_map).reshape(b, n, d)
        x = x + drop(nn.Dense(d, name="out")(y))
        y = nn.gelu(nn.Dense(cfg.mlp_dim)(nn.LayerNorm()(x)), approximate=cfg.gelu == "tanh")
        y = nn.Dropout(cfg.activation_dropout_rate)(y, deterministic=deterministic)
        return x + drop(nn.Dense(d)(y))


class LinearAttentionEncoder(nn.Module):
    """x [batch, n, dim] (embedded), mask [batch, n] -> [batch, n, dim]. `rows` (only the first
    rows are read) is a hint this encoder does not need: it computes every position."""

    config: LinearAttentionConfig

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool, rows=None):
        for i in range(self.config.num_layers):
            x = LinearAttentionLayer(self.config, name=f"layer_{i}")(
                x, mask, deterministic=deterministic)
        return nn.LayerNorm(name="final_norm")(x)


MODEL = Model(config=LinearAttentionConfig, encoder=LinearAttentionEncoder,
              label="Linear attention ({feature_map})")
