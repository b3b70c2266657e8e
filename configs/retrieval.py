"""Retrieval (LRA): byte-level AAN citation matching, two documents of 4,000 bytes, 2 classes.

Variants: luna16, luna128, luna256 (the official Luna LRA recipe), transformer (the LRA
paper's softmax baseline), tiny (a CPU demo: short documents, small model, few steps).
See luna_lra/data/retrieval.py for the data.
"""

from luna_lra.defaults import base_config, check_variant

# Test accuracy (%) published for Retrieval (only figures we could check are listed).
PAPER = {
    "luna256": (79.56, "Luna paper (Ma et al., 2021), LRA table, Luna-256"),
    "transformer": (57.46, "LRA paper (Tay et al., 2021), Table 1, Transformer"),
}


def get_config(variant: str = "luna256"):
    check_variant(variant, ["luna16", "luna128", "luna256", "transformer", "tiny"],
                  "configs/retrieval.py")
    c = base_config()
    c.variant = variant
    c.data.task = "retrieval"
    c.data.data_dir = "data/retrieval"  # holds tsv_data/ (or lra_release/tsv_data/)
    c.data.max_length = 4000  # bytes per document (each tower); the model adds its CLS token
    c.data.batch_size = 32
    c.data.eval_batch_size = 64
    c.data.split_seed = 0  # seeds the subsets below
    c.data.max_train_examples = 0  # 0 = all; else a seeded random subset (quick runs)
    c.data.max_eval_examples = 0  # 0 = all; else a seeded random subset of val and of test

    # Official Luna Retrieval recipe (fairseq-apollo examples/luna/README.lra.md, luna_lra_aan in
    # fairseq/models/lra/model.py): 4 layers, 128/512, 4 heads, dropout 0.1 (the model default),
    # no BERT init, classifier on [u, v] (2 x 128 in) -> 512; Adam(0.9, 0.98) lr 5e-4, weight
    # decay 1e-4, batch 32, inverse_sqrt with 8000 warm-up updates from 1e-7, 20,000 updates.
    c.model.name = "luna"
    c.model.num_layers = 4
    c.model.emb_dim, c.model.num_heads, c.model.mlp_dim = 128, 4, 512
    c.model.classifier_dim = 512
    c.model.classifier_activation = "relu"
    c.model.tower_combine = "concat"
    c.model.dropout_rate = 0.1
    c.model.attention_dropout_rate = 0.1
    c.model.init = "official"
    c.model.use_cls, c.model.pooling = True, "cls"
    c.model.embed_layer_norm = True
    c.model.tie_kv = False
    c.model.normalize_before = False
    c.optim.learning_rate = 5e-4
    c.optim.b1, c.optim.b2 = 0.9, 0.98
    c.optim.weight_decay = 1e-4
    c.optim.schedule = "inverse_sqrt"
    c.optim.warmup_steps = 8000
    c.optim.warmup_init_lr = 1e-7
    c.train.num_steps = 20000
    c.train.eval_every = 2000  # fairseq validated every 2000 updates (--save-interval-updates)
    c.train.checkpoint_every = 1000

    if variant.startswith("luna"):
        c.model.proj_len = int(variant[4:])
    elif variant == "transformer":
        # LRA (lra_benchmarks/matching/configs/base_match_config.py + train.py, the shared-encoder
        # TransformerDualEncoder): 4 layers, emb/qkv 128, mlp 512, 4 heads, dropout 0.1
        # (attention 0.1), Adam(0.9, 0.98, eps 1e-9), weight decay 0.1, batch 32, 5,000 steps,
        # 0.05 * linear_warmup(8000) * rsqrt_decay (peak 0.05 / sqrt(8000), never reached in
        # 5,000 steps). train.py passes no `interaction`, so the head sees [u, v] (not
        # [u, v, u*v, u-v]); the head is Dense(512) + ReLU, Dense(256) + ReLU, Dense(2) -- here
        # two ReLU layers of 512 (classifier_dim is one width). LRA's "CLS" pooling there is the
        # first byte's output (its dual encoder adds no CLS token); here a learned CLS token.
        # Its positions are fixed sinusoids (learn_pos_emb is not set), as here.
        c.model.name = "transformer"
        c.model.positions = "sinusoidal"  # LRA: learn_pos_emb=False
        c.model.init = "official"
        c.model.embed_layer_norm = False
        c.model.classifier_layers = 2
        c.model.tower_combine = "concat"
        c.optim.learning_rate = 0.05 / 8000**0.5
        c.optim.warmup_init_lr = 0.0
        c.optim.eps = 1e-9
        c.optim.weight_decay = 0.1
        c.train.num_steps = 5000
        c.train.eval_every = 500  # LRA evaluated every 100 steps
        c.train.checkpoint_every = 500
    else:  # tiny: reduced for two CPU cores (short documents, small model, eval subsets)
        c.data.max_length = 256
        c.data.batch_size = 16
        c.data.max_eval_examples = 1000
        c.model.proj_len = 16
        c.model.num_layers = 2
        c.model.emb_dim, c.model.num_heads, c.model.mlp_dim = 64, 4, 128
        c.model.classifier_dim = 128
        c.optim.learning_rate = 1e-3
        c.optim.warmup_steps = 100
        c.train.num_steps = 600
        c.train.eval_every = 200
        c.train.log_every = 20
        c.train.checkpoint_every = 200

    acc, src = PAPER.get(variant, (0.0, ""))
    c.paper_accuracy, c.paper_source = acc, src
    return c
