"""Flax models for the LRA tasks; `build_model(model_cfg, task)` maps a config to a model.

Every module takes one frozen ModelConfig (models/config.py), built and checked here."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from luna_lra.models.config import ModelConfig
from luna_lra.models.embed import Embed
from luna_lra.models.heads import ClassifierHead, combine_towers, pool
from luna_lra.models.luna import LunaEncoder
from luna_lra.models.transformer import TransformerEncoder

ENCODERS = {"luna": LunaEncoder, "transformer": TransformerEncoder}


class Classifier(nn.Module):
    """Embedding -> encoder -> pooling -> (two-tower combine) -> classifier head.

    __call__(inputs [batch, n] int, mask [batch, n] bool, inputs2=None, mask2=None, *, train)
    -> logits [batch, num_classes]. With inputs2 (retrieval), both documents go through the
    one shared encoder in a single batched call.
    """

    config: ModelConfig

    def setup(self):
        self.embed = Embed(self.config)
        self.encoder = ENCODERS[self.config.name](self.config)
        self.head = ClassifierHead(self.config)

    def encode(self, inputs, mask, *, train: bool):
        x, mask = self.embed(inputs, mask, deterministic=not train)
        # CLS pooling reads one position of the last layer: with last_layer_cls_only the
        # encoder computes only that (the same logits and gradients)
        cfg = self.config
        rows = 1 if cfg.pooling in ("cls", "first") and cfg.last_layer_cls_only else None
        out = self.encoder(x, mask, deterministic=not train, rows=rows)
        return pool(out[0] if isinstance(out, tuple) else out, mask, self.config.pooling)

    def __call__(self, inputs, mask, inputs2=None, mask2=None, *, train: bool = False):
        if inputs2 is None:
            return self.head(self.encode(inputs, mask, train=train))
        both = self.encode(jnp.concatenate([inputs, inputs2]), jnp.concatenate([mask, mask2]),
                           train=train)
        u, v = jnp.split(both, 2)
        return self.head(combine_towers(u, v, self.config.tower_combine))


def build_model(cfg: Any, task: Any) -> Classifier:
    """cfg: the `model` field of a config (see luna_lra/defaults.py); task: a data.TaskInfo.
    A bad field stops here with a ValueError naming it."""
    return Classifier(ModelConfig.from_config(cfg, task))


__all__ = ["Classifier", "ModelConfig", "build_model"]
