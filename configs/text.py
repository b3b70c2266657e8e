"""Text (LRA): byte-level IMDB sentiment, 2 classes, 4,000 bytes per review.

Variants: luna16, luna128, luna256 (the official Luna LRA recipe), transformer (the LRA
paper's softmax baseline), tiny (a CPU demo: short reviews, small model, few steps).
See luna_lra/data/text.py for the data (val == test by default, as LRA).
"""

from luna_lra.defaults import lra_rsqrt_optim, merge, recipe

# source: "auto" | "tfds" (imdb_reviews, array_record) | "aclimdb" (tarball). val_from_train:
# 0 validates on the test split, as LRA; k holds out k train reviews. split_seed seeds that
# hold-out and the subsets; max_*_examples: 0 = all, else a seeded random subset.
DATA = dict(task="text", data_dir="data/text", max_length=4000, batch_size=32,
            eval_batch_size=64, source="auto", val_from_train=0, split_seed=0,
            max_train_examples=0, max_eval_examples=0)

# fairseq-apollo at the 2021 release (6135e5b): examples/luna/README.lra.md (text) on
# luna_lra_imdb (fairseq/models/luna_lra/model.py): 4 layers, 256/1024, 4 heads, classifier
# 1024, dropout 0.3 (attention 0.3), bert init (apply_bert_init defaults to True there),
# Adam(0.9, 0.98) lr 5e-5, weight decay 1e-4, batch 32, inverse_sqrt with 8000 warm-up updates
# from 1e-7, 20,000 updates, validation every 100 (--save-interval-updates); <CLS> x </s>.
LUNA = dict(
    model=dict(name="luna", num_layers=4, emb_dim=256, num_heads=4, mlp_dim=1024,
               classifier_dim=1024, dropout_rate=0.3, attention_dropout_rate=0.3, init="bert",
               append_eos=True),
    optim=dict(learning_rate=5e-5, weight_decay=1e-4, warmup_steps=8000),
    train=dict(num_steps=20000, eval_every=100, checkpoint_every=500),
)

# LRA: lra_benchmarks/text_classification/configs/base_tc_config.py (+ train.py): 4 layers,
# emb/qkv 256, mlp 1024, 4 heads, CLS pooling, classifier Dense(mlp_dim) + ReLU, Adam(0.9,
# 0.98, eps 1e-9), weight decay 0.1, batch 32, 20,000 steps, 0.05 * linear_warmup(8000) *
# rsqrt_decay (a peak of 0.05 / sqrt(8000) from 0), evaluated every 100 steps. (That config's
# max_length is 1,000; the task's 4,000 bytes of the LRA paper are kept here.)
TRANSFORMER = dict(  # the MLP's dropout is the model's (LRA's MlpBlock)
    model=dict(name="transformer", num_layers=4, emb_dim=256, num_heads=4, mlp_dim=1024,
               classifier_dim=1024, activation_dropout_rate=0.1),
    optim=lra_rsqrt_optim(8000),
    train=dict(num_steps=20000, eval_every=100, checkpoint_every=500),
)

TINY = merge(LUNA, dict(  # reduced for two CPU cores: short reviews, small model, eval subsets
    data=dict(max_length=256, max_eval_examples=1000),
    model=dict(proj_len=16, num_layers=2, emb_dim=64, num_heads=4, mlp_dim=128,
               classifier_dim=128, dropout_rate=0.1, attention_dropout_rate=0.1,
               init="official"),
    optim=dict(learning_rate=1e-3, warmup_steps=100),
    train=dict(num_steps=600, eval_every=200, log_every=20, checkpoint_every=200),
))


RECIPES = {"luna": LUNA, "transformer": TRANSFORMER, "tiny": TINY}


def get_config(variant: str = "luna256"):
    return recipe("configs/text.py", variant, data=DATA, recipes=RECIPES)
