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
import os
from typing import Any, Mapping

import ml_collections

from luna_lra import data as data_lib
from luna_lra import models
from luna_lra.checks import ConfigError, check_choice, check_number, short

__all__ = ["ConfigError", "load", "apply_overrides", "check", "identity", "differences",
           "extension_blockers", "flatten", "to_dict", "BOOKKEEPING"]


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
    except ValueError as e:  # recipe(): an unknown variant or field (ConfigError included)
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
    field's type, are refused naming the field; a str value is parsed by the field's type.
    `model.name` goes first: another model gets its own fields (models.switch), which the
    other overrides may then set."""
    name = overrides.get("model.name")
    if name is not None and name != config.model.name:
        config.model = ml_collections.ConfigDict(models.switch(config.model, name))
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
            raise ConfigError(f"config field {field}={short(value)}: expected a "
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
        raise ConfigError(f"config field {field}={short(text)}: expected a "
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

CHOICES = {"optim.schedule": ("inverse_sqrt", "cosine", "constant")}
POSITIVE = ("data.max_length", "data.batch_size", "data.eval_batch_size", "train.num_steps",
            "train.eval_every", "train.log_every", "train.checkpoint_every",
            "train.keep_checkpoints")
NON_NEGATIVE = ("optim.warmup_steps", "optim.warmup_init_lr", "optim.end_lr",
                "optim.weight_decay", "optim.grad_clip_norm")
RATES = ("optim.b1", "optim.b2")  # in [0, 1)
# a model's attention_impl values that need an accelerator: the backends they run on
GPU, ACCELERATOR = ("gpu", "cuda"), ("gpu", "cuda", "tpu")
IMPL_BACKENDS = {"pallas": ACCELERATOR, "mosaic": ACCELERATOR, "triton": GPU, "cudnn": GPU}


def check(config, *, devices: int = 1, processes: int = 1, backend: str = "cpu") -> None:
    """Raises ConfigError (one line: field, value, what is allowed) for a config that cannot
    run: before any data is read or model built. `devices`/`processes`: the run's counts."""
    flat = flatten(config)
    get = lambda f: flat.get(f)
    if not get("data.task"):
        raise ConfigError("config field data.task is empty: use a config file from configs/")
    check_choice("data.task", get("data.task"), sorted(data_lib.TASK_MODULES))
    for field, allowed in CHOICES.items():
        check_choice(field, get(field), allowed)
    for field in POSITIVE:
        check_number(field, get(field), integer=True, low=1)
    for field in NON_NEGATIVE:
        check_number(field, get(field), integer=False, low=0)
    for field in RATES:
        check_number(field, get(field), integer=False, low=0, below=1)
    check_number("optim.learning_rate", get("optim.learning_rate"), integer=False, low=0,
                 strict=True)
    check_number("optim.eps", get("optim.eps"), integer=False, low=0, strict=True)
    models.model_config(config["model"])  # the model's fields, by the model's own checks
    for field in ("data.batch_size", "data.eval_batch_size"):
        if get(field) % devices:
            raise ConfigError(f"config field {field}={get(field)}: must be a multiple of the "
                              f"{devices} devices of this run")
    if get("data.batch_size") % processes:
        raise ConfigError(f"config field data.batch_size={get('data.batch_size')}: must be a "
                          f"multiple of the {processes} processes of this run")
    impl = get("model.attention_impl")
    if impl in IMPL_BACKENDS and backend not in IMPL_BACKENDS[impl]:
        needs = "a GPU" if IMPL_BACKENDS[impl] == GPU else "a GPU or TPU"
        raise ConfigError(f"config field model.attention_impl={impl!r}: needs {needs}, this "
                          f"run's backend is {backend!r}; use another (e.g. 'xla')")


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
