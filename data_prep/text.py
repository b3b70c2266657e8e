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
import posixpath
import re
import shutil
import sys
import tarfile
import types
import urllib.request
from typing import Callable, Sequence

import numpy as np

ACLIMDB_URL = "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"  # as TFDS
_REVIEW_MEMBER = re.compile(r"aclImdb/(train|test)/(pos|neg)/[^/]+\.txt")


# ----------------------------------------------------------------------------- shared helpers


def download(url: str, dest: str) -> str:
    """Downloads url to dest (via a temporary name) unless dest exists; returns dest."""
    if os.path.isfile(dest):
        print(f"using the existing {dest}")
        return dest
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    tmp = dest + ".part"
    print(f"downloading {url} -> {dest}")
    try:
        with urllib.request.urlopen(url) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OSError(f"could not download {url}: {e}") from None
    os.replace(tmp, dest)
    return dest


def extract_members(archive: str, out_dir: str, want: Callable[[str], str | None]) -> int:
    """Streams through a tar archive and writes each regular file whose name `want` maps to a
    relative path (None = skip) under out_dir. Refuses absolute paths and `..`. Returns the
    number of files written."""
    written = 0
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = member.name[2:] if member.name.startswith("./") else member.name
            name = posixpath.normpath(name)
            rel = want(name)
            if rel is None:
                continue
            if os.path.isabs(rel) or rel.split("/")[0] == ".." or "/../" in f"/{rel}/":
                raise ValueError(f"{archive}: refusing the unsafe member name {member.name!r}")
            dest = os.path.join(out_dir, *rel.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            src = tar.extractfile(member)
            with open(dest + ".part", "wb") as f:
                shutil.copyfileobj(src, f, length=1 << 20)
            os.replace(dest + ".part", dest)
            written += 1
    return written


def label_counts(labels: np.ndarray, num_classes: int) -> str:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    return ", ".join(f"{i}: {n}" for i, n in enumerate(counts))


# ----------------------------------------------------------------------------- IMDB


def prepare_tfds(out: str) -> None:
    import tensorflow_datasets as tfds

    builder = tfds.builder("imdb_reviews", data_dir=out)
    builder.download_and_prepare(file_format="array_record")
    print(f"prepared {builder.data_dir}")


def prepare_aclimdb(out: str, archive: str | None) -> None:
    if archive is None:
        archive = download(ACLIMDB_URL, os.path.join(out, "aclImdb_v1.tar.gz"))
    n = extract_members(archive, out, lambda name: name if _REVIEW_MEMBER.fullmatch(name) else None)
    print(f"unpacked {n} reviews into {os.path.join(out, 'aclImdb')}")


def check(data_dir: str, source: str) -> int:
    """Prints what is in data_dir; returns the exit status (1 when nothing usable is there)."""
    from luna_lra.data import DataError
    from luna_lra.data import text

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
            prepare_tfds(args.out)
    except Exception as e:  # report, with where the files are expected, instead of a traceback
        print(f"error: {type(e).__name__}: {e}\n"
              f"The Text task reads either {os.path.join(args.out, 'aclImdb')}/{{train,test}}/"
              f"{{pos,neg}}/*.txt (unpack aclImdb_v1.tar.gz from {ACLIMDB_URL} there, or run "
              f"--source aclimdb --archive FILE) or TFDS's imdb_reviews in array_record format "
              f"under {args.out}.", file=sys.stderr)
        return 1
    return check(args.out, "auto")


if __name__ == "__main__":
    sys.exit(main())
