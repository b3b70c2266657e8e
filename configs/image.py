"""Image (LRA): CIFAR-10 in grey levels, 1,024 pixel tokens, 10 classes.

Variants: luna16, luna128, luna256 (the official Luna LRA recipe), transformer (the LRA
paper's softmax baseline), tiny (a CPU demo: small model, few steps, eval subsets).
See luna_lra/data/image.py for the data (pixel 0 is a real token unless data.zero_is_padding).
"""

from luna_lra.defaults import base_config, check_variant

# Test accuracy (%) published for Image (only figures we could check are listed).
PAPER = {
    "luna256": (47.86, "Luna paper (Ma et al., 2021), LRA table, Luna-256"),
    "transformer": (42.44, "LRA paper (Tay et al., 2021), Table 1, Transformer"),
}

TRAIN_EXAMPLES = 45_000
STEPS_PER_EPOCH = TRAIN_EXAMPLES // 256  # 175


def get_config(variant: str = "luna256"):
    check_variant(variant, ["luna16", "luna128", "luna256", "transformer", "tiny"], "configs/image.py")
    c = base_config()
    c.variant = variant
    c.data.task = "image"
    c.data.data_dir = "data/image"
    c.data.max_length = 1024  # 32 x 32 grey pixels (fixed)
    c.data.batch_size = 256
    c.data.eval_batch_size = 256
    c.data.source = "auto"  # "auto" | "tfds" (cifar10, array_record) | "pickle" (python release)
    c.data.zero_is_padding = False  # True: LRA's quirk, black pixels (0) are masked as padding
    c.data.split_seed = 0  # seeds the subsets below
    c.data.max_train_examples = 0  # 0 = all; else a seeded random subset (quick runs)
    c.data.max_eval_examples = 0  # 0 = all; else a seeded random subset of val and of test

    # Official Luna Image recipe (fairseq-apollo examples/luna/README.lra.md, luna_lra_cifar10 in
    # fairseq/models/lra/model.py as of the Luna release): 3 layers, 256/512, 8 heads,
    # classifier 512, dropout 0.3 (attention 0.1), no BERT init; Adam(0.9, 0.98) lr 0.005, no
    # weight decay, batch 256, inverse_sqrt with 4000 warm-up updates from 1e-7, 35,000 updates.
    c.model.name = "luna"
    c.model.num_layers = 3
    c.model.emb_dim, c.model.num_heads, c.model.mlp_dim = 256, 8, 512
    c.model.classifier_dim = 512
    c.model.classifier_activation = "relu"
    c.model.dropout_rate = 0.3
    c.model.attention_dropout_rate = 0.1
    c.model.init = "official"
    c.model.use_cls, c.model.pooling = True, "cls"
    c.model.embed_layer_norm = True
    c.model.tie_kv = False
    c.model.normalize_before = False
    c.optim.learning_rate = 0.005
    c.optim.b1, c.optim.b2 = 0.9, 0.98
    c.optim.weight_decay = 0.0
    c.optim.schedule = "inverse_sqrt"
    c.optim.warmup_steps = 4000
    c.optim.warmup_init_lr = 1e-7
    c.train.num_steps = 35000
    c.train.eval_every = STEPS_PER_EPOCH  # fairseq validated once per epoch
    c.train.checkpoint_every = 5 * STEPS_PER_EPOCH

    if variant.startswith("luna"):
        c.model.proj_len = int(variant[4:])
    elif variant == "transformer":
        # LRA (lra_benchmarks/image/configs/cifar10/base_cifar10_config.py + image/train.py):
        # 1 layer, emb/qkv 32, mlp 64, 1 head, dropout 0.3 (attention 0.2), CLS pooling,
        # classifier Dense(mlp_dim=64) + ReLU; Adam(0.9, 0.98, eps 1e-9), no weight decay, no
        # clipping, batch 256, 35,000 steps (200 epochs of 175), lr 0.0005 *
        # linear_warmup(175) * cosine_decay (one cycle of 35,000 steps after the warm-up; ours
        # ends at step 35,000, LRA's would end 175 steps later), evaluated every 175 steps.
        c.model.name = "transformer"
        c.model.positions = "sinusoidal"  # LRA: learn_pos_emb=False
        c.model.num_layers = 1
        c.model.emb_dim, c.model.num_heads, c.model.mlp_dim = 32, 1, 64
        c.model.classifier_dim = 64
        c.model.dropout_rate = 0.3
        c.model.attention_dropout_rate = 0.2
        c.model.init = "official"
        c.model.embed_layer_norm = False
        c.optim.learning_rate = 0.0005
        c.optim.schedule = "cosine"
        c.optim.warmup_steps = STEPS_PER_EPOCH
        c.optim.warmup_init_lr = 0.0
        c.optim.end_lr = 0.0
        c.optim.eps = 1e-9
        c.optim.weight_decay = 0.0
    else:  # tiny: reduced for two CPU cores (small model, few steps, eval subsets)
        c.data.batch_size = 32
        c.data.eval_batch_size = 128
        c.data.max_eval_examples = 1000
        c.model.proj_len = 16
        c.model.num_layers = 1
        c.model.emb_dim, c.model.num_heads, c.model.mlp_dim = 32, 4, 64
        c.model.classifier_dim = 64
        c.model.dropout_rate = 0.1
        c.model.attention_dropout_rate = 0.1
        c.optim.learning_rate = 2e-3
        c.optim.warmup_steps = 100
        c.train.num_steps = 500
        c.train.eval_every = 250
        c.train.log_every = 20
        c.train.checkpoint_every = 250

    acc, src = PAPER.get(variant, (0.0, ""))
    c.paper_accuracy, c.paper_source = acc, src
    return c
