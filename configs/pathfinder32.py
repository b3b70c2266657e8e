"""Pathfinder (LRA "Path"): are the two circles joined by a dashed path? 32 x 32 hard images
(curv_contour_length_14), read as 1,024 pixel tokens, binary classification.

Variants: luna16, luna128, luna256 (the official Luna recipe), transformer (the LRA paper's
softmax baseline), tiny (a reduced CPU demo on generated data).

Data: data.data_dir is the release's `pathfinder32` folder (with curv_baseline/,
curv_contour_length_9/, curv_contour_length_14/) or a folder made by
`python -m data_prep.pathfinder --out data/pathfinder32 --resolution 32 --level hard
--num_images 200000` (the release's size: 200 batches of 1,000).
"""

from luna_lra.defaults import base_config, check_variant

VARIANTS = ["luna16", "luna128", "luna256", "transformer", "tiny"]

# Test accuracy (%) published for Pathfinder (only figures we could check are listed).
PAPER = {
    "luna256": (78.55, "Luna paper (Ma et al., 2021), LRA table, Luna-256"),
    "transformer": (71.40, "LRA paper (Tay et al., 2021), Table 1, Transformer"),
}


def pathfinder_data(c, resolution: int, data_dir: str) -> None:
    """The data.* fields of the Pathfinder task (shared with configs/pathx.py)."""
    c.data.task = "pathfinder"
    c.data.data_dir = data_dir
    c.data.resolution = resolution  # 32 | 64 | 128 | 256
    c.data.level = "hard"  # "easy" | "intermediate" | "hard" (curv_contour_length_14)
    c.data.max_length = resolution * resolution
    c.data.zero_is_padding = False  # True: pixel value 0 is padding, as in LRA's code
    c.data.skip_bad_images = False  # True: skip (count, log) missing/unreadable images
    c.data.decode_workers = 0  # PNG decoding threads; 0 = up to 8
    # Generate the level on first use when data_dir holds none (data_prep.pathfinder).
    c.data.generate_if_missing = False
    c.data.generate_num_images = 200_000
    c.data.generate_seed = 0
    c.data.generate_batch_size = 1000
    c.data.generate_workers = 0  # 0 = all cores


def luna_pathfinder_recipe(c) -> None:
    """Official Luna recipe (fairseq-apollo: luna_lra_pf32 / luna_lra_pf128 in
    fairseq/models/lra/model.py and the pf32 command of examples/luna/README.lra.md)."""
    c.model.name = "luna"
    c.model.num_layers = 1
    c.model.emb_dim, c.model.num_heads, c.model.mlp_dim = 128, 4, 128
    c.model.tie_layer_weights = False
    c.model.normalize_before = False
    c.model.embed_layer_norm = True  # layernorm_embedding = encoder_normalize_before = True
    c.model.init = "official"  # no --apply-bert-init for pf32
    c.model.use_cls = False
    c.model.pooling = "mean"  # sen_rep_type 'mp'
    c.model.classifier_dim = 256
    c.model.classifier_layers = 1
    c.model.dropout_rate = 0.2
    c.model.attention_dropout_rate = 0.1
    c.model.activation_dropout_rate = 0.0
    c.data.batch_size = 512
    c.data.eval_batch_size = 512
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "inverse_sqrt"
    c.optim.warmup_steps = 4000
    c.optim.warmup_init_lr = 1e-7
    c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.98, 1e-8
    c.optim.weight_decay = 0.0
    c.optim.grad_clip_norm = 0.0
    c.train.num_steps = 62_500
    c.train.eval_every = 625
    c.train.checkpoint_every = 625
    c.train.log_every = 100


def get_config(variant: str = "luna256"):
    check_variant(variant, VARIANTS, "configs/pathfinder32.py")
    c = base_config()
    c.variant = variant
    c.name = "pathfinder32"
    pathfinder_data(c, 32, "data/pathfinder32")
    luna_pathfinder_recipe(c)

    if variant.startswith("luna"):
        c.model.proj_len = int(variant[4:])
    elif variant == "transformer":
        # LRA (lra_benchmarks/image/configs/pathfinder32/transformer_base.py on
        # base_pathfinder32_config.py): 1 layer, emb 128, 4 heads, mlp 128, dropout 0.2,
        # attention dropout 0.1, mean pooling, batch 512, Adam(0.9, 0.98, eps 1e-9), no weight
        # decay, lr 1e-3 * linear_warmup(312) * cosine_decay over 200 epochs of 160k images
        # (62,400 steps), no gradient clipping.
        c.model.name = "transformer"
        c.model.positions = "sinusoidal"  # LRA: learn_pos_emb=False
        c.model.init = "official"
        c.model.embed_layer_norm = False
        c.model.dropout_rate = 0.2
        c.model.attention_dropout_rate = 0.1
        c.model.classifier_dim = 128  # LRA's classifier head: Dense(mlp_dim) + ReLU + Dense
        c.optim.schedule = "cosine"
        c.optim.learning_rate = 1e-3
        c.optim.warmup_steps = 312
        c.optim.warmup_init_lr = 0.0
        c.optim.end_lr = 0.0
        c.optim.eps = 1e-9
        c.train.num_steps = 62_400
        c.train.eval_every = 312
        c.train.checkpoint_every = 624
    else:  # tiny: REDUCED -- 3,000 generated images and a small Luna, minutes on 2 CPU cores
        c.data.data_dir = "data/pathfinder32_tiny"
        c.data.generate_if_missing = True
        c.data.generate_num_images = 3000
        c.model.proj_len = 16
        c.model.emb_dim, c.model.num_heads, c.model.mlp_dim = 32, 2, 64
        c.model.classifier_dim = 64
        c.model.dropout_rate = 0.0
        c.model.attention_dropout_rate = 0.0
        c.data.batch_size = 32
        c.data.eval_batch_size = 100
        c.optim.warmup_steps = 100
        c.train.num_steps = 600
        c.train.eval_every = 200
        c.train.checkpoint_every = 200
        c.train.log_every = 25

    acc, src = PAPER.get(variant, (0.0, ""))
    c.paper_accuracy, c.paper_source = acc, src
    return c
