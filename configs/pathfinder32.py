"""Pathfinder (LRA "Path"): are the two circles joined by a dashed path? 32 x 32 hard images
(curv_contour_length_14), read as 1,024 pixel tokens, binary classification.

Variants: luna16, luna128, luna256 (the official Luna recipe), transformer (the LRA paper's
softmax baseline), tiny (a reduced CPU demo on generated data).

Data: data.data_dir is the release's `pathfinder32` folder (with curv_baseline/,
curv_contour_length_9/, curv_contour_length_14/) or a folder made by
`python -m data_prep.pathfinder --out data/pathfinder32 --resolution 32 --level hard
--num_images 200000` (the release's size: 200 batches of 1,000).
"""

from luna_lra.defaults import merge, recipe

# 160,000 train images (LRA's 80%) in fairseq's epochs of 512 (the last batch short).
EPOCH = -(-160_000 // 512)  # 313 updates

# level: "easy" | "intermediate" | "hard" (curv_contour_length_14); zero_is_padding: True is
# LRA's quirk; skip_bad_images: True skips (counts, logs) unreadable images; decode_workers:
# PNG decoding threads (0 = up to 8); generate_*: the generator's run when data_dir holds none
# and generate_if_missing is set (workers 0 = all cores).
DATA = dict(task="pathfinder", data_dir="data/pathfinder32", resolution=32, level="hard",
            max_length=32 * 32, zero_is_padding=False, skip_bad_images=False,
            decode_workers=0, generate_if_missing=False, generate_num_images=200_000,
            generate_seed=0, generate_batch_size=1000, generate_workers=0,
            batch_size=512, eval_batch_size=512)

# fairseq-apollo at the 2021 release (6135e5b): examples/luna/README.lra.md (pf32) on
# luna_lra_pf32 (fairseq/models/luna_lra/model.py): 1 layer, 128/128, 4 heads, embedding
# LayerNorm (set in the architecture), no bert init, mean pooling ('mp', over <CLS> x </s>),
# classifier 256, dropout 0.2 (attention 0.1); Adam(0.9, 0.98) lr 1e-3, no weight decay,
# inverse_sqrt with 4000 warm-up updates from 1e-7, 62,500 updates, validation every epoch.
# Batch 512: the authors' correction of that README (d4a632a, April 2022; the release said
# 256), which makes 62,500 updates LRA's 200 epochs of 160,000 images.
LUNA = dict(
    model=dict(name="luna", num_layers=1, emb_dim=128, num_heads=4, mlp_dim=128,
               append_eos=True, pooling="mean", classifier_dim=256, dropout_rate=0.2,
               attention_dropout_rate=0.1),
    optim=dict(learning_rate=1e-3, weight_decay=0.0, warmup_steps=4000),
    train=dict(num_steps=62_500, eval_every=EPOCH, checkpoint_every=2 * EPOCH, log_every=100),
)

# LRA: lra_benchmarks/image/configs/pathfinder32/transformer_base.py on
# base_pathfinder32_config.py: 4 layers, emb 32, qkv 16, mlp 32, 4 heads, dropout 0.2
# (attention 0.1), mean pooling (over every position: 'mean_all'), classifier Dense(mlp_dim) +
# ReLU, fixed sinusoidal positions;
# Adam(0.9, 0.98, eps 1e-9), no weight decay, no clipping, batch 512, lr 1e-3 *
# linear_warmup(312) * cosine_decay over 200 epochs of 312 steps, evaluated every 312 steps.
TRANSFORMER = dict(  # the MLP's dropout is the model's (LRA's MlpBlock)
    model=dict(name="transformer", num_layers=4, emb_dim=32, qkv_dim=16, num_heads=4,
               mlp_dim=32, use_cls=False, pooling="mean_all", classifier_dim=32,
               dropout_rate=0.2, attention_dropout_rate=0.1, activation_dropout_rate=0.2),
    optim=dict(learning_rate=1e-3, schedule="cosine", warmup_steps=312, end_lr=0.0,
               weight_decay=0.0),
    train=dict(num_steps=62_400, eval_every=312, checkpoint_every=624, log_every=100),
)

# reduced: 3,000 generated images and a small Luna, minutes on 2 CPU cores
TINY = merge(LUNA, dict(
    data=dict(data_dir="data/pathfinder32_tiny", generate_if_missing=True,
              generate_num_images=3000, batch_size=32, eval_batch_size=100),
    model=dict(proj_len=16, emb_dim=32, num_heads=2, mlp_dim=64, classifier_dim=64,
               dropout_rate=0.0, attention_dropout_rate=0.0),
    optim=dict(warmup_steps=100),
    train=dict(num_steps=600, eval_every=200, checkpoint_every=200, log_every=25),
))


RECIPES = {"luna": LUNA, "transformer": TRANSFORMER, "tiny": TINY}


def get_config(variant: str = "luna256"):
    return recipe("configs/pathfinder32.py", variant, data=DATA, recipes=RECIPES,
                  name="pathfinder32")
