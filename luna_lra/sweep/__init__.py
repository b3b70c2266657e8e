"""Sweeps: many training runs, one after another here or packed onto a Ray cluster.

    runs.py     what a sweep is: grid(), sweep files, checks, each run's trainer command
    driver.py   the run driver both backends share: status, planning, the retry loop
    local.py    one run after another on this machine
    ray_backend.py  runs packed onto a Ray cluster's accelerators
    state.py    the small files each run's state is kept in, and `--status`
    cli.py      `python -m luna_lra.sweep`
"""

from luna_lra.sweep.runs import SweepError, grid

__all__ = ["SweepError", "grid"]
