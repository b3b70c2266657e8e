"""What a sweep is: its runs (built with `grid`, or listed by hand in a sweep file's
`get_sweep()`), checked before anything starts, and the trainer command of each run."""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
from typing import Any, Iterable, Mapping, Sequence

from luna_lra import config as config_lib

RUN_KEYS = ("config", "overrides", "name", "hosts")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")

# Short names of fields in run names; any other field uses its last dotted component.
SHORT_NAMES = {
    "optim.learning_rate": "lr",
    "optim.weight_decay": "wd",
    "optim.warmup_steps": "warmup",
    "train.num_steps": "steps",
    "model.proj_len": "l",
    "model.num_layers": "layers",
    "model.dropout_rate": "drop",
    "data.batch_size": "bs",
    "data.max_length": "len",
}

class SweepError(ValueError):
    """A bad sweep file or run; the message names the run."""


# ----------------------------------------------------------------------------- building sweeps


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _name_part(field: str, value: Any, short_names: Mapping[str, str]) -> str:
    if field in ("task", "variant", "config"):
        if field == "config":  # "configs/listops.py:luna256" -> "listops-luna256"
            path, _, variant = str(value).partition(":")
            stem = os.path.splitext(os.path.basename(path))[0]
            return f"{stem}-{variant}" if variant else stem
        return str(value)
    short = short_names.get(field, SHORT_NAMES.get(field, field.rsplit(".", 1)[-1]))
    return f"{short}{_format_value(value)}"


