"""The parameter tree (paths and shapes) of every model the configs build, for the test that
ported weights still load: tests/data/param_trees_6785641.json was written by

    cd <a checkout of 6785641> && python - --write OUT.json < /path/to/tests/param_tree_check.py

(stdin keeps the checkout's own luna_lra first on the import path). Each entry stores the
model config and task it was built from with its tree, so test_models_param_tree.py rebuilds the same
models today however the config files change. Models are built at their config's
data.max_length (4,000 for Text, etc.); only shapes are computed (jax.eval_shape).

Options that came after 6785641 (ADDED) are pinned by the tree that introduced them:

    python tests/param_tree_check.py --add tests/data/param_trees_6785641.json

adds the entries the file lacks and leaves the others as they are.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import os
import sys

import jax
import jax.numpy as jnp

from luna_lra.config import apply_overrides
from luna_lra.data import get_task_module
from luna_lra.models import build_model

VARIANTS = ("luna16", "luna128", "luna256", "transformer", "tiny")
# Options off the recipes' path (each applied to configs/text.py:tiny).
OPTIONS = {
    "tie_kv": {"tie_kv": True},
    "tie_layers_bert": {"tie_layer_weights": True, "init": "bert"},
    "pre_ln": {"normalize_before": True},
    "pre_ln_no_embed_ln": {"normalize_before": True, "embed_layer_norm": False},
    "sinusoidal": {"positions": "sinusoidal"},
    "mean_no_cls": {"pooling": "mean", "use_cls": False},
    "transformer_tied": {"name": "transformer", "tie_layer_weights": True},
}
# Each config's transformer variant once it had LRA's Transformer options (model.init="lra",
# qkv_dim, tanh GELU, LayerNorm epsilon 1e-6, the task's pooling and head).
ADDED = [f"{task}:transformer+lra"
         for task in ("listops", "text", "retrieval", "image", "pathfinder32", "pathx")]


def load_config(path: str, variant: str):
    spec = importlib.util.spec_from_file_location("_cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def entry(config) -> dict:
    """{'model': the model fields, 'task': the TaskInfo fields, 'tree': tree_of(...)}."""
    task = get_task_module(config.data.task).TASK
    task = dataclasses.replace(task, max_length=int(config.data.max_length))
    return dict(model=config.model.to_dict(), task=dataclasses.asdict(task),
                tree=tree_of(config.model, task))


def tree_of(model_cfg, task) -> dict:
    """{'encoder/layer_0/attention/pack_key/kernel': [128, 128], ...} of the model built from
    model_cfg (the `model` field of a config) for task."""
    model = build_model(model_cfg, task)
    toks = jnp.ones((1, 4), jnp.int32)
    args = (toks, toks != 0) + ((toks, toks != 0) if task.two_tower else ())
    shapes = jax.eval_shape(lambda r: model.init(r, *args)["params"], jax.random.key(0))
    flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
    return {"/".join(k.key for k in path): list(leaf.shape) for path, leaf in flat}


def all_trees(root: str = ".") -> dict:
    out = {}
    for path in sorted(glob.glob(os.path.join(root, "configs", "*.py"))):
        name = os.path.basename(path)[:-3]
        for variant in VARIANTS:
            out[f"{name}:{variant}"] = entry(load_config(path, variant))
    for label, overrides in OPTIONS.items():
        config = load_config(os.path.join(root, "configs", "text.py"), "tiny")
        apply_overrides(config, {f"model.{k}": v for k, v in overrides.items()})
        out[f"text:tiny+{label}"] = entry(config)
    return out


def add_trees(path: str, root: str = ".") -> list:
    """Adds the ADDED entries `path` lacks, built by this luna_lra; returns their names."""
    with open(path) as f:
        trees = json.load(f)
    new = [name for name in ADDED if name not in trees]
    for name in new:
        task, variant = name.split("+")[0].split(":")
        trees[name] = entry(load_config(os.path.join(root, "configs", f"{task}.py"), variant))
    with open(path, "w") as f:
        json.dump(trees, f, indent=1, sort_keys=True)
    return new


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("--write", "--add"):
        raise SystemExit("usage: python - --write OUT.json < tests/param_tree_check.py (at "
                         "6785641), or python tests/param_tree_check.py --add FILE.json")
    if sys.argv[1] == "--add":
        print(f"added {add_trees(sys.argv[2])} to {sys.argv[2]}")
    else:
        with open(sys.argv[2], "w") as f:
            json.dump(all_trees(), f, indent=1, sort_keys=True)
        print(f"wrote {sys.argv[2]}")
