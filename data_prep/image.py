"""Prepare or check CIFAR-10 for the LRA Image task (read by luna_lra/data/image.py).

    python -m data_prep.image --out DIR [--archive cifar-10-python.tar.gz]  # python pickles
    python -m data_prep.image --source tfds --out DIR      # TFDS cifar10, array_record
    python -m data_prep.image --check DIR                  # LRA splits: counts and labels

--source pickle (the default) unpacks the python release (downloaded from
https://www.cs.toronto.edu/~kriz/ unless --archive names a local copy) into
DIR/cifar-10-batches-py/. --source tfds runs tfds.builder('cifar10', data_dir=DIR)
.download_and_prepare(file_format='array_record'), which needs a network and TensorFlow (TFDS
encodes the images as PNG with TensorFlow; reading them back does not need it). Either is then
used with --config.data.data_dir=DIR (data.source='auto' finds it).
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from typing import Sequence

import numpy as np

from luna_lra.data import DataError, image
from luna_lra.data.download import download
from luna_lra.data.splits import label_counts
from luna_lra.data.tfds_source import prepare_tfds


def prepare_pickle(out: str, archive: str | None) -> None:
    if archive is None:
        archive = os.path.join(out, "cifar-10-python.tar.gz")
        download(image.CIFAR_URL, archive)
    n = image.unpack_pickles(archive, out)
    print(f"unpacked {n} files into {os.path.join(out, image.PICKLE_DIR)}")


def check(data_dir: str, source: str) -> int:
    sources = [source] if source != "auto" else [
        s for s, present in (("pickle", image.find_pickle_dir(data_dir) is not None),
                             ("tfds", image.tfds_prepared(data_dir))) if present]
    if not sources:
        print(f"no CIFAR-10 in {data_dir}. Expected either\n"
              f"  {os.path.join(data_dir, image.PICKLE_DIR)}/{{data_batch_1..5,test_batch}}  "
              f"(python -m data_prep.image --out {data_dir})\n"
              f"  {os.path.join(data_dir, image.TFDS_NAME)}/<version>/  "
              f"(python -m data_prep.image --source tfds --out {data_dir})")
        return 1
    status = 0
    for src in sources:
        cfg = types.SimpleNamespace(data_dir=data_dir, source=src, max_length=image.NUM_PIXELS)
        try:
            splits = image.load_splits(cfg)
        except DataError as e:
            print(f"[{src}] ERROR: {e}")
            status = 1
            continue
        for split, arrays in splits.items():
            zero = 100.0 * float(np.mean(arrays["inputs"] == 0))
            print(f"[{src}] {split}: {len(arrays['targets'])} images, labels "
                  f"{label_counts(arrays['targets'], 10)}; {zero:.2f}% of grey pixels are 0")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.image", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help="folder to prepare the data in (created if needed)")
    what.add_argument("--check", metavar="DIR", help="report what DIR holds and exit")
    parser.add_argument("--source", choices=["auto", "pickle", "tfds"], default="auto",
                        help="with --out: pickle (the default for auto) or tfds; with --check: "
                             "which to read (auto: whatever is there)")
    parser.add_argument("--archive", help="a local cifar-10-python.tar.gz (--source pickle)")
    args = parser.parse_args(argv)
    if args.check:
        return check(args.check, args.source)
    os.makedirs(args.out, exist_ok=True)
    try:
        if args.source == "tfds":
            print(f"prepared {prepare_tfds(image.TFDS_NAME, args.out)}")
        else:
            prepare_pickle(args.out, args.archive)
    except Exception as e:
        print(f"error: {type(e).__name__}: {e}\nThe Image task reads either "
              f"{os.path.join(args.out, 'cifar-10-batches-py')}/{{data_batch_1..5,test_batch}} "
              f"(unpack cifar-10-python.tar.gz from {image.CIFAR_URL} there, or run --archive "
              f"FILE) or TFDS's cifar10 in array_record format under {args.out}.", file=sys.stderr)
        return 1
    return check(args.out, "auto")


if __name__ == "__main__":
    sys.exit(main())
