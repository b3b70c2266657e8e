"""Path-X (LRA): Pathfinder at 128 x 128 (hard, curv_contour_length_14), read as 16,384 pixel
tokens, binary classification.

Variants: luna16, luna128, luna256 (the Luna Pathfinder recipe at 16,384 tokens), transformer
(the LRA paper's pathfinder128 settings), tiny (a reduced CPU demo on generated data).
No published accuracy is listed: the LRA paper reports every model as failing Path-X, and the
Luna paper reports no Path-X figure.

Data: data.data_dir is the release's `pathfinder128` folder, or a folder made by
`python -m data_prep.pathfinder --out data/pathfinder128 --resolution 128 --level hard
--num_images 200000`.
"""

import os

from luna_lra import config as config_lib
from luna_lra.defaults import update

PATHFINDER32 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pathfinder32.py")
DATA = dict(data_dir="data/pathfinder128", resolution=128, max_length=128 * 128)

# LRA: lra_benchmarks/image/configs/pathfinder128/base_pathfinder128_config.py: 1 layer, emb
# 32, qkv 16, mlp 32, 2 heads, dropout 0.1 (attention 0.1), mean pooling, learned positions,
# batch 64, Adam(0.9, 0.98, eps 1e-9), no weight decay, gradient clipping 1.0, lr 1e-3 *
# linear_warmup(2500) * cosine_decay over 200 epochs of 2,500 steps, evaluated every 2,500.
TRANSFORMER = dict(
    data=dict(batch_size=64, eval_batch_size=64),
    model=dict(num_layers=1, num_heads=2, dropout_rate=0.1, activation_dropout_rate=0.1,
               positions="learned"),
    optim=dict(warmup_steps=2500, grad_clip_norm=1.0),
    train=dict(num_steps=500_000, eval_every=2500, checkpoint_every=2500),
)

TINY = dict(  # reduced: 200 generated 128 x 128 images and a small Luna, minutes on a CPU
    data=dict(data_dir="data/pathx_tiny", generate_num_images=200, batch_size=8,
              eval_batch_size=20),
    model=dict(emb_dim=16, num_heads=2, mlp_dim=32, classifier_dim=32),
    optim=dict(warmup_steps=20),
    train=dict(num_steps=100, eval_every=50, checkpoint_every=50, log_every=10),
)


def get_config(variant: str = "luna256"):
    """Pathfinder-32's variant at 128 pixels. The official luna_lra_pf128 is luna_lra_pf32's
    model with 128 * 128 + 2 positions; no command is published for it, so the pf32
    optimisation recipe is kept."""
    c = config_lib.load(f"{PATHFINDER32}:{variant}")
    c.unlock()
    c.name = "pathx"
    update(c, {"data": DATA})
    update(c, {"transformer": TRANSFORMER, "tiny": TINY}.get(variant, {}))
    return c
