"""Config files, in one place: the one loader (train, sweep and report call it), the checks
that run before any data is read, and what makes two runs the same run.

    config = load("configs/listops.py:tiny", {"train.num_steps": "300"})

A config file is a Python file with `get_config(variant)` returning a ConfigDict built from
`luna_lra.defaults.base_config()`; overrides set existing fields only (strings, as the command
line gives them, are parsed by the field's type).
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os
from typing import Any, Mapping

import ml_collections


class ConfigError(ValueError):
    """A config a user can fix; the message names the file or field, the value and what is
    expected, in one line."""


# ----------------------------------------------------------------------------- loading


def split_spec(spec: str) -> tuple[str, str]:
    """'configs/listops.py:tiny' -> ('configs/listops.py', 'tiny'); no variant -> ''."""
    path, _, variant = str(spec).partition(":")
    if not path.endswith(".py"):
        raise ConfigError(f"config {spec!r}: expected configs/<task>.py:<variant>")
    if not os.path.isfile(path):
        raise ConfigError(f"config {spec!r}: no file {path!r} (looked from {os.getcwd()}); "
                          "expected configs/<task>.py:<variant>")
    return path, variant


_MODULES: dict[tuple[str, float], Any] = {}


def _config_module(path: str):
    """The config file as a module, loaded once per file version (it is not a package)."""
    key = (os.path.abspath(path), os.path.getmtime(path))
    if key not in _MODULES:
        spec = importlib.util.spec_from_file_location(
            f"_luna_lra_config_{len(_MODULES)}", key[0])
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - a broken config file: name it, in one line
            raise ConfigError(f"{path}: cannot be loaded ({type(e).__name__}: {e})") from e
        if not callable(getattr(module, "get_config", None)):
            raise ConfigError(f"{path}: defines no get_config(variant)")
        _MODULES[key] = module
    return _MODULES[key]


def load(spec: str, overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
    """The config `spec` ('file.py:variant') gives, with `overrides` (field -> value) applied
    and the fields locked (setting an unknown field fails)."""
    path, variant = split_spec(spec)
    module = _config_module(path)
    try:
        config = module.get_config(variant) if variant else module.get_config()
    except ValueError as e:  # recipe(): an unknown variant
        raise ConfigError(str(e)) from e
    except Exception as e:  # noqa: BLE001 - a broken config file: name it, in one line
        raise ConfigError(f"config {spec!r} could not be loaded: {type(e).__name__}: {e}") from e
    config.config_file = path
    config.variant = config.variant or variant
    apply_overrides(config, overrides or {})
    config.lock()
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]):
    """Sets each 'a.b.c' field in place. Unknown fields, and values that do not fit the
    field's type, are refused naming the field; a str value is parsed by the field's type."""
    for field, value in overrides.items():
        node, parts = config, field.split(".")
        for i, part in enumerate(parts):
            if not hasattr(node, "keys") or part not in node:
                where = ".".join(parts[:i]) or "the top level"
                known = sorted(node.keys()) if hasattr(node, "keys") else []
                raise ConfigError(f"config field {field}: no field {part!r} under {where}; "
                                  f"expected one of {known}")
            if i < len(parts) - 1:
                node = node[part]
        current = node[parts[-1]]
        if hasattr(current, "keys"):
            raise ConfigError(f"config field {field}: is a section; set one of its fields "
                              f"({sorted(current.keys())})")
        if isinstance(value, str) and not isinstance(current, str):
            value = parse_value(field, value, current)
        try:
            node[parts[-1]] = value
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config field {field}={value!r}: expected a "
                              f"{type(current).__name__}") from e
    return config


def parse_value(field: str, text: str, current: Any) -> Any:
    """A command-line string as the type of the field's current value."""
    try:
        if isinstance(current, bool):
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return lowered in ("true", "1")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
    except ValueError:
        raise ConfigError(f"config field {field}={text!r}: expected a "
                          f"{type(current).__name__}") from None
    return text


def flatten(tree, prefix: str = "") -> dict[str, Any]:
    """{'model': {'emb_dim': 512}} -> {'model.emb_dim': 512} (nested dicts or ConfigDicts)."""
    out = {}
    for key, value in tree.items():
        if hasattr(value, "items"):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def to_dict(config) -> dict:
    """A plain, JSON-ready copy of a ConfigDict (or of a dict)."""
    return config.to_dict() if hasattr(config, "to_dict") else copy.deepcopy(dict(config))


