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

import importlib.util
import os

from luna_lra.defaults import base_config, check_variant

# The data fields and the Luna recipe are shared with configs/pathfinder32.py (loaded by path:
# configs/ is not a package).
_spec = importlib.util.spec_from_file_location(
    "_luna_lra_pathfinder32_config",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "pathfinder32.py"))
_pf32 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pf32)
pathfinder_data, luna_pathfinder_recipe = _pf32.pathfinder_data, _pf32.luna_pathfinder_recipe

VARIANTS = ["luna16", "luna128", "luna256", "transformer", "tiny"]


def get_config(variant: str = "luna256"):
    check_variant(variant, VARIANTS, "configs/pathx.py")
    c = base_config()
    c.variant = variant
    c.name = "pathx"
    pathfinder_data(c, 128, "data/pathfinder128")
    # The official luna_lra_pf128 is luna_lra_pf32's model with 128 * 128 + 2 positions; no
    # command is published for it, so the pf32 optimisation recipe is kept.
    luna_pathfinder_recipe(c)

    if variant.startswith("luna"):
        c.model.proj_len = int(variant[4:])
    elif variant == "transformer":
        # LRA (lra_benchmarks/image/configs/pathfinder128/base_pathfinder128_config.py): 1 layer,
        # emb 32, 2 heads, mlp 32, dropout 0.1, attention dropout 0.1, mean pooling, learned
        # positions, batch 64, Adam(0.9, 0.98, eps 1e-9), no weight decay, gradient clipping 1.0,
        # lr 1e-3 * linear_warmup(2500) * cosine_decay over 200 epochs of 160k images.
        c.model.name = "transformer"
        c.model.positions = "sinusoidal"  # LRA: learn_pos_emb=False
        c.model.init = "official"
        c.model.embed_layer_norm = False
        c.model.emb_dim, c.model.num_heads, c.model.mlp_dim = 32, 2, 32
        c.model.classifier_dim = 32
        c.model.dropout_rate = 0.1
        c.model.attention_dropout_rate = 0.1
        c.data.batch_size = 64
        c.data.eval_batch_size = 64
        c.optim.schedule = "cosine"
        c.optim.learning_rate = 1e-3
        c.optim.warmup_steps = 2500
        c.optim.warmup_init_lr = 0.0
        c.optim.end_lr = 0.0
        c.optim.eps = 1e-9
        c.optim.grad_clip_norm = 1.0
        c.train.num_steps = 500_000
        c.train.eval_every = 2500
        c.train.checkpoint_every = 2500
    else:  # tiny: REDUCED -- 200 generated 128 x 128 images and a small Luna, minutes on CPU
        c.data.data_dir = "data/pathx_tiny"
        c.data.generate_if_missing = True
        c.data.generate_num_images = 200
        c.model.proj_len = 16
        c.model.emb_dim, c.model.num_heads, c.model.mlp_dim = 16, 2, 32
        c.model.classifier_dim = 32
        c.model.dropout_rate = 0.0
        c.model.attention_dropout_rate = 0.0
        c.data.batch_size = 8
        c.data.eval_batch_size = 20
        c.optim.warmup_steps = 20
        c.train.num_steps = 100
        c.train.eval_every = 50
        c.train.checkpoint_every = 50
        c.train.log_every = 10

    c.paper_accuracy, c.paper_source = 0.0, ""
    return c
