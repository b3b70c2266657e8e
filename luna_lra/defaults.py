"""The full config tree with defaults, and `recipe()`, which config files build their
variants with.

Every field a run can set is here or in its model's config class (task files add their own
`data.*` fields), so `--config.x.y=value` on an unknown field fails loudly.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import ml_collections

from luna_lra import models


def base_config(model: str = "luna") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.name = ""  # the benchmark's name when it differs from data.task (pathfinder32, pathx)
    c.variant = ""  # which `:variant` of the config file made this config
    c.config_file = ""  # the config file it came from (set by luna_lra.config.load)

    c.data = ml_collections.ConfigDict()
    c.data.task = ""
    c.data.data_dir = ""
    c.data.max_length = 0  # tokens per example (per tower) before the CLS token
    c.data.batch_size = 32  # global batch, split over all devices
    c.data.eval_batch_size = 64

    # The model's fields and their defaults are declared once, by the model (luna_lra/models)
    c.model = ml_collections.ConfigDict(models.defaults(model))

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 1e-4  # peak
    c.optim.schedule = "inverse_sqrt"  # "inverse_sqrt" | "cosine" | "constant"
    c.optim.warmup_steps = 1000
    c.optim.warmup_init_lr = 1e-7
    c.optim.end_lr = 0.0  # cosine only
    c.optim.b1 = 0.9
    c.optim.b2 = 0.98
    c.optim.eps = 1e-8
    c.optim.weight_decay = 1e-4  # decoupled (AdamW), as fairseq's adam
    c.optim.grad_clip_norm = 0.0  # 0 = off

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 5000
    c.train.eval_every = 500
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 2
    c.train.results_dir = "results"  # the accuracy table is written here; "" = don't
    c.train.progress_bar = True
    return c



def lra_rsqrt_optim(warmup_steps: int) -> dict:
    """The optimiser of LRA's ListOps, Text and Retrieval Transformers: learning rate 0.05 *
    linear_warmup(warmup_steps) * rsqrt_decay, i.e. a peak of 0.05 / sqrt(warmup_steps) reached
    from 0 and then inverse square-root decay; weight decay 0.1."""
    return dict(learning_rate=0.05 / warmup_steps**0.5, warmup_steps=warmup_steps,
                weight_decay=0.1)


def merge(*recipes: Mapping[str, Mapping[str, Any]]) -> dict:
    """One recipe from several, later ones winning field by field: merge(LUNA, TINY)."""
    out: dict = {}
    for r in recipes:
        for section, fields in r.items():
            out.setdefault(section, {}).update(copy.deepcopy(dict(fields)))
    return out


def recipe(config_file: str, variant: str, *, data: dict, recipes: Mapping[str, Mapping],
           name: str = "") -> ml_collections.ConfigDict:
    """The config of `variant`: base_config() for the recipe's model, the task's `data` fields,
    the model's own recipe (e.g. what every LRA Transformer shares), then the variant's recipe.

    recipes: {recipe name: {section: {field: value}}}, each naming its model (model.name). A
    variant is a recipe's name, or a variant a model declares on the recipe named after it
    (luna16 = the "luna" recipe with model.proj_len=16). Only `data` may add fields."""
    chosen, model_fields = _variant(config_file, variant, recipes)
    model_name = chosen.get("model", {}).get("name")
    if not model_name:
        raise ValueError(f"{config_file}: recipe for variant {variant!r} names no model "
                         "(model.name)")
    model = models.get(model_name)
    c = base_config(model_name)
    c.variant, c.name = variant, name
    update(c, {"data": data}, new_fields=True)
    for layer in (model.recipe, chosen, {"model": model_fields}):
        update(c, layer)
    return c


def _variant(config_file: str, variant: str, recipes: Mapping[str, Mapping]):
    """(the recipe, model fields) a variant stands for."""
    if variant in recipes:
        return recipes[variant], {}
    for recipe_name, r in recipes.items():
        model_name = r.get("model", {}).get("name")
        if recipe_name == model_name and variant in models.get(model_name).variants:
            return r, dict(models.get(model_name).variants[variant])
    known = list(recipes) + [v for name, r in recipes.items() if name == r.get("model", {})
                             .get("name") for v in models.get(name).variants]
    raise ValueError(f"{config_file}: unknown variant {variant!r}; expected one of {known} "
                     f"(as --config {config_file}:<variant>)")


def update(c: ml_collections.ConfigDict, sections: Mapping, new_fields: bool = False) -> None:
    """Sets {section: {field: value}} on c; a field c lacks is a typo unless new_fields."""
    for section, fields in sections.items():
        for field, value in fields.items():
            if field not in c[section] and not new_fields:
                what = f" (model {c.model.name!r} has no such field)" if section == "model" else ""
                raise ValueError(f"recipe sets unknown field {section}.{field}{what}")
            c[section][field] = value
