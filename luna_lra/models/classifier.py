"""The classifier every model runs in: embedding -> the model's encoder -> pooling ->
(two-tower combine) -> classifier head."""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from luna_lra.models import registry
from luna_lra.models.config import ModelConfig
from luna_lra.models.embed import Embed
from luna_lra.models.heads import ClassifierHead, combine_towers, pool


class Classifier(nn.Module):
    """__call__(inputs [batch, n] int, mask [batch, n] bool, inputs2=None, mask2=None, *, train)
    -> logits [batch, num_classes]. With inputs2 (retrieval), both documents go through the
    one shared encoder in a single batched call.
    """

    config: ModelConfig

    def setup(self):
        self.embed = Embed(self.config)
        self.encoder = registry.get(self.config.name).encoder(self.config)
        self.head = ClassifierHead(self.config)

    def encode(self, inputs, mask, *, train: bool):
        x, mask = self.embed(inputs, mask, deterministic=not train)
        # CLS pooling reads one position of the last layer: with last_layer_cls_only the
        # encoder may compute only that (the same logits and gradients)
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


def build_model(section: Mapping[str, Any], task: Any, **runtime) -> Classifier:
    """section: a config's `model` (luna_lra.defaults makes it from the model's fields); task: a
    luna_lra.data.TaskInfo; runtime: e.g. interpret=True. A bad field stops here with a
    ConfigError naming it."""
    return Classifier(registry.model_config(section, task, **runtime))