# ----------------------------------------------------------------------------- checks

CHOICES = {
    "model.name": ("luna", "transformer"),
    "model.init": ("official", "bert", "lra"),
    "model.gelu": ("exact", "tanh"),
    "model.positions": ("learned", "sinusoidal"),
    "model.pooling": ("cls", "first", "mean", "mean_all"),
    "model.classifier_activation": ("relu", "gelu", "tanh"),
    "model.tower_combine": ("concat", "concat_mul_sub"),
    "model.dtype": ("float32", "bfloat16"),
    "optim.schedule": ("inverse_sqrt", "cosine", "constant"),
}
ATTENTION_IMPLS = {"luna": ("xla", "pallas", "mosaic", "triton", "auto"),
                   "transformer": ("xla", "dot_product", "cudnn")}
POSITIVE = ("data.max_length", "data.batch_size", "data.eval_batch_size", "model.emb_dim",
            "model.num_layers", "model.num_heads", "model.mlp_dim", "model.proj_len",
            "model.classifier_dim", "train.num_steps", "train.eval_every", "train.log_every",
            "train.checkpoint_every", "train.keep_checkpoints")
NON_NEGATIVE = ("model.classifier_layers", "optim.warmup_steps", "optim.warmup_init_lr",
                "optim.end_lr", "optim.weight_decay", "optim.grad_clip_norm")
RATES = ("model.dropout_rate", "model.attention_dropout_rate", "model.activation_dropout_rate",
         "optim.b1", "optim.b2")  # in [0, 1)


def check(config, *, devices: int = 1, processes: int = 1, backend: str = "cpu") -> None:
    """Raises ConfigError (one line: field, value, what is allowed) for a config that cannot
    run: before any data is read or model built. `devices`/`processes`: the run's counts."""
    flat = flatten(config)
    get = lambda f: flat.get(f)
    if not get("data.task"):
        raise ConfigError("config field data.task is empty: use a config file from configs/")
    _check_choice("model.name", get("model.name"), CHOICES["model.name"])
    _check_choice("optim.schedule", get("optim.schedule"), CHOICES["optim.schedule"])
    for field in POSITIVE:
        _check_number(field, get(field), integer=True, low=1)
    for field in NON_NEGATIVE:
        _check_number(field, get(field), integer=field == "model.classifier_layers", low=0)
    for field in RATES:
        _check_number(field, get(field), integer=False, low=0, below=1)
    _check_number("optim.learning_rate", get("optim.learning_rate"), integer=False, low=0,
                  strict=True)
    _check_number("optim.eps", get("optim.eps"), integer=False, low=0, strict=True)
    check_model(config["model"])
    for field in ("data.batch_size", "data.eval_batch_size"):
        if get(field) % devices:
            raise ConfigError(f"config field {field}={get(field)}: must be a multiple of the "
                              f"{devices} devices of this run")
    if get("data.batch_size") % processes:
        raise ConfigError(f"config field data.batch_size={get('data.batch_size')}: must be a "
                          f"multiple of the {processes} processes of this run")
    if get("model.name") == "luna" and get("model.attention_impl") == "pallas" \
            and backend not in ("gpu", "cuda", "tpu"):
        raise ConfigError(f"config field model.attention_impl='pallas': needs a GPU or TPU, "
                          f"this run's backend is {backend!r}; use 'xla' or 'auto'")


def check_model(model) -> None:
    """The model's own rules (build_model calls this too): `model` is a config's `model`
    field (a ConfigDict or a dict)."""
    get = lambda f: model[f]
    for field, allowed in CHOICES.items():
        if field.startswith("model."):
            _check_choice(field, get(field[len("model."):]), allowed)
    _check_choice("model.attention_impl", get("attention_impl"), ATTENTION_IMPLS[get("name")])
    _check_number("model.qkv_dim", get("qkv_dim"), integer=True, low=0)
    _check_number("model.layer_norm_epsilon", get("layer_norm_epsilon"), integer=False, low=0,
                  strict=True)
    _check_heads(get("emb_dim"), get("qkv_dim"), get("num_heads"))
    if get("pooling") == "cls" and not get("use_cls"):
        raise ConfigError("config field model.pooling='cls': needs model.use_cls=True "
                          "(or model.pooling='first', 'mean' or 'mean_all')")
    if get("name") == "transformer" and get("attention_impl") != "xla" \
            and get("attention_dropout_rate") > 0:
        raise ConfigError(f"config field model.attention_impl={get('attention_impl')!r}: "
                          "has no attention dropout; set model.attention_dropout_rate=0 or "
                          "use 'xla'")
    if get("name") == "luna":
        _check_luna(get)
    layers, width = get("classifier_layers"), get("classifier_dim")
    if get("classifier_halving") and isinstance(layers, int) and isinstance(width, int) \
            and layers > 1 and width >> (layers - 1) < 1:
        raise ConfigError(f"config field model.classifier_halving=True: model.classifier_dim="
                          f"{width} halved {layers - 1} times leaves no unit")


