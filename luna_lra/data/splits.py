"""Small operations on a task's splits shared by the task modules and the data_prep commands:
the optional example limits of a quick run, and label counts for reports."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from luna_lra.data import Split

log = logging.getLogger(__name__)


def subsample(split: Split, n: int, seed: int, what: str) -> Split:
    """A seeded random subset of n examples, kept in their original order; n <= 0 or n >= the
    split's size keeps all. `what` names the split in the log, e.g. 'text train'."""
    total = len(split["targets"])
    if n <= 0 or n >= total:
        return split
    idx = np.sort(np.random.default_rng([seed, n, total]).permutation(total)[:n])
    log.info("%s: using a random subset of %d of %d examples", what, n, total)
    return {k: v[idx] for k, v in split.items()}


def split_limits(data_cfg: Any) -> dict[str, int]:
    """{'train': data.max_train_examples, 'val' and 'test': data.max_eval_examples} (0 = all)."""
    max_eval = int(getattr(data_cfg, "max_eval_examples", 0) or 0)
    return {"train": int(getattr(data_cfg, "max_train_examples", 0) or 0), "val": max_eval,
            "test": max_eval}


def label_counts(labels: np.ndarray, num_classes: int) -> str:
    """'0: 12, 1: 30' for labels 0..num_classes-1."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    return ", ".join(f"{i}: {n}" for i, n in enumerate(counts))
