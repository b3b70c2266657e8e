"""Pooling, the two-tower combination and the classifier head."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from luna_lra.models.config import ModelConfig
from luna_lra.models.embed import bias_init, dense_init

ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "tanh": jnp.tanh}


def pool(x, mask, kind: str):
    """x [batch, n, dim], mask [batch, n] -> [batch, dim]. 'cls': position 0, the CLS token;
    'first': position 0 without a CLS token (LRA's dual encoder: its 'CLS' pooling reads the
    first token); 'mean': the mean over the mask (CLS and eos included when present, padding
    not); 'mean_all': the mean over every position, padding included (LRA's classifier_head
    'MEAN', the official Luna 'mp')."""
    if kind in ("cls", "first"):
        return x[:, 0]
    if kind == "mean_all":
        return jnp.mean(x, axis=1)
    m = mask[..., None].astype(x.dtype)
    return jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)


def combine_towers(u, v, kind: str):
    """The two-tower head's input from the pooled vectors of both documents."""
    if kind == "concat":  # the Luna paper's [u, v]
        return jnp.concatenate([u, v], axis=-1)
    return jnp.concatenate([u, v, u * v, u - v], axis=-1)  # concat_mul_sub, as the LRA code


class ClassifierHead(nn.Module):
    """classifier_layers x (Dense(classifier_dim) + activation), then Dense(num_classes), in
    float32. With classifier_halving each further hidden layer is half as wide (LRA's dual
    head: classifier_dim, classifier_dim // 2). The logits layer has no bias, except under
    model.init='lra' (flax's nn.Dense default, as LRA's classifier_head)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        init = dense_init(cfg.init, "head")
        x = x.astype(jnp.float32)
        for i in range(cfg.classifier_layers):
            width = cfg.classifier_dim >> i if cfg.classifier_halving else cfg.classifier_dim
            x = nn.Dense(width, kernel_init=init, bias_init=bias_init(cfg.init, "head"),
                         name=f"hidden_{i}")(x)
            x = ACTIVATIONS[cfg.classifier_activation](x)
        logits_bias = bias_init(cfg.init, "logits")
        return nn.Dense(cfg.num_classes, use_bias=logits_bias is not None, kernel_init=init,
                        bias_init=logits_bias or nn.initializers.zeros_init(),
                        name="logits")(x)
