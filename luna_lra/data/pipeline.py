"""Batches from in-memory splits: deterministic by step, split across hosts, padded for eval.

The train batch at step s depends only on (seed, s): each epoch is a fresh permutation drawn
from (seed, epoch), and a resumed run asks for batch s again and gets the same examples. Every
host computes the same global batch indices and keeps only its own contiguous share, so with
`jax.make_array_from_process_local_data` the global batch is the same for any host count.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from luna_lra.data import DataError, Split

FEATURES = ("inputs", "mask", "inputs2", "mask2", "targets")


def with_masks(split: Split, pad_id: int = 0) -> Split:
    """Adds `mask` (and `mask2`) = token != pad_id where the task gave none."""
    out = dict(split)
    for key, mask_key in (("inputs", "mask"), ("inputs2", "mask2")):
        if key in out and mask_key not in out:
            out[mask_key] = out[key] != pad_id
    return out


def check_split(split: Split, name: str) -> int:
    """Number of examples; refuses splits whose arrays disagree."""
    if "inputs" not in split or "targets" not in split:
        raise DataError(f"split {name!r} needs 'inputs' and 'targets', got {sorted(split)}")
    n = len(split["targets"])
    for key, arr in split.items():
        if len(arr) != n:
            raise DataError(f"split {name!r}: {key} has {len(arr)} rows, targets has {n}")
    if n == 0:
        raise DataError(f"split {name!r} is empty")
    return n


def _host_share(indices: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
    per_host = len(indices) // process_count
    return indices[process_index * per_host:(process_index + 1) * per_host]


def _gather(split: Split, idx: np.ndarray) -> dict[str, np.ndarray]:
    batch = {}
    for key in FEATURES:
        if key in split:
            arr = split[key][idx]
            batch[key] = arr.astype(np.int32) if key in ("inputs", "inputs2", "targets") else arr
    return batch


class TrainBatches:
    """`batches(step)` -> this host's share of the global train batch for `step`."""

    def __init__(self, split: Split, batch_size: int, seed: int, process_index: int = 0,
                 process_count: int = 1):
        self.split = with_masks(split)
        self.num_examples = check_split(self.split, "train")
        if batch_size % process_count:
            raise ValueError(f"config field data.batch_size={batch_size} is not divisible by the "
                             f"{process_count} processes")
        if batch_size > self.num_examples:
            raise DataError(f"config field data.batch_size={batch_size} is larger than the train "
                            f"split ({self.num_examples} examples)")
        self.batch_size, self.seed = batch_size, seed
        self.process_index, self.process_count = process_index, process_count
        self.steps_per_epoch = self.num_examples // batch_size  # the remainder is dropped
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> np.ndarray:
        epoch, within = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
        return self._perm[within * self.batch_size:(within + 1) * self.batch_size]

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        idx = _host_share(self.indices(step), self.process_index, self.process_count)
        return _gather(self.split, idx)


def eval_batches(split: Split, batch_size: int, process_index: int = 0,
                 process_count: int = 1, name: str = "eval") -> Iterator[dict[str, np.ndarray]]:
    """Every example once, in order; the last batch is padded with copies of example 0 whose
    `weights` are 0, so every example counts exactly once and none is dropped."""
    split = with_masks(split)
    n = check_split(split, name)
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        weights = (idx < n).astype(np.float32)
        idx = np.where(idx < n, idx, 0)
        idx = _host_share(idx, process_index, process_count)
        batch = _gather(split, idx)
        batch["weights"] = _host_share(weights, process_index, process_count)
        yield batch
