"""TensorFlow Datasets as a source for the Text and Image tasks, beside their original files.

Reading goes through `tfds.data_source` (array_record, random access, no TensorFlow needed);
preparing goes through the dataset's builder (`download_and_prepare`), which downloads the
original files and may need TensorFlow to encode them (cifar10 does, for its PNGs). A task
with both a local tree and TFDS picks its source with `resolve_source`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from typing import Any, Callable, Sequence

import numpy as np

from luna_lra.data import DataError

_VERSION = re.compile(r"\d+\.\d+\.\d+")


def tfds_order(keys: Sequence[str | int], split: str) -> np.ndarray:
    """The permutation that puts examples with these TFDS keys in TFDS's record order.

    TFDS writes a split sorted by int(md5(split_name + str(key)).hexdigest(), 16)
    (tensorflow_datasets/core/hashing.py and shuffle.py); reading it back without shuffling
    gives that order, which is the order LRA's tfds.load(...) saw.
    """
    salt = hashlib.md5(split.encode("utf-8"))

    def hkey(key):
        md5 = salt.copy()
        md5.update(str(key).replace("\\", "/").encode("utf-8"))
        return int(md5.hexdigest(), 16)

    return np.asarray(sorted(range(len(keys)), key=lambda i: hkey(keys[i])), dtype=np.int64)


def tfds_prepared(data_dir: str, *name: str) -> bool:
    """Whether data_dir holds a prepared TFDS dataset (any version), e.g.
    tfds_prepared(d, 'imdb_reviews', 'plain_text') or tfds_prepared(d, 'cifar10').
    Only version folders count (TFDS prepares into a temporary folder, then renames it)."""
    base = os.path.join(data_dir, *name)
    return os.path.isdir(base) and any(
        _VERSION.fullmatch(v) and os.path.isfile(os.path.join(base, v, "dataset_info.json"))
        for v in os.listdir(base))


def read_all(source: Any) -> list[dict]:
    """Every record of a random-access data source, in order."""
    n = len(source)
    getitems = getattr(source, "__getitems__", None)
    out: list[dict] = []
    for start in range(0, n, 1024):
        keys = list(range(start, min(n, start + 1024)))
        if getitems is not None:
            try:
                out.extend(getitems(keys))
                continue
            except TypeError:  # tfds.testing.mock_data's stand-in has no batched reads
                getitems = None
        out.extend(source[k] for k in keys)
    return out


def open_tfds(name: str, split: str, data_dir: str, hint: str) -> Any:
    """tfds.data_source(name, split=split) from data_dir, never downloading."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(f"data.source='tfds' needs tensorflow-datasets ({e})") from None
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
    except Exception as e:  # tfds raises several types for "not there" / "wrong format"
        where = os.path.join(data_dir or "~/tensorflow_datasets", name)
        raise DataError(
            f"{where}: cannot open TFDS {name!r} split {split!r} as a random-access data source "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); prepare it in "
            f"array_record format with: {hint}"
        ) from None


def has_tensorflow() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def prepare_tfds(name: str, data_dir: str) -> str:
    """Downloads and prepares TFDS dataset `name` in array_record format under data_dir;
    returns the folder it wrote. Needs a network (and TensorFlow for some datasets)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    builder.download_and_prepare(file_format="array_record")
    return os.fspath(builder.data_dir)


def resolve_source(data_cfg: Any, sources: Sequence[str], local_found: Callable[[str], Any],
                   tfds_found: Callable[[str], bool], missing: Callable[[str], str]
                   ) -> tuple[str, str]:
    """(source, data_dir) with data.source='auto' resolved.

    sources: ('auto', 'tfds', <local>); 'auto' is the local tree if local_found(data_dir),
    else 'tfds' if tfds_found(data_dir), else a DataError with missing(data_dir).
    """
    data_dir = os.fspath(getattr(data_cfg, "data_dir", "") or "")
    source = getattr(data_cfg, "source", "auto")
    if source not in sources:
        raise DataError(f"config field data.source: {source!r}; expected one of {tuple(sources)}")
    if source != "auto":
        return source, data_dir
    local = next(s for s in sources if s not in ("auto", "tfds"))
    if data_dir and local_found(data_dir):
        return local, data_dir
    if data_dir and tfds_found(data_dir):
        return "tfds", data_dir
    raise DataError(missing(data_dir))
