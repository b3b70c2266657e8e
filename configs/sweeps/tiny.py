"""A small CPU sweep (the demo and the tests' model): ListOps `tiny` x 2 learning rates x 2 seeds,
shortened to 300 steps each (a few minutes per run on two CPU cores; the first run also
generates the tiny ListOps set into data/listops_tiny).

    python -m luna_lra.sweep --sweep configs/sweeps/tiny.py --root runs/sweep_tiny
    python -m luna_lra.sweep --sweep configs/sweeps/tiny.py --root runs/sweep_tiny_ray \
        --backend ray --cpus-per-run 1      # two at a time on two cores, the same results
    python -m luna_lra.report --root runs/sweep_tiny --out runs/sweep_tiny/results
"""

from luna_lra.sweep import grid


def get_sweep():
    return grid(
        {"task": ["listops"], "variant": ["tiny"], "optim.learning_rate": [1e-3, 3e-3],
         "seed": [0, 1]},
        fixed={"train.num_steps": 300, "train.eval_every": 100, "train.checkpoint_every": 100,
               "train.results_dir": "", "train.progress_bar": False},
    )
