"""Command line for the ListOps generator (luna_lra/data/listops_generator.py) and a check of
a ListOps folder.

    python -m data_prep.listops --out DIR [--num_train N --num_val N --num_test N
        --min_length N --max_length N --max_depth N --max_args N --seed S]
    python -m data_prep.listops --check DIR
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Sequence

import numpy as np

from luna_lra.data import DataError
from luna_lra.data import listops as task
from luna_lra.data.listops_generator import (
    DEFAULT_MAX_ARGS, DEFAULT_MAX_DEPTH, DEFAULT_MAX_LENGTH, DEFAULT_MIN_LENGTH,
    DEFAULT_NUM_TEST, DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, DEFAULT_SEED, SPLITS, generate)

def check(data_dir: str) -> int:
    """Prints per split the example count, token lengths and labels (reading and validating
    every line); non-zero when a split is missing or malformed."""
    status = 0
    for split, path in task.split_paths(data_dir).items():
        if not os.path.isfile(path):
            print(f"{split}: missing {path} (make it with: python -m data_prep.listops --out "
                  f"{data_dir})")
            status = 1
            continue
        try:
            seqs, labels = task.read_tsv(path)
        except DataError as e:
            print(f"{split}: {e}")
            status = 1
            continue
        lengths = [len(s) for s in seqs]
        counts = ", ".join(f"{i}: {n}" for i, n in enumerate(
            np.bincount(labels, minlength=10)))
        print(f"{split} ({path}): {len(labels)} examples, {min(lengths, default=0)} to "
              f"{max(lengths, default=0)} tokens; labels {counts}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.listops",
        description="Generate LRA-style ListOps data: basic_{train,val,test}.tsv in --out.",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help="output folder (created if needed)")
    what.add_argument("--check", metavar="DIR",
                      help="report what DIR holds (examples, lengths, labels per split) and exit")
    parser.add_argument("--num_train", type=int, default=DEFAULT_NUM_TRAIN)
    parser.add_argument("--num_val", type=int, default=DEFAULT_NUM_VAL)
    parser.add_argument("--num_test", type=int, default=DEFAULT_NUM_TEST)
    parser.add_argument("--min_length", type=int, default=DEFAULT_MIN_LENGTH,
                        help="keep trees with length > min_length (default %(default)s)")
    parser.add_argument("--max_length", type=int, default=DEFAULT_MAX_LENGTH,
                        help="keep trees with length < max_length (default %(default)s)")
    parser.add_argument("--max_depth", type=int, default=DEFAULT_MAX_DEPTH)
    parser.add_argument("--max_args", type=int, default=DEFAULT_MAX_ARGS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.check:
        return check(args.check)
    t0 = time.perf_counter()
    try:
        paths = generate(
            args.out,
            num_train=args.num_train,
            num_val=args.num_val,
            num_test=args.num_test,
            min_length=args.min_length,
            max_length=args.max_length,
            max_depth=args.max_depth,
            max_args=args.max_args,
            seed=args.seed,
            show_progress=not args.no_progress,
        )
    except (ValueError, RuntimeError) as e:
        parser.exit(2, f"error: {e}\n")
    dt = time.perf_counter() - t0
    for split in SPLITS:
        print(f"wrote {paths[split]}")
    print(f"done in {dt:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
