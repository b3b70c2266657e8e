"""The full config tree with defaults, and `recipe()`, which config files build their
variants with.

Every field a run can set is here (task files add their own `data.*` fields), so
`--config.x.y=value` on an unknown field fails loudly.
"""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
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

    c.model = ml_collections.ConfigDict()
    c.model.name = "luna"  # "luna" | "transformer"
    c.model.emb_dim = 512
    c.model.qkv_dim = 0  # transformer: width of q/k/v (LRA's qkv_dim); 0 = emb_dim
    c.model.num_layers = 6
    c.model.num_heads = 8
    c.model.mlp_dim = 2048
    c.model.proj_len = 256  # Luna's l
    c.model.tie_kv = False  # one projection for key and value (official option)
    c.model.tie_layer_weights = False
    c.model.normalize_before = False  # Luna: post-LN as in the official LRA runs; pre-LN needs embed_layer_norm=False
    c.model.dropout_rate = 0.1
    c.model.attention_dropout_rate = 0.1
    c.model.activation_dropout_rate = 0.0
    c.model.init = "official"  # "official" (xavier etc.) | "bert" (normal(0, 0.02)) | "lra" (transformer: LRA's Flax inits and biases)
    c.model.gelu = "exact"  # "exact" (erf, PyTorch's F.gelu) | "tanh" (flax nn.gelu's default, as LRA)
    c.model.layer_norm_epsilon = 1e-5  # PyTorch's default; LRA's flax LayerNorm uses 1e-6
    c.model.use_cls = True
    c.model.append_eos = False  # a learned eos after the last token (fairseq-preprocess appends </s>)
    c.model.embed_layer_norm = True
    c.model.positions = "learned"  # "learned" | "sinusoidal": fixed; Luna: LunaLRAEncoder's scaled path
    c.model.pooling = "cls"  # "cls" | "first" (position 0, no CLS: LRA's dual encoder) | "mean" (over real tokens) | "mean_all" (every position, padding too: LRA's MEAN, Luna's mp)
    c.model.classifier_dim = 2048
    c.model.classifier_layers = 1
    c.model.classifier_halving = False  # each further hidden layer half as wide (LRA's dual head: classifier_dim, classifier_dim // 2)
    c.model.classifier_activation = "relu"
    c.model.tower_combine = "concat"  # two-tower tasks: "concat" | "concat_mul_sub"
    c.model.last_layer_cls_only = True  # pooling cls/first: the last layer computes X at position 0 only, the row the head reads (the same logits and gradients, less work)
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
    return c



VARIANTS = ("luna16", "luna128", "luna256", "transformer", "tiny")

# What every LRA Transformer baseline shares (lra_benchmarks/models/transformer and the tasks'
# train.py): fixed sinusoidal positions unless a config sets learn_pos_emb, no embedding
# LayerNorm, flax's inits (model.init='lra': no q/k/v/out biases), tanh GELU, LayerNorm
# epsilon 1e-6, dropout after the MLP's GELU at the model's dropout rate (MlpBlock), Adam(0.9,
# 0.98, eps 1e-9) with a warm-up from 0.
LRA_TRANSFORMER = dict(
    model=dict(name="transformer", positions="sinusoidal", embed_layer_norm=False, init="lra",
               gelu="tanh", layer_norm_epsilon=1e-6),
    optim=dict(b1=0.9, b2=0.98, eps=1e-9, warmup_init_lr=0.0),
)


def lra_rsqrt_optim(warmup_steps: int) -> dict:
    """The optimiser of LRA's ListOps, Text and Retrieval Transformers: learning rate 0.05 *
    linear_warmup(warmup_steps) * rsqrt_decay, i.e. a peak of 0.05 / sqrt(warmup_steps) reached
    from 0 and then inverse square-root decay; weight decay 0.1."""
    return dict(learning_rate=0.05 / warmup_steps**0.5, warmup_steps=warmup_steps,
                weight_decay=0.1)


def recipe(config_file: str, variant: str, *, data: dict, luna: dict, transformer: dict,
           tiny: dict, name: str = "") -> ml_collections.ConfigDict:
    """base_config(), the task's `data` fields, then the variant's recipe:

      luna16/128/256  `luna` (the official Luna recipe) with model.proj_len = 16/128/256
      transformer     LRA_TRANSFORMER, then `transformer` (the LRA paper's softmax baseline)
      tiny            `luna`, then `tiny` (a reduced CPU demo)

    Each recipe is {section: {field: value}}; only `data` may add fields."""
    if variant not in VARIANTS:
        raise ValueError(f"{config_file}: unknown variant {variant!r}; expected one of "
                         f"{list(VARIANTS)} (as --config {config_file}:<variant>)")
    c = base_config()
    c.variant, c.name = variant, name
    update(c, {"data": data}, new_fields=True)
    if variant == "transformer":
        update(c, LRA_TRANSFORMER)
        update(c, transformer)
        c.model.activation_dropout_rate = c.model.dropout_rate  # LRA's MlpBlock
    else:
        update(c, luna)
    if variant == "tiny":
        update(c, tiny)
    elif variant.startswith("luna"):
        c.model.proj_len = int(variant[len("luna"):])
    return c


def update(c: ml_collections.ConfigDict, sections: dict, new_fields: bool = False) -> None:
    """Sets {section: {field: value}} on c; a field c lacks is a typo unless new_fields."""
    for section, fields in sections.items():
        for field, value in fields.items():
            if field not in c[section] and not new_fields:
                raise KeyError(f"recipe sets unknown field {section}.{field}")
            c[section][field] = value
