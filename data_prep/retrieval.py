"""Unpack or check the AAN pairs of the LRA Retrieval task (read by luna_lra/data/retrieval.py).

    python -m data_prep.retrieval --archive lra_release.gz --out DIR
    python -m data_prep.retrieval --download --out DIR      # fetches lra_release.gz first
    python -m data_prep.retrieval --check DIR                # counts per split, label counts

(`python -m data_prep.fetch --tasks retrieval` does the same into data/retrieval/, checking the
counts of the release.)

The LRA release (lra_release.gz, a gzipped tar, from the long-range-arena README:
https://storage.googleapis.com/long-range-arena/lra_release.gz) holds
lra_release/tsv_data/new_aan_pairs.{train,eval,test}.tsv among the data of the other tasks. Only
those three files are unpacked, to DIR/tsv_data/; use --config.data.data_dir=DIR. A folder
where the whole release is already unpacked works as well (data_dir=.../lra_release or
.../tsv_data).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from luna_lra.data import DataError, retrieval
from luna_lra.data.download import download, extract_members
from luna_lra.data.fetch import LRA_RELEASE_URL, RELEASE_TASKS, member_target
from luna_lra.data.splits import label_counts


def unpack(archive: str, out: str) -> int:
    (unit,) = RELEASE_TASKS["retrieval"]

    def want(name: str) -> str | None:
        rel = member_target(unit, name)
        return f"tsv_data/{rel}" if rel else None

    print(f"reading {archive} (the whole archive is scanned; this takes a while)")
    n = extract_members(archive, out, want)
    print(f"unpacked {n} AAN files into {os.path.join(out, 'tsv_data')}")
    return n


def check(data_dir: str) -> int:
    folder = retrieval.find_tsv_dir(data_dir)
    if folder is None:
        print(f"no AAN data in {data_dir}: expected new_aan_pairs.{{train,eval,test}}.tsv in one "
              f"of\n  " + "\n  ".join(retrieval.candidate_dirs(data_dir)) +
              f"\nget them with: python -m data_prep.retrieval --archive lra_release.gz --out "
              f"{data_dir}")
        return 1
    status = 0
    for split, path in retrieval.split_paths(folder).items():
        try:
            _, _, targets, stats = retrieval.read_tsv(path, max_length=1)
        except DataError as e:
            print(f"{split}: ERROR: {e}")
            status = 1
            continue
        print(f"{split}: {len(targets)} pairs, labels {label_counts(targets, 2)}; longest text "
              f"{stats['longest']} bytes [{path}]")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.retrieval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help="folder to unpack into (created if needed)")
    what.add_argument("--check", metavar="DIR", help="report what DIR holds and exit")
    parser.add_argument("--archive", help="a local lra_release.gz")
    parser.add_argument("--download", action="store_true",
                        help=f"download {LRA_RELEASE_URL} into --out first (several GB)")
    args = parser.parse_args(argv)
    if args.check:
        return check(args.check)
    if not args.archive and not args.download:
        print(f"error: give --archive lra_release.gz (from {LRA_RELEASE_URL}) or --download.\n"
              f"The Retrieval task reads {os.path.join(args.out, 'tsv_data')}/"
              f"new_aan_pairs.{{train,eval,test}}.tsv", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    try:
        archive = args.archive or os.path.join(args.out, "lra_release.gz")
        if not args.archive:
            download(LRA_RELEASE_URL, archive)
        if unpack(archive, args.out) == 0:
            print(f"error: {archive} holds no tsv_data/new_aan_pairs.*.tsv", file=sys.stderr)
            return 1
    except Exception as e:
        print(f"error: {type(e).__name__}: {e}\nThe Retrieval task reads "
              f"{os.path.join(args.out, 'tsv_data')}/new_aan_pairs.{{train,eval,test}}.tsv from "
              f"the LRA release ({LRA_RELEASE_URL}).", file=sys.stderr)
        return 1
    return check(args.out)


if __name__ == "__main__":
    sys.exit(main())
