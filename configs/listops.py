"""ListOps (LRA): 10-way classification of nested MIN/MAX/MED/SM expressions, up to 2,000 tokens.

Variants: luna16, luna128, luna256 (the official Luna LRA recipe), transformer (the LRA paper's
softmax baseline), tiny (a CPU demo on generated short sequences).
"""

from luna_lra.defaults import base_config, check_variant

# Test accuracy (%) published for ListOps (only figures we could check are listed).
PAPER = {
    "luna256": (37.98, "Luna paper (Ma et al., 2021), LRA table, Luna-256"),
    "transformer": (36.37, "LRA paper (Tay et al., 2021), Table 1, Transformer"),
}


def get_config(variant: str = "luna256"):
    check_variant(variant, ["luna16", "luna128", "luna256", "transformer", "tiny"], "configs/listops.py")
    c = base_config()
    c.variant = variant
    c.data.task = "listops"
    c.data.data_dir = "data/listops"
    c.data.max_length = 2000
    c.data.batch_size = 32
    c.data.eval_batch_size = 64
    # Generate the data set on first use when data_dir holds none (the LRA generator's
    # parameters: 96k/2k/2k examples of 500 to 2000 tokens).
    c.data.generate_if_missing = False
    c.data.generate_num_train = 96_000
    c.data.generate_num_val = 2_000
    c.data.generate_num_test = 2_000
    c.data.generate_min_length = 500
    c.data.generate_max_length = 2000
    c.data.generate_max_depth = 10
    c.data.generate_max_args = 10
    c.data.generate_seed = 0

    # Official Luna ListOps recipe (fairseq-apollo, luna_lra_listop + README.lra.md).
    c.model.name = "luna"
    c.model.emb_dim, c.model.num_heads, c.model.mlp_dim = 512, 8, 2048
    c.model.num_layers = 1
    c.model.tie_layer_weights = True
    c.model.init = "bert"
    c.model.classifier_dim = 2048
    c.optim.learning_rate = 1e-4
    c.optim.weight_decay = 1e-4
    c.optim.warmup_steps = 1000
    c.train.num_steps = 5000
    c.train.eval_every = 250

    if variant.startswith("luna"):
        c.model.proj_len = int(variant[4:])
    elif variant == "transformer":
        # LRA paper: 6 layers, 512/2048, 8 heads, Adam(0.9, 0.98, eps 1e-9), weight decay 0.1,
        # 0.05 * linear_warmup(1000) * rsqrt_decay, i.e. a peak of 0.05 / sqrt(1000).
        c.model.name = "transformer"
        c.model.positions = "sinusoidal"  # LRA: learn_pos_emb=False
        c.model.num_layers = 6
        c.model.tie_layer_weights = False
        c.model.init = "official"
        c.model.embed_layer_norm = False
        c.optim.learning_rate = 0.05 / 1000**0.5
        c.optim.warmup_init_lr = 0.0
        c.optim.eps = 1e-9
        c.optim.weight_decay = 0.1
    else:  # tiny: a small Luna on short generated sequences (5 to 128 tokens), minutes on a CPU
        c.data.data_dir = "data/listops_tiny"
        c.data.max_length = 128
        c.data.generate_if_missing = True
        c.data.generate_num_train = 20_000
        c.data.generate_num_val = 2_000
        c.data.generate_num_test = 2_000
        # Shorter than LRA's 500..2000 tokens, and down to 5 tokens so that shallow expressions
        # are in the mix too: a small model then learns more than the operator-prior baseline.
        c.data.generate_min_length = 5
        c.data.generate_max_length = 128
        c.data.generate_max_depth = 10
        c.model.proj_len = 16
        c.model.emb_dim, c.model.num_heads, c.model.mlp_dim = 64, 4, 128
        c.model.num_layers = 2
        c.model.tie_layer_weights = False
        c.model.classifier_dim = 128
        c.model.dropout_rate = 0.0
        c.model.attention_dropout_rate = 0.0
        c.optim.learning_rate = 1e-3
        c.optim.warmup_steps = 200
        c.data.batch_size = 64
        c.train.num_steps = 2000
        c.train.eval_every = 250
        c.train.log_every = 25
        c.train.checkpoint_every = 250

    acc, src = PAPER.get(variant, (0.0, ""))
    c.paper_accuracy, c.paper_source = acc, src
    return c
