"""Image (LRA): CIFAR-10 in grey levels, 1,024 pixel tokens, 10 classes.

Variants: luna16, luna128, luna256 (the official Luna LRA recipe), transformer (the LRA
paper's softmax baseline), tiny (a CPU demo: small model, few steps, eval subsets).
See luna_lra/data/image.py for the data (pixel 0 is a real token unless data.zero_is_padding).
"""

from luna_lra.defaults import merge, recipe

# 45,000 train images (LRA's split) in fairseq's epochs of 256 (the last batch short).
EPOCH = -(-45_000 // 256)  # 176 updates

# source: "auto" | "tfds" (cifar10, array_record) | "pickle" (python release);
# zero_is_padding: True is LRA's quirk (black pixels masked as padding); split_seed seeds the
# subsets; max_*_examples: 0 = all, else a seeded random subset.
DATA = dict(task="image", data_dir="data/image", max_length=1024, batch_size=256,
            eval_batch_size=256, source="auto", zero_is_padding=False, split_seed=0,
            max_train_examples=0, max_eval_examples=0)

# fairseq-apollo at the 2021 release (6135e5b): examples/luna/README.lra.md (cifar10) on
# luna_lra_cifar10 (fairseq/models/luna_lra/model.py): 1 layer, 64/128, 8 heads, classifier
# 128, dropout 0.3 (attention 0.1), no bert init; Adam(0.9, 0.98) lr 0.005, no weight decay,
# batch 256, inverse_sqrt with 4000 warm-up updates from 1e-7, 35,000 updates, validation every
# epoch. (Commit 3bf8d4d, "cifar-transforer", Feb 2022, after the paper, made the shared
# architecture 3 layers, 256/512, classifier 512.) Its max_positions of 1024 cuts the appended
# eos and the last pixel; here every pixel is seen and no eos is added.
LUNA = dict(
    model=dict(name="luna", num_layers=1, emb_dim=64, num_heads=8, mlp_dim=128, classifier_dim=128,
               dropout_rate=0.3, attention_dropout_rate=0.1),
    optim=dict(learning_rate=0.005, weight_decay=0.0, warmup_steps=4000),
    train=dict(num_steps=35000, eval_every=EPOCH, checkpoint_every=5 * EPOCH),
)

# LRA: lra_benchmarks/image/configs/cifar10/transformer_base.py on base_cifar10_config.py
# (+ image/train.py): 1 layer, emb 128, qkv 64, mlp 128, 8 heads, dropout 0.3 (attention
# 0.2), CLS pooling, classifier Dense(mlp_dim) + ReLU, learned positions; Adam(0.9, 0.98, eps
# 1e-9), no weight decay, no clipping, batch 256, 35,000 steps, lr 0.0005 *
# linear_warmup(175) * cosine_decay (one cycle of 35,000 steps after the warm-up; here it ends
# at step 35,000), evaluated every 175 steps.
TRANSFORMER = dict(  # the MLP's dropout is the model's (LRA's MlpBlock)
    model=dict(name="transformer", num_layers=1, emb_dim=128, qkv_dim=64, num_heads=8,
               mlp_dim=128, classifier_dim=128, dropout_rate=0.3, attention_dropout_rate=0.2,
               activation_dropout_rate=0.3, positions="learned"),
    optim=dict(learning_rate=0.0005, schedule="cosine", warmup_steps=175, end_lr=0.0,
               weight_decay=0.0),
    train=dict(num_steps=35000, eval_every=175, checkpoint_every=875),
)

TINY = merge(LUNA, dict(  # reduced for two CPU cores: small model, few steps, eval subsets
    data=dict(batch_size=32, eval_batch_size=128, max_eval_examples=1000),
    model=dict(proj_len=16, num_layers=1, emb_dim=32, num_heads=4, mlp_dim=64,
               classifier_dim=64, dropout_rate=0.1, attention_dropout_rate=0.1),
    optim=dict(learning_rate=2e-3, warmup_steps=100),
    train=dict(num_steps=500, eval_every=250, log_every=20, checkpoint_every=250),
))


RECIPES = {"luna": LUNA, "transformer": TRANSFORMER, "tiny": TINY}


def get_config(variant: str = "luna256"):
    return recipe("configs/image.py", variant, data=DATA, recipes=RECIPES)
