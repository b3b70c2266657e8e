"""Models by name: a model is one module that defines `MODEL = Model(...)`, in this package
(luna, transformer) or anywhere a user's code can be imported from.

A config's `model.name` finds it, in this order: a model of this package; a `luna_lra.models`
entry point of an installed distribution (its value: the module, or the Model itself);
an import path (`my_package.my_model`). Nothing outside luna_lra/models/ compares model names:
everything the harness needs of a model is here.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
from typing import Any, Mapping

from luna_lra.checks import ConfigError, short
from luna_lra.models.config import TASK_FIELDS, Model, ModelConfig, config_fields

BUILT_IN = ("luna", "transformer")
ENTRY_POINT_GROUP = "luna_lra.models"


@functools.cache
def get(name: str) -> Model:
    """The model `name` (see the module docstring); ConfigError in one line if there is none."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"config field model.name={short(name)}: expected a model name")
    found = _entry_points().get(name)
    try:
        if name in BUILT_IN:
            found = importlib.import_module(f"luna_lra.models.{name}")
        elif found is not None:
            found = found.load()
        else:
            found = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if found is None and e.name and name.startswith(e.name):  # the model itself is missing
            raise ConfigError(
                f"config field model.name={name!r}: no such model; expected one of "
                f"{list(BUILT_IN) + sorted(_entry_points())} or the import path of a module "
                "defining MODEL (e.g. my_package.my_model, importable from here)") from None
        raise ConfigError(f"config field model.name={name!r}: importing it failed "
                          f"({type(e).__name__}: {e})") from e
    except Exception as e:  # noqa: BLE001 - a user's module that fails to import: one line
        raise ConfigError(f"config field model.name={name!r}: importing it failed "
                          f"({type(e).__name__}: {e})") from e
    model = getattr(found, "MODEL", found)
    if not isinstance(model, Model):
        raise ConfigError(f"config field model.name={name!r}: {getattr(found, '__name__', found)} "
                          "defines no MODEL = luna_lra.models.Model(...)")
    if not (isinstance(model.config, type) and issubclass(model.config, ModelConfig)):
        raise ConfigError(f"config field model.name={name!r}: its Model.config must subclass "
                          "luna_lra.models.ModelConfig")
    return dataclasses.replace(model, name=name)


@functools.cache
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def variant(name: str) -> tuple[Model, dict[str, Any]]:
    """(the model, its fields) a name stands for: a variant a built-in model declares ("luna16"
    -> Luna with proj_len 16), else a model's name (its defaults)."""
    for built_in in BUILT_IN:
        if name in get(built_in).variants:
            return get(built_in), dict(get(built_in).variants[name])
    return get(name), {}


def defaults(name: str) -> dict[str, Any]:
    """The `model` section of a config for model `name`: every field with its default."""
    fields = config_fields(get(name).config)
    return {f.name: name if f.name == "name" else f.default for f in fields}


def model_config(section: Mapping[str, Any], task: Any = None, **runtime) -> ModelConfig:
    """The checked, frozen config of the model a config's `model` section names. task: a
    luna_lra.data.TaskInfo (None: only check the fields); runtime: e.g. interpret=True.
    A field the model does not have, or a bad value, is a ConfigError naming it."""
    model = get(section["name"])
    known = {f.name for f in config_fields(model.config)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"config field model.{unknown[0]}: model {model.name!r} has no such "
                          f"field; its fields: {sorted(known)}")
    sizes = {k: getattr(task, k) for k in TASK_FIELDS} if task is not None else {}
    config = model.config(**dict(section), **sizes, **runtime)
    config.check()
    return config


def switch(section: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The `model` section for another model: the fields every model shares keep their values,
    the new model's own fields start at its defaults (the old model's own fields go)."""
    shared = {f.name for f in config_fields(ModelConfig)}
    return {**defaults(name), **{k: v for k, v in dict(section).items() if k in shared},
            "name": name}


def label(model_section: Mapping[str, Any]) -> str:
    """The table label of a config's `model` section; its name if the model cannot be found."""
    try:
        return get(model_section["name"]).label_of(model_section)
    except (ConfigError, KeyError):
        return str(model_section.get("name", "?"))
