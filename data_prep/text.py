"""Prepare or check the IMDB reviews of the LRA Text task (read by luna_lra/data/text.py).

    python -m data_prep.text --out DIR                      # TFDS imdb_reviews, array_record
    python -m data_prep.text --source aclimdb --out DIR [--archive aclImdb_v1.tar.gz]
    python -m data_prep.text --check DIR                    # what is there: counts per split

--source tfds (default) runs tfds.builder('imdb_reviews', data_dir=DIR)
.download_and_prepare(file_format='array_record'): it downloads aclImdb_v1.tar.gz (needs a
network) and writes DIR/imdb_reviews/plain_text/1.0.0/. --source aclimdb unpacks the original
tarball (downloaded from Stanford unless --archive names a local copy) into DIR/aclImdb/, only
its {train,test}/{pos,neg}/*.txt reviews. Either is then used with
--config.data.data_dir=DIR (data.source='auto' finds it).
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from typing import Sequence

import numpy as np

from luna_lra.data import DataError, text
from luna_lra.data.download import download
from luna_lra.data.splits import label_counts
from luna_lra.data.tfds_source import prepare_tfds


def prepare_aclimdb(out: str, archive: str | None) -> None:
    if archive is None:
        archive = os.path.join(out, "aclImdb_v1.tar.gz")
        download(text.ACLIMDB_URL, archive)
    n = text.unpack_aclimdb(archive, out)
    print(f"unpacked {n} reviews into {os.path.join(out, text.ACLIMDB)}")


def check(data_dir: str, source: str) -> int:
    """Prints what is in data_dir; returns the exit status (1 when nothing usable is there)."""
    sources = [source] if source != "auto" else [
        s for s, present in (("aclimdb", text.find_aclimdb(data_dir) is not None),
                             ("tfds", text.tfds_prepared(data_dir))) if present]
    if not sources:
        print(f"no IMDB data in {data_dir}. Expected either\n"
              f"  {os.path.join(data_dir, text.ACLIMDB)}/{{train,test}}/{{pos,neg}}/*.txt  "
              f"(python -m data_prep.text --source aclimdb --out {data_dir})\n"
              f"  {os.path.join(data_dir, text.TFDS_NAME, text.TFDS_CONFIG)}/<version>/  "
              f"(python -m data_prep.text --out {data_dir})")
        return 1
    status = 0
    for src in sources:
        cfg = types.SimpleNamespace(data_dir=data_dir, source=src)
        try:
            _, raw = text.read_raw_splits(cfg)
        except DataError as e:
            print(f"[{src}] ERROR: {e}")
            status = 1
            continue
        for split, (texts, labels) in raw.items():
            lengths = np.asarray([len(t) for t in texts])
            print(f"[{src}] {split}: {len(texts)} reviews, labels (0 neg, 1 pos) "
                  f"{label_counts(labels, 2)}; bytes: median {int(np.median(lengths))}, max "
                  f"{int(lengths.max())}, {int((lengths > text.TASK.max_length).sum())} longer "
                  f"than {text.TASK.max_length}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.text", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help="folder to prepare the data in (created if needed)")
    what.add_argument("--check", metavar="DIR", help="report what DIR holds and exit")
    parser.add_argument("--source", choices=["auto", "tfds", "aclimdb"], default="auto",
                        help="with --out: tfds (the default for auto) or aclimdb; with --check: "
                             "which to read (auto: whatever is there)")
    parser.add_argument("--archive", help="a local aclImdb_v1.tar.gz (--source aclimdb)")
    args = parser.parse_args(argv)
    if args.check:
        return check(args.check, args.source)
    os.makedirs(args.out, exist_ok=True)
    try:
        if args.source == "aclimdb" or args.archive:
            prepare_aclimdb(args.out, args.archive)
        else:
            print(f"prepared {prepare_tfds(text.TFDS_NAME, args.out)}")
    except Exception as e:  # report, with where the files are expected, instead of a traceback
        print(f"error: {type(e).__name__}: {e}\n"
              f"The Text task reads either {os.path.join(args.out, 'aclImdb')}/{{train,test}}/"
              f"{{pos,neg}}/*.txt (unpack aclImdb_v1.tar.gz from {text.ACLIMDB_URL} there, or run "
              f"--source aclimdb --archive FILE) or TFDS's imdb_reviews in array_record format "
              f"under {args.out}.", file=sys.stderr)
        return 1
    return check(args.out, "auto")


if __name__ == "__main__":
    sys.exit(main())
