"""The LRA tasks: what each task is, and how its examples are read into numpy arrays.

Every task module (listops, text, retrieval, image, pathfinder) exposes

    TASK: TaskInfo                       what the task is
    load_splits(data_cfg) -> Splits      {'train'|'val'|'test': {'inputs': int array [N, L],
                                          'targets': int32 [N]}}

and may expose `prepare_if_missing(data_cfg)` to generate synthetic data on first use.
Token id 0 is padding in every task unless the split carries an explicit boolean `mask`
array of the same shape as `inputs` (True = real token). Two-tower tasks (retrieval) carry
`inputs` and `inputs2`. Nothing here knows about Flax or devices: pipeline.py batches and
shards what these functions return.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from typing import Any

import numpy as np

Split = dict[str, np.ndarray]
Splits = dict[str, Split]

TASK_MODULES = {
    "listops": "luna_lra.data.listops",
    "text": "luna_lra.data.text",
    "retrieval": "luna_lra.data.retrieval",
    "image": "luna_lra.data.image",
    "pathfinder": "luna_lra.data.pathfinder",
}


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    name: str
    num_classes: int
    vocab_size: int  # ids in [0, vocab_size), 0 = padding
    max_length: int  # tokens per example (per tower), before any CLS token
    two_tower: bool = False


class DataError(ValueError):
    """Bad or missing input data; the message names the file, line or field."""


def fingerprint(split: Split) -> dict[str, Any]:
    """What a split's examples are, cheaply compared: their count and the sha256 of every
    array (name, dtype, shape, bytes). The same files anywhere give the same fingerprint."""
    h = hashlib.sha256()
    for key in sorted(split):
        arr = np.ascontiguousarray(split[key])
        h.update(f"{key}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(memoryview(arr).cast("B"))
    return {"examples": len(split["targets"]), "sha256": h.hexdigest()}


def get_task_module(name: str) -> Any:
    if name not in TASK_MODULES:
        raise ValueError(
            f"config field data.task: unknown task {name!r}; expected one of {sorted(TASK_MODULES)}"
        )
    return importlib.import_module(TASK_MODULES[name])
