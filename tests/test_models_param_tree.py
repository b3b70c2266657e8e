"""Ported weights still load: every model in tests/data/param_trees_6785641.json (the configs'
variants and some options, as 6785641 built them; see tests/param_tree_check.py) has the same
parameter paths and shapes today. The one change is declared below."""

import json
import os

import ml_collections
import pytest

from luna_lra.data import TaskInfo
from luna_lra.defaults import base_config
from param_tree_check import tree_of

TREES = json.load(open(os.path.join(os.path.dirname(__file__), "data",
                                    "param_trees_6785641.json")))
# Luna with pre-LN: the official encoder forbids the embedding LayerNorm there (an error now),
# and without it there is no LayerNorm on the initial P either.
REFUSED = {"text:tiny+pre_ln"}
DROPPED = {"text:tiny+pre_ln_no_embed_ln": {"encoder/packed_embed_norm/bias",
                                           "encoder/packed_embed_norm/scale"}}


# Fields the snapshot's configs carried for every model (one field set then), which a model
# without them never read: Luna's for the Transformer, the Transformer's qkv_dim (0) for Luna.
NOT_READ = {"transformer": {"proj_len", "tie_kv", "normalize_before"},
            "luna": {"qkv_dim"}}


def _rebuild(name):
    entry = dict(TREES[name]["model"])
    cfg = base_config(entry["name"]).model
    extra = set(entry) - set(cfg)
    assert extra <= NOT_READ[entry["name"]] and entry.get("qkv_dim", 0) in (0, None) \
        or entry["name"] == "transformer", extra
    cfg.update(ml_collections.ConfigDict({k: v for k, v in entry.items() if k not in extra}))
    return tree_of(cfg, TaskInfo(**TREES[name]["task"]))


@pytest.mark.parametrize("name", sorted(set(TREES) - REFUSED))
def test_parameter_tree_unchanged(name):
    want = {k: v for k, v in TREES[name]["tree"].items() if k not in DROPPED.get(name, ())}
    assert _rebuild(name) == want


def test_the_snapshot_covers_every_task_and_variant():
    tasks = {k.split(":")[0] for k in TREES}
    assert tasks >= {"listops", "text", "retrieval", "image", "pathfinder32", "pathx"}
    for task in tasks:
        for variant in ("luna16", "luna128", "luna256", "transformer", "tiny"):
            assert f"{task}:{variant}" in TREES


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_pre_ln_with_embedding_layer_norm_is_refused(name):
    with pytest.raises(ValueError, match="model.embed_layer_norm"):
        _rebuild(name)
