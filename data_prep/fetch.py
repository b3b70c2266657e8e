"""Fetch the data of every LRA task into the folders the configs read (luna_lra/data/fetch.py).

    python -m data_prep.fetch                          # all six tasks into data/
    python -m data_prep.fetch --tasks listops,retrieval --archive ~/lra_release.gz
    python -m data_prep.fetch --out /big/disk/data     # then --config.data.data_dir=...

ListOps, Retrieval, Pathfinder (32 x 32) and Path-X (128 x 128) come from the LRA release,
lra_release.gz (about 7 GB), downloaded to <out>/lra_release.gz with a progress bar, resumed
after an interruption and retried; only the files those tasks read are unpacked, checked and
moved into place: <out>/listops/listops-1000/, <out>/retrieval/tsv_data/,
<out>/pathfinder32/<level>/, <out>/pathfinder128/<level>/ (pathfinder64 and pathfinder256 on
request). Text and Image are prepared through TFDS in <out>/text and <out>/image where TFDS
can (CIFAR-10 needs TensorFlow); otherwise the line names the offline command. What was
fetched is recorded in <out>/fetch_manifest.json; a second run finds everything in place and
does nothing. The exit status is 0 when every task asked for is ready.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from luna_lra.data import fetch


def _tasks(value: str) -> list[str]:
    tasks = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in fetch.TASKS]
    if unknown or not tasks:
        raise argparse.ArgumentTypeError(
            f"unknown task {', '.join(unknown) or repr(value)}; expected a comma-separated list "
            f"of {', '.join(fetch.TASKS)}")
    return list(dict.fromkeys(tasks))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.fetch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data",
                        help="where the configs look for the data (default: data)")
    parser.add_argument("--tasks", type=_tasks, default=list(fetch.DEFAULT_TASKS),
                        help=f"comma-separated, of {', '.join(fetch.TASKS)} "
                             f"(default: {','.join(fetch.DEFAULT_TASKS)})")
    parser.add_argument("--url", default=fetch.LRA_RELEASE_URL,
                        help="where to download the LRA release from (default: %(default)s)")
    parser.add_argument("--archive", help="an lra_release.gz already on disk (no download)")
    parser.add_argument("--sha256", help="the archive's expected sha256 (hex)")
    parser.add_argument("--retries", type=int, default=5,
                        help="failed download attempts in a row before giving up (default 5)")
    parser.add_argument("--retry_wait", type=float, default=2.0,
                        help="seconds before the first retry, doubling after each (default 2)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    outcomes = fetch.fetch(args.out, args.tasks, url=args.url, archive=args.archive,
                           sha256=args.sha256, retries=args.retries,
                           retry_wait=args.retry_wait, progress=not args.no_progress)
    for outcome in outcomes:
        print(outcome.message, file=sys.stdout if outcome.ready else sys.stderr)
    return 0 if all(o.ready for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
