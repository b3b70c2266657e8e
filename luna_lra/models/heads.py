"""Pooling and the classifier head."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from luna_lra.models.embed import dense_init

ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "tanh": jnp.tanh}


def pool(x, mask, kind: str):
    """x [batch, n, dim], mask [batch, n] -> [batch, dim]."""
    if kind == "cls":
        return x[:, 0]
    if kind == "mean":  # masked mean: padded positions do not count
        m = mask[..., None].astype(x.dtype)
        return jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
    raise ValueError(f"config field model.pooling: expected 'cls' or 'mean', got {kind!r}")


def combine_towers(u, v, kind: str):
    """The two-tower head's input from the pooled vectors of both documents."""
    if kind == "concat":  # the Luna paper's [u, v]
        return jnp.concatenate([u, v], axis=-1)
    if kind == "concat_mul_sub":  # [u, v, u*v, u-v], as the LRA code
        return jnp.concatenate([u, v, u * v, u - v], axis=-1)
    raise ValueError(
        f"config field model.tower_combine: expected 'concat' or 'concat_mul_sub', got {kind!r}")


class ClassifierHead(nn.Module):
    """classifier_layers x (Dense(hidden) + activation), then Dense(num_classes) without bias."""

    num_classes: int
    hidden_dim: int
    num_layers: int = 1
    activation: str = "relu"
    init_scheme: str = "official"

    @nn.compact
    def __call__(self, x):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"config field model.classifier_activation: expected one of "
                             f"{sorted(ACTIVATIONS)}, got {self.activation!r}")
        x = x.astype(jnp.float32)
        for i in range(self.num_layers):
            x = nn.Dense(self.hidden_dim, kernel_init=dense_init(self.init_scheme, "ffn"),
                         name=f"hidden_{i}")(x)
            x = ACTIVATIONS[self.activation](x)
        return nn.Dense(self.num_classes, use_bias=False, kernel_init=dense_init(self.init_scheme, "ffn"),
                        name="logits")(x)
