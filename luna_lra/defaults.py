"""The full config tree with defaults; configs/<task>.py start from `base_config()`.

Every field a run can set is here, so `--config.x.y=value` on an unknown field fails loudly.
"""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.name = ""  # the benchmark's name when it differs from data.task (pathfinder32, pathx)
    c.variant = ""  # which `:variant` of the config file made this config

    c.data = ml_collections.ConfigDict()
    c.data.task = ""
    c.data.data_dir = ""
    c.data.max_length = 0  # tokens per example (per tower) before the CLS token
    c.data.batch_size = 32  # global batch, split over all devices
    c.data.eval_batch_size = 64

    c.model = ml_collections.ConfigDict()
    c.model.name = "luna"  # "luna" | "transformer"
    c.model.emb_dim = 512
    c.model.num_layers = 6
    c.model.num_heads = 8
    c.model.mlp_dim = 2048
    c.model.proj_len = 256  # Luna's l
    c.model.tie_kv = False  # one projection for key and value (official option)
    c.model.tie_layer_weights = False
    c.model.normalize_before = False  # Luna: post-LN as in the official LRA runs
    c.model.dropout_rate = 0.1
    c.model.attention_dropout_rate = 0.1
    c.model.activation_dropout_rate = 0.0
    c.model.init = "official"  # "official" (xavier etc.) | "bert" (normal(0, 0.02))
    c.model.use_cls = True
    c.model.embed_layer_norm = True
    c.model.positions = "learned"  # "learned" | "sinusoidal" (fixed, the LRA code's default)
    c.model.pooling = "cls"  # "cls" | "mean"
    c.model.classifier_dim = 2048
    c.model.classifier_layers = 1
    c.model.classifier_activation = "relu"
    c.model.tower_combine = "concat"  # two-tower tasks: "concat" | "concat_mul_sub"
    c.model.attention_impl = "xla"  # Luna: "xla" | "pallas" | "auto"; transformer: "xla" | "dot_product" | "cudnn"
    c.model.dtype = "float32"  # compute dtype: "float32" | "bfloat16"

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

    # Published test accuracy (%) for this task and model, printed beside ours; 0 = none.
    c.paper_accuracy = 0.0
    c.paper_source = ""
    return c


def flatten_config(d, prefix: str = "") -> dict:
    """{'model': {'emb_dim': 512}} -> {'model.emb_dim': 512} (nested dicts or ConfigDicts)."""
    out = {}
    for k, v in d.items():
        if hasattr(v, "items"):
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_variant(variant: str, variants, config_file: str) -> None:
    if variant not in variants:
        raise ValueError(f"{config_file}: unknown variant {variant!r}; expected one of "
                         f"{sorted(variants)} (as --config {config_file}:<variant>)")