def safe_name(text: str) -> str:
    """`text` with every character outside [A-Za-z0-9._+=-] replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", text).lstrip("._-") or "run"


def grid(axes: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any] | None = None, *,
         prefix: str = "", config_dir: str = "configs",
         short_names: Mapping[str, str] | None = None, hosts: int = 1) -> list[dict[str, Any]]:
    """One run per point of the product of `axes` (field -> list of values), in order.

    Besides config fields ("optim.learning_rate", "seed", ...), an axis or a fixed value may be
    `config` ("configs/listops.py:luna256"), or `task` and `variant`, which make the config
    f"{config_dir}/{task}.py:{variant}". `fixed` overrides go into every run but not into the
    name. The name joins the grid values in the order of `axes`, e.g.
    grid({"task": ["listops"], "variant": ["luna16"], "optim.learning_rate": [1e-4],
    "seed": [0, 1]}) -> names "listops-luna16-lr0.0001-seed0", "listops-luna16-lr0.0001-seed1".
    `hosts` > 1: each run is that many trainer processes on distinct hosts (--backend ray).
    """
    fixed = dict(fixed or {})
    short_names = dict(short_names or {})
    for field, values in axes.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise SweepError(f"grid axis {field!r}: expected a list of values, got {values!r}")
    fields = list(axes)
    runs = []
    for point in itertools.product(*(list(axes[f]) for f in fields)):
        values = {**fixed, **dict(zip(fields, point))}
        config = values.pop("config", None)
        task, variant = values.pop("task", None), values.pop("variant", None)
        if config is None:
            if task is None or variant is None:
                raise SweepError("grid: give `config`, or both `task` and `variant`, as an axis "
                                 "or a fixed value")
            config = f"{config_dir}/{task}.py:{variant}"
        elif task is not None or variant is not None:
            raise SweepError("grid: give either `config` or `task`/`variant`, not both")
        parts = [_name_part(f, v, short_names) for f, v in zip(fields, point)]
        if not any(f in ("config", "task", "variant") for f in fields):
            parts.insert(0, _name_part("config", config, short_names))
        name = safe_name("-".join(([prefix] if prefix else []) + parts))
        runs.append({"config": config, "overrides": values, "name": name,
                     **({"hosts": hosts} if hosts != 1 else {})})
    return runs


# ----------------------------------------------------------------------------- loading, checking


def _load_module(path: str, what: str):
    spec = importlib.util.spec_from_file_location(f"_luna_lra_{what}_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise SweepError(f"cannot load {what} file {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_config(run: Mapping[str, Any]):
    """The config a run trains with (its config file and variant, then its overrides)."""
    try:
        return config_lib.load(run["config"], run["overrides"])
    except config_lib.ConfigError as e:
        raise SweepError(f"run {run['name']!r}: {e}") from e


def check_runs(runs: Any, source: str = "the sweep", *, check_configs: bool = True) -> list[dict]:
    """Validates a list of runs and returns it normalised (`overrides` defaults to {}, `hosts`
    to 1).

    Refused, naming the run: a run that is not a dict, unknown or missing keys, a config path
    that does not exist (or a variant it refuses), an override of a field the config lacks or of
    the wrong type, a name that is not filesystem-safe, and a name used twice.
    `check_configs=False` skips loading the config files.
    """
    if not isinstance(runs, (list, tuple)):
        raise SweepError(f"{source}: get_sweep() must return a list of runs, got "
                         f"{type(runs).__name__}")
    if not runs:
        raise SweepError(f"{source}: get_sweep() returned no runs")
    out, seen = [], {}
    for i, run in enumerate(runs):
        label = f"run #{i}"
        if not isinstance(run, Mapping):
            raise SweepError(f"{source}: {label} is a {type(run).__name__}, expected a dict with "
                             f"keys {list(RUN_KEYS)}")
        if isinstance(run.get("name"), str):
            label = f"run #{i} {run['name']!r}"
        unknown = sorted(set(run) - set(RUN_KEYS))
        if unknown:
            raise SweepError(f"{source}: {label}: unknown keys {unknown}; expected {list(RUN_KEYS)}")
        for key in ("config", "name"):
            if not isinstance(run.get(key), str) or not run.get(key):
                raise SweepError(f"{source}: {label}: {key!r} must be a non-empty string, got "
                                 f"{run.get(key)!r}")
        name = run["name"]
        if not SAFE_NAME.match(name) or name in (".", ".."):
            raise SweepError(f"{source}: {label}: name {name!r} is not filesystem-safe (letters, "
                             "digits and . _ + = -, not starting with . _ + = or -)")
        if name in seen:
            raise SweepError(f"{source}: {label}: duplicate name {name!r} (also run #{seen[name]})")
        seen[name] = i
        overrides = run.get("overrides") or {}
        if not isinstance(overrides, Mapping) or not all(isinstance(k, str) for k in overrides):
            raise SweepError(f"{source}: {label}: 'overrides' must be a dict of field -> value, "
                             f"got {overrides!r}")
        hosts = run.get("hosts", 1)
        if not isinstance(hosts, int) or isinstance(hosts, bool) or hosts < 1:
            raise SweepError(f"{source}: {label}: 'hosts' must be an integer >= 1 (trainer "
                             f"processes, one per host), got {hosts!r}")
        run = {"config": run["config"], "overrides": dict(overrides), "name": name,
               "hosts": hosts}
        for field, value in run["overrides"].items():
            if isinstance(value, (dict, list, tuple)) or value is None:
                raise SweepError(f"{source}: {label}: override {field}={value!r}: give a str, "
                                 "int, float or bool")
        if check_configs:
            try:
                config_lib.load(run["config"], run["overrides"])
            except config_lib.ConfigError as e:
                raise SweepError(f"{source}: {label}: {e}") from e
        out.append(run)
    return out


def load_sweep(path: str, *, check_configs: bool = True) -> list[dict]:
    """The checked runs of a sweep file (see check_runs)."""
    if not os.path.isfile(path):
        raise SweepError(f"no sweep file {path!r}")
    try:
        module = _load_module(path, "sweep")
        if not hasattr(module, "get_sweep"):
            raise SweepError("defines no get_sweep()")
        runs = module.get_sweep()
    except Exception as e:  # noqa: BLE001 - name the file whatever went wrong
        what = str(e) if isinstance(e, SweepError) else f"{type(e).__name__}: {e}"
        raise SweepError(f"{path}: {what}") from e
    return check_runs(runs, path, check_configs=check_configs)


# ----------------------------------------------------------------------------- commands


def cli_value(value: Any) -> str:
    """A value as `--config.a.b=` expects it (ml_collections parses it by the field's type)."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def train_argv(run: Mapping[str, Any], workdir: str, python: str = "python") -> list[str]:
    argv = [python, "-m", "luna_lra.train", "--config", run["config"], "--workdir", workdir]
    argv += [f"--config.{k}={cli_value(v)}" for k, v in run["overrides"].items()]
    return argv
