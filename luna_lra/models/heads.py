"""Pooling, the two-tower combination and the classifier head."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from luna_lra.models.config import ModelConfig
from luna_lra.models.embed import dense_init

ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "tanh": jnp.tanh}


def pool(x, mask, kind: str):
    """x [batch, n, dim], mask [batch, n] -> [batch, dim]. 'cls': position 0; 'mean': the mean
    over the mask (CLS and eos included when present, padding not)."""
    if kind == "cls":
        return x[:, 0]
    m = mask[..., None].astype(x.dtype)
    return jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)


def combine_towers(u, v, kind: str):
    """The two-tower head's input from the pooled vectors of both documents."""
    if kind == "concat":  # the Luna paper's [u, v]
        return jnp.concatenate([u, v], axis=-1)
    return jnp.concatenate([u, v, u * v, u - v], axis=-1)  # concat_mul_sub, as the LRA code


class ClassifierHead(nn.Module):
    """classifier_layers x (Dense(classifier_dim) + activation), then Dense(num_classes)
    without bias, in float32."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        init = dense_init(cfg.init, "ffn")
        x = x.astype(jnp.float32)
        for i in range(cfg.classifier_layers):
            x = nn.Dense(cfg.classifier_dim, kernel_init=init, name=f"hidden_{i}")(x)
            x = ACTIVATIONS[cfg.classifier_activation](x)
        return nn.Dense(cfg.num_classes, use_bias=False, kernel_init=init, name="logits")(x)
