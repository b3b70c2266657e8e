"""Flax models for the LRA tasks; `build_model(model_cfg, task)` maps a config to a model."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from luna_lra.models.embed import Embed
from luna_lra.models.heads import ClassifierHead, combine_towers, pool
from luna_lra.models.luna import LunaEncoder
from luna_lra.models.transformer import TransformerEncoder

ENCODERS = ("luna", "transformer")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Classifier(nn.Module):
    """Embedding -> encoder -> pooling -> (two-tower combine) -> classifier head.

    __call__(inputs [batch, n] int, mask [batch, n] bool, inputs2=None, mask2=None, *, train)
    -> logits [batch, num_classes]. With inputs2 (retrieval), both documents go through the
    one shared encoder in a single batched call.
    """

    embed: Embed
    encoder: nn.Module
    head: ClassifierHead
    pooling: str = "cls"
    tower_combine: str = "concat"

    def encode(self, inputs, mask, *, train: bool):
        x, mask = self.embed(inputs, mask, deterministic=not train)
        out = self.encoder(x, mask, deterministic=not train)
        return pool(out[0] if isinstance(out, tuple) else out, mask, self.pooling)

    def __call__(self, inputs, mask, inputs2=None, mask2=None, *, train: bool = False):
        if inputs2 is None:
            return self.head(self.encode(inputs, mask, train=train))
        both = self.encode(jnp.concatenate([inputs, inputs2]), jnp.concatenate([mask, mask2]),
                           train=train)
        u, v = jnp.split(both, 2)
        return self.head(combine_towers(u, v, self.tower_combine))


def build_model(cfg: Any, task: Any) -> Classifier:
    """cfg: the `model` field of a config (see luna_lra/defaults.py); task: a data.TaskInfo."""
    if cfg.name not in ENCODERS:
        raise ValueError(f"config field model.name: expected one of {ENCODERS}, got {cfg.name!r}")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"config field model.dtype: expected one of {sorted(DTYPES)}, "
                         f"got {cfg.dtype!r}")
    if cfg.pooling == "cls" and not cfg.use_cls:
        raise ValueError("config field model.pooling='cls' needs model.use_cls=True")
    dtype = DTYPES[cfg.dtype]
    common = dict(num_layers=cfg.num_layers, num_heads=cfg.num_heads, mlp_dim=cfg.mlp_dim,
                  init_scheme=cfg.init, dropout_rate=cfg.dropout_rate,
                  attention_dropout_rate=cfg.attention_dropout_rate,
                  activation_dropout_rate=cfg.activation_dropout_rate,
                  tie_layer_weights=cfg.tie_layer_weights, dtype=dtype)
    if cfg.name == "luna":
        encoder = LunaEncoder(proj_len=cfg.proj_len, tie_kv=cfg.tie_kv,
                              normalize_before=cfg.normalize_before, impl=cfg.attention_impl,
                              **common)
    else:
        encoder = TransformerEncoder(attention_impl=cfg.attention_impl, **common)
    embed = Embed(vocab_size=task.vocab_size, dim=cfg.emb_dim, max_length=task.max_length,
                  use_cls=cfg.use_cls, init_scheme=cfg.init, layer_norm=cfg.embed_layer_norm,
                  dropout_rate=cfg.dropout_rate, positions=cfg.positions, dtype=dtype)
    head = ClassifierHead(task.num_classes, cfg.classifier_dim, cfg.classifier_layers,
                          cfg.classifier_activation, cfg.init)
    return Classifier(embed, encoder, head, cfg.pooling, cfg.tower_combine)
