"""Retrieval (LRA): byte-level AAN citation matching, two documents of 4,000 bytes, 2 classes.

Variants: luna16, luna128, luna256 (the official Luna LRA recipe), transformer (the LRA
paper's softmax baseline), tiny (a CPU demo: short documents, small model, few steps).
See luna_lra/data/retrieval.py for the data.
"""

from luna_lra.defaults import lra_rsqrt_optim, merge, recipe

# data_dir holds tsv_data/ (or lra_release/tsv_data/); split_seed seeds the subsets;
# max_*_examples: 0 = all, else a seeded random subset (quick runs).
DATA = dict(task="retrieval", data_dir="data/retrieval", max_length=4000, batch_size=32,
            eval_batch_size=64, split_seed=0, max_train_examples=0, max_eval_examples=0)

# fairseq-apollo at the 2021 release (6135e5b): examples/luna/README.lra.md (retrieval) on
# luna_lra_aan (fairseq/models/luna_lra/model.py): 4 layers, 128/512, 4 heads, dropout 0.1 (the
# model default), no bert init, classifier on the two documents (2 x 128 in) -> 512; Adam(0.9,
# 0.98) lr 5e-4, weight decay 1e-4, batch 32, inverse_sqrt with 8000 warm-up updates from 1e-7,
# 20,000 updates, validation every 2000 (--save-interval-updates); <CLS> x </s> per document.
LUNA = dict(
    model=dict(name="luna", num_layers=4, emb_dim=128, num_heads=4, mlp_dim=512, classifier_dim=512,
               append_eos=True),
    optim=dict(learning_rate=5e-4, weight_decay=1e-4, warmup_steps=8000),
    train=dict(num_steps=20000, eval_every=2000, checkpoint_every=1000),
)

# LRA: lra_benchmarks/matching/configs/base_match_config.py (+ matching/train.py, the
# shared-encoder TransformerDualEncoder): 4 layers, emb/qkv 128, mlp 512, 4 heads, Adam(0.9,
# 0.98, eps 1e-9), weight decay 0.1, batch 32, 5,000 steps, 0.05 * linear_warmup(8000) *
# rsqrt_decay (its peak 0.05 / sqrt(8000) is never reached in 5,000 steps), evaluated every
# 100 steps. train.py passes no `interaction`, so the head sees [u, v]; it is Dense(512) +
# ReLU, Dense(256) + ReLU, Dense(2) (classifier_halving). The dual encoder builds its shared
# TransformerEncoder with classifier=False: no CLS token, and pooling 'CLS' reads each
# document's first byte (pooling='first').
TRANSFORMER = dict(  # the MLP's dropout is the model's (LRA's MlpBlock)
    model=dict(name="transformer", num_layers=4, emb_dim=128, num_heads=4, mlp_dim=512,
               use_cls=False, pooling="first", classifier_dim=512, classifier_layers=2,
               classifier_halving=True, activation_dropout_rate=0.1),
    optim=lra_rsqrt_optim(8000),
    train=dict(num_steps=5000, eval_every=100, checkpoint_every=500),
)

TINY = merge(LUNA, dict(  # reduced for two CPU cores: short documents, small model, eval subsets
    data=dict(max_length=256, batch_size=16, max_eval_examples=1000),
    model=dict(proj_len=16, num_layers=2, emb_dim=64, num_heads=4, mlp_dim=128,
               classifier_dim=128),
    optim=dict(learning_rate=1e-3, warmup_steps=100),
    train=dict(num_steps=600, eval_every=200, log_every=20, checkpoint_every=200),
))


RECIPES = {"luna": LUNA, "transformer": TRANSFORMER, "tiny": TINY}


def get_config(variant: str = "luna256"):
    return recipe("configs/retrieval.py", variant, data=DATA, recipes=RECIPES)
