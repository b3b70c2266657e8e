"""ModelConfig: the one frozen dataclass every module of the models takes (the Flax lm1b/wmt
style), built and checked once from the `model` field of a run's config and the task."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from luna_lra import config as config_lib

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything a model needs; field meanings are those of luna_lra/defaults.py's c.model.*,
    plus the task's vocab_size, max_length (tokens per example, before CLS/eos) and
    num_classes. dtype is the compute dtype as a jnp dtype."""

    vocab_size: int
    max_length: int
    num_classes: int
    name: str
    emb_dim: int
    qkv_dim: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    proj_len: int
    tie_kv: bool
    tie_layer_weights: bool
    normalize_before: bool
    dropout_rate: float
    attention_dropout_rate: float
    activation_dropout_rate: float
    init: str
    gelu: str
    layer_norm_epsilon: float
    use_cls: bool
    append_eos: bool
    embed_layer_norm: bool
    positions: str
    pooling: str
    classifier_dim: int
    classifier_layers: int
    classifier_halving: bool
    classifier_activation: str
    tower_combine: str
    last_layer_cls_only: bool
    attention_impl: str
    dtype: Any
    # Pallas kernels in interpret mode (CPU rehearsals of GPU runs); not a c.model field
    interpret: bool = False

    @property
    def attention_dim(self) -> int:
        """Width of q, k and v (all heads): qkv_dim, or emb_dim when it is 0."""
        return self.qkv_dim or self.emb_dim

    @property
    def head_dim(self) -> int:
        return self.attention_dim // self.num_heads

    @property
    def num_positions(self) -> int:
        """Rows of the position table: the tokens plus the CLS and eos slots."""
        return self.max_length + int(self.use_cls) + int(self.append_eos)

    @classmethod
    def from_config(cls, cfg: Any, task: Any) -> "ModelConfig":
        """cfg: the `model` field of a config (luna_lra/defaults.py has every field and its
        default); task: a data.TaskInfo. A bad value raises ConfigError (a ValueError) naming
        the field."""
        config_lib.check_model(cfg)
        fields = {f.name for f in dataclasses.fields(cls)} - {
            "vocab_size", "max_length", "num_classes", "dtype", "interpret"}
        return cls(vocab_size=task.vocab_size, max_length=task.max_length,
                   num_classes=task.num_classes, dtype=DTYPES[cfg["dtype"]],
                   **{k: cfg[k] for k in fields})
