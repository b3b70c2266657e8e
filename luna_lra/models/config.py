"""What a model module declares: its ModelConfig, the frozen dataclass every module of the
model takes (the Flax lm1b/wmt style), and its Model entry (`MODEL = Model(...)`).

The fields of ModelConfig are the ones every model shares (the embedding, the classifier head,
sizes and rates); a model subclasses it with its own fields (LunaConfig, TransformerConfig).
Each field is declared once, with its default and its check: the config tree's `model` section
is made from these defaults (luna_lra.defaults), and `check()` runs the checks before anything
is built.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

from luna_lra.checks import ConfigError, check_choice, check_number

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
TASK_FIELDS = ("vocab_size", "max_length", "num_classes")  # from the task, not the config


def choice(*allowed, doc: str = ""):
    """A str field: one of `allowed`, the first by default."""
    return dataclasses.field(default=allowed[0], metadata={"choices": allowed, "doc": doc})


def number(default, *, low=0, below=None, strict: bool = False, doc: str = ""):
    """An int or float field (the default's type) with bounds: >= low (> low if strict),
    < below."""
    return dataclasses.field(default=default, metadata={
        "bounds": dict(integer=isinstance(default, int), low=low, below=below, strict=strict),
        "doc": doc})


def positive(default: int, doc: str = ""):
    return number(default, low=1, doc=doc)


def rate(default: float, doc: str = ""):
    return number(default, below=1, doc=doc)


def flag(default: bool, doc: str = ""):
    return dataclasses.field(default=default, metadata={"flag": True, "doc": doc})


def runtime(default, doc: str = ""):
    """Not a config field: set by code (the task's sizes, interpret mode)."""
    return dataclasses.field(default=default, metadata={"runtime": True, "doc": doc})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What every model has; a model's config class adds its own fields."""

    name: str = ""  # how the config names the model: "luna", or a module path "my_pkg.my_model"
    # From the task (luna_lra.data.TaskInfo): ids in [0, vocab_size), tokens per example before
    # CLS/eos, classes.
    vocab_size: int = runtime(0)
    max_length: int = runtime(0)
    num_classes: int = runtime(0)
    emb_dim: int = positive(512)
    num_layers: int = positive(6)
    num_heads: int = positive(8)
    mlp_dim: int = positive(2048)
    dropout_rate: float = rate(0.1)
    attention_dropout_rate: float = rate(0.1)
    activation_dropout_rate: float = rate(0.0, "dropout after the feed-forward's GELU")
    init: str = choice("official", "bert", "lra", doc="official: the model's own initialisers; "
                       "bert: normal(0, 0.02); lra: LRA's Flax initialisers")
    gelu: str = choice("exact", "tanh", doc="exact: erf, PyTorch's F.gelu; tanh: flax's nn.gelu")
    layer_norm_epsilon: float = number(1e-5, strict=True,
                                       doc="PyTorch's default; LRA's flax LayerNorm uses 1e-6")
    use_cls: bool = flag(True, "a learned CLS vector at position 0")
    append_eos: bool = flag(False, "a learned eos after the last token (fairseq appends </s>)")
    embed_layer_norm: bool = flag(True)
    positions: str = choice("learned", "sinusoidal", doc="sinusoidal: fixed")
    pooling: str = choice("cls", "first", "mean", "mean_all", doc="cls: the CLS token; first: "
                          "position 0 without one (LRA's dual encoder); mean: over real tokens; "
                          "mean_all: over every position (LRA's MEAN, Luna's mp)")
    classifier_dim: int = positive(2048)
    classifier_layers: int = number(1)
    classifier_halving: bool = flag(False, "each further hidden layer half as wide (LRA's dual "
                                    "head: classifier_dim, classifier_dim // 2)")
    classifier_activation: str = choice("relu", "gelu", "tanh")
    tower_combine: str = choice("concat", "concat_mul_sub", doc="two-tower tasks")
    last_layer_cls_only: bool = flag(True, "pooling cls/first: the last layer computes position "
                                     "0 only, the row the head reads (same logits, less work)")
    dtype: str = choice("float32", "bfloat16", doc="compute dtype")
    interpret: bool = runtime(False, "Pallas kernels in interpret mode (CPU rehearsals)")

    @property
    def compute_dtype(self) -> Any:
        return DTYPES[self.dtype]

    @property
    def attention_dim(self) -> int:
        """Width of q, k and v (all heads)."""
        return self.emb_dim

    @property
    def head_dim(self) -> int:
        return self.attention_dim // self.num_heads

    @property
    def num_positions(self) -> int:
        """Rows of the position table: the tokens plus the CLS and eos slots."""
        return self.max_length + int(self.use_cls) + int(self.append_eos)

    @property
    def fairseq_positions(self) -> bool:
        """Fixed positions the fairseq way (scaled embeddings, fairseq's table) rather than
        LRA's table; a model whose official code does so says True."""
        return False

    def check(self) -> None:
        """ConfigError (one line) for a value or combination this model cannot run. A model's
        config class extends this with its own rules (calling super().check())."""
        for f in config_fields(type(self)):
            check_field(f, getattr(self, f.name))
        if self.attention_dim % self.num_heads:
            field = "model.qkv_dim" if self.attention_dim != self.emb_dim else "model.emb_dim"
            raise ConfigError(f"config field {field}={self.attention_dim}: must be a multiple of "
                              f"model.num_heads={self.num_heads}")
        if self.pooling == "cls" and not self.use_cls:
            raise ConfigError("config field model.pooling='cls': needs model.use_cls=True "
                              "(or model.pooling='first', 'mean' or 'mean_all')")
        layers, width = self.classifier_layers, self.classifier_dim
        if self.classifier_halving and layers > 1 and width >> (layers - 1) < 1:
            raise ConfigError(f"config field model.classifier_halving=True: model.classifier_dim="
                              f"{width} halved {layers - 1} times leaves no unit")


def config_fields(cls: type[ModelConfig]) -> list[dataclasses.Field]:
    """The fields of a model config class that a config sets (not the task's, not runtime)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("runtime")]


def check_field(f: dataclasses.Field, value) -> None:
    name = f"model.{f.name}"
    meta = f.metadata
    if "choices" in meta:
        check_choice(name, value, meta["choices"])
    elif "bounds" in meta:
        check_number(name, value, **meta["bounds"])
    elif meta.get("flag") and not isinstance(value, bool):
        raise ConfigError(f"config field {name}={value!r}: expected True or False")


@dataclasses.dataclass(frozen=True)
class Model:
    """What a model module exposes as MODEL.

    config:   its ModelConfig subclass: the shared fields and its own, with defaults and checks
    encoder:  a Flax module class, built as encoder(config) and called as
              encoder(x [batch, n, dim], mask [batch, n] bool, *, deterministic: bool,
              rows: int | None) -> [batch, n, dim] (or a tuple whose first item is that);
              `rows` is a hint: only the first `rows` positions of the last layer are read
              (CLS pooling), so an encoder may compute just those ([batch, rows, dim])
    label:    its row in tables, formatted with its config's fields ("Luna-{proj_len}");
              "" gives the model's name
    recipe:   {section: {field: value}} every config applies beneath a task's recipe for it
              (e.g. what every LRA Transformer shares)
    variants: config variants it adds to every config file that has a recipe named after it:
              {variant: {model field: value}} ("luna16": {"proj_len": 16})
    name:     set when it is looked up: how configs name it
    """

    config: type[ModelConfig]
    encoder: Any
    label: str = ""
    recipe: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    variants: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    name: str = ""

    def label_of(self, model_section: Mapping[str, Any]) -> str:
        """The table label of a config's `model` section (a ConfigDict or dict) for this model."""
        if not self.label:
            return self.name
        defaults = {f.name: f.default for f in config_fields(self.config)}
        return self.label.format(**{**defaults, **dict(model_section)})
