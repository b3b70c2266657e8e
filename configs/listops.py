"""ListOps (LRA): 10-way classification of nested MIN/MAX/MED/SM expressions, up to 2,000 tokens.

Variants: luna16, luna128, luna256 (the official Luna LRA recipe), transformer (the LRA
paper's softmax baseline), tiny (a CPU demo on generated short sequences).
"""

from luna_lra.defaults import lra_rsqrt_optim, merge, recipe

# The files, or the generator's parameters when data_dir holds none and generate_if_missing
# is set (those of the LRA generator: 96k/2k/2k examples of 500 to 2,000 tokens).
DATA = dict(task="listops", data_dir="data/listops", max_length=2000, batch_size=32,
            eval_batch_size=64, generate_if_missing=False, generate_num_train=96_000,
            generate_num_val=2_000, generate_num_test=2_000, generate_min_length=500,
            generate_max_length=2000, generate_max_depth=10, generate_max_args=10,
            generate_seed=0)

# fairseq-apollo at the 2021 release (6135e5b): examples/luna/README.lra.md (listops) on
# luna_lra_listop (fairseq/models/luna_lra/model.py): 1 layer (--encoder-layers 1), 512/2048, 8
# heads, bert init, Adam(0.9, 0.98) lr 1e-4, weight decay 1e-4, inverse_sqrt with 1000 warm-up
# updates from 1e-7, 5,000 updates, validation every 20 updates (--save-interval-updates 20);
# inputs <CLS> x </s> (fairseq-preprocess appends the eos; binarizer.py append_eos=True).
LUNA = dict(
    model=dict(name="luna", num_layers=1, tie_layer_weights=True, init="bert",
               classifier_dim=2048, append_eos=True),
    optim=dict(learning_rate=1e-4, weight_decay=1e-4, warmup_steps=1000),
    train=dict(num_steps=5000, eval_every=20, checkpoint_every=500),
)

# LRA: lra_benchmarks/listops/configs/base_listops_config.py (+ listops/train.py): 4 layers,
# emb/qkv 512, mlp 1024, 8 heads, CLS pooling, Adam(0.9, 0.98, eps 1e-9), weight decay 0.1,
# batch 32, 5,000 steps, 0.05 * linear_warmup(1000) * rsqrt_decay (a peak of 0.05 / sqrt(1000)
# from 0), evaluated every 50 steps.
TRANSFORMER = dict(  # the MLP's dropout is the model's (LRA's MlpBlock)
    model=dict(name="transformer", num_layers=4, emb_dim=512, num_heads=8, mlp_dim=1024,
               classifier_dim=1024, activation_dropout_rate=0.1),
    optim=lra_rsqrt_optim(1000),
    train=dict(num_steps=5000, eval_every=50, checkpoint_every=500),
)

# A small Luna on short generated sequences (5 to 128 tokens, so that shallow expressions are
# in the mix: the model then learns more than the operator-prior baseline), minutes on a CPU.
TINY = merge(LUNA, dict(
    data=dict(data_dir="data/listops_tiny", max_length=128, batch_size=64,
              generate_if_missing=True, generate_num_train=20_000, generate_min_length=5,
              generate_max_length=128),
    model=dict(proj_len=16, emb_dim=64, num_heads=4, mlp_dim=128, num_layers=2,
               tie_layer_weights=False, classifier_dim=128, dropout_rate=0.0,
               attention_dropout_rate=0.0),
    optim=dict(learning_rate=1e-3, warmup_steps=200),
    train=dict(num_steps=2000, eval_every=250, log_every=25, checkpoint_every=250),
))


RECIPES = {"luna": LUNA, "transformer": TRANSFORMER, "tiny": TINY}


def get_config(variant: str = "luna256"):
    return recipe("configs/listops.py", variant, data=DATA, recipes=RECIPES)
