"""The LRA table: every task x {Transformer, Luna-16, Luna-128, Luna-256} x 3 seeds, each with
its config's own recipe (the official Luna / LRA hyperparameters; see configs/<task>.py).

    python -m luna_lra.sweep --sweep configs/sweeps/lra_table.py --root runs/lra
    python -m luna_lra.sweep --sweep configs/sweeps/lra_table.py --root runs/lra --only listops-
    python -m luna_lra.sweep --sweep configs/sweeps/lra_table.py --root runs/lra --backend ray \
        --gpus-per-run 1                 # 8 GPUs: 8 runs at once
    python -m luna_lra.sweep --sweep configs/sweeps/lra_table.py --root runs/lra --status
    python -m luna_lra.sweep --sweep configs/sweeps/lra_table.py --root /mnt/shared/lra \
        --print-commands tpu --tpu-name my-v4-32 --zone us-central2-b
    python -m luna_lra.report --root runs/lra

Run names: <task config>-<variant>-seed<n>, e.g. "listops-luna256-seed0". Point each task at its
data with the config's data.data_dir default or `fixed` below.
"""

from luna_lra.sweep import grid

TASKS = ["listops", "text", "retrieval", "image", "pathfinder32"]
VARIANTS = ["transformer", "luna16", "luna128", "luna256"]
SEEDS = [0, 1, 2]
# Trainer processes (one per host) of each Path-X run under --backend ray. 1: a run holds
# --gpus-per-run / --tpu-chips-per-run on one host. On a TPU pod slice a multi-host run takes
# the whole slice, so set this to the slice's host count (4 on a v4-32) to train Path-X on it.
PATHX_HOSTS = 1


def get_sweep():
    runs = grid({"task": TASKS, "variant": VARIANTS, "seed": SEEDS})
    # Path-X (16K tokens): Luna only. The LRA paper's Transformer failed on it (FAIL in the
    # table), and its quadratic attention does not fit 16K tokens in accelerator memory.
    runs += grid({"task": ["pathx"], "variant": VARIANTS[1:], "seed": SEEDS}, hosts=PATHX_HOSTS)
    return runs