def _check_heads(emb_dim, qkv_dim, heads) -> None:
    """q/k/v (qkv_dim, else emb_dim) split evenly into heads."""
    field, width = ("model.qkv_dim", qkv_dim) if qkv_dim else ("model.emb_dim", emb_dim)
    if isinstance(width, int) and isinstance(heads, int) and heads > 0 and width % heads:
        raise ConfigError(f"config field {field}={width}: must be a multiple of "
                          f"model.num_heads={heads}")


def _check_luna(get) -> None:
    """Luna's own rules: the official code's options only."""
    if get("normalize_before") and get("embed_layer_norm"):
        # LunaLRAEncoder: `assert not layernorm_embedding or not normalize_before`
        raise ConfigError("config fields model.normalize_before=True and "
                          "model.embed_layer_norm=True: the official Luna encoder forbids the "
                          "embedding LayerNorm with pre-LN; set model.embed_layer_norm=False")
    if get("qkv_dim"):
        raise ConfigError(f"config field model.qkv_dim={get('qkv_dim')}: Luna's q/k/v have "
                          "the model width; set 0 (it is a transformer field)")
    if get("init") == "lra":
        raise ConfigError("config field model.init='lra': LRA's Transformer scheme; Luna "
                          "keeps its official schemes ('official' or 'bert')")


def _check_choice(field: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"config field {field}={value!r}: expected one of {list(allowed)}")


def _check_number(field, value, *, integer, low, below=None, strict=False) -> None:
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    ok = ok and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if strict else value >= low) and (below is None or value < below)
    if not ok:
        bounds = (f"> {low}" if strict else f">= {low}") + (f" and < {below}" if below else "")
        raise ConfigError(f"config field {field}={value!r}: expected {kind} {bounds}")


# ----------------------------------------------------------------------------- the same run

# Fields that do not change what a run computes: where files live, how often it logs or
# saves, how evaluation is batched (every example counts once), which implementation runs the
# same attention math, whether the last layer skips rows no head reads, and labels. Everything
# else is the run's identity.
BOOKKEEPING = frozenset({
    "config_file", "name", "data.data_dir", "data.eval_batch_size", "data.decode_workers",
    "data.generate_workers", "data.generate_show_progress", "model.attention_impl",
    "model.last_layer_cls_only",
    "train.results_dir", "train.progress_bar", "train.log_every", "train.checkpoint_every",
    "train.keep_checkpoints",
})


def identity(config) -> dict[str, Any]:
    """The flattened fields that make a run what it is (BOOKKEEPING left out)."""
    return {k: v for k, v in flatten(config).items() if k not in BOOKKEEPING}


def differences(have, want, *, ignore=()) -> list[str]:
    """'field: A vs B' for each identity field where two configs differ (ints equal to floats
    count as equal)."""
    a, b = identity(have), identity(want)
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
        if key in ignore or va == vb or _same_number(va, vb):
            continue
        out.append(f"{key}: {va!r} vs {vb!r}")
    return out


def extension_blockers(have, want) -> list[str]:
    """Why a run made with `have` cannot be continued as `want`: identity differences other
    than a longer train.num_steps (allowed unless the schedule depends on it, as cosine's
    does)."""
    extendable = () if flatten(want).get("optim.schedule") == "cosine" else ("train.num_steps",)
    diffs = differences(have, want, ignore=extendable)
    have_steps, want_steps = flatten(have)["train.num_steps"], flatten(want)["train.num_steps"]
    if "train.num_steps" in extendable and want_steps < have_steps:
        diffs.append(f"train.num_steps: {have_steps} vs {want_steps} (a run can be made "
                     "longer, not shorter)")
    return diffs


def _same_number(a, b) -> bool:
    numbers = (int, float)
    return (isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool)
            and not isinstance(b, bool) and float(a) == float(b))
