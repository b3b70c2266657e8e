"""Text (LRA): IMDB movie-review sentiment at the byte level, 2 classes.

Tokenisation (as LRA's `tfds.deprecated.text.ByteTextEncoder`, which LRA's
text_classification/input_pipeline.py uses): the review's UTF-8 bytes, id = byte + 1, so ids
are 1..256 and id 0 is padding (vocabulary 257). Each review is cut to its first
`data.max_length` bytes (default 4,000; the model adds its CLS token on top) and zero-padded.
Labels: neg = 0, pos = 1.

Splits: IMDB has 25,000 train and 25,000 test reviews and no validation split. LRA validates on
the test split (`valid_raw = data['test']`), and so do we by default: `val` and `test` are the
same 25,000 reviews. With `data.val_from_train = k > 0`, k train reviews (a fixed slice of a
permutation seeded by `data.split_seed`) are held out as `val` instead and train keeps the rest.

Sources (`data.source`):
  'tfds'     `tfds.data_source('imdb_reviews', data_dir=data.data_dir)`, i.e. TFDS's
             imdb_reviews/plain_text prepared in array_record format (no TensorFlow needed to
             read it). Prepare with `python -m data_prep.text --out DIR` (or
             `python -m data_prep.fetch --tasks text`, into data/text).
  'aclimdb'  the unpacked original tarball (aclImdb_v1.tar.gz): `aclImdb/{train,test}/{pos,neg}/
             *.txt` under data.data_dir (or data.data_dir pointing at `aclImdb/` itself). Each
             file is read as bytes and stripped of leading/trailing ASCII whitespace, as TFDS's
             imdb_reviews builder does, and the reviews are put in TFDS's record order (sorted
             by md5(split name + archive path), tensorflow_datasets/core/hashing.py), so both
             sources give the same arrays.
  'auto'     (default) 'aclimdb' if the aclImdb tree is there, else 'tfds' if TFDS's prepared
             imdb_reviews is there, else an error saying where the files are expected.

Nothing is dropped silently: other entries in the pos/neg folders (not `*.txt`, or hidden, which
TFDS ignores too) are skipped, counted and logged; empty reviews and reviews that are not valid
UTF-8 are kept (their bytes are used as they are) and counted in the log, as are truncated
reviews. (The tarball's train/unsup/ reviews have no label and are not read, as in LRA.)

When val is the test split, both entries hold the very same arrays (also after
max_eval_examples), so a caller can tell with `splits['val']['inputs'] is
splits['test']['inputs']`.

Optional data_cfg fields (defaults in DEFAULTS): source, val_from_train, split_seed,
max_train_examples / max_eval_examples (0 = all; otherwise a seeded random subset, for quick
CPU runs).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Iterable, Sequence

import numpy as np

from luna_lra.data import DataError, Split, Splits, TaskInfo
from luna_lra.data.download import extract_members
from luna_lra.data.splits import subsample
from luna_lra.data.tfds_source import (open_tfds, read_all, resolve_source as _resolve,
                                       tfds_order, tfds_prepared as _tfds_prepared)

TASK = TaskInfo(name="text", num_classes=2, vocab_size=257, max_length=4000)

PAD_ID = 0
ID_DTYPE = np.uint16  # ids 0..256; the pipeline casts batches to int32
TFDS_NAME = "imdb_reviews"
TFDS_CONFIG = "plain_text"
ACLIMDB = "aclImdb"
LABELS = ("neg", "pos")  # label i is LABELS[i], as TFDS's ClassLabel(names=["neg", "pos"])
RAW_SPLITS = ("train", "test")
SOURCES = ("auto", "tfds", "aclimdb")
PREPARE_HINT = "python -m data_prep.text --out DIR"
ACLIMDB_URL = "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"  # as TFDS
_REVIEW_MEMBER = re.compile(r"aclImdb/(train|test)/(pos|neg)/[^/]+\.txt")

DEFAULTS: dict[str, Any] = {
    "source": "auto",
    "val_from_train": 0,
    "split_seed": 0,
    "max_train_examples": 0,
    "max_eval_examples": 0,
}

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- tokenisation


def encode(text: bytes | str, max_length: int) -> np.ndarray:
    """Byte ids (1-D uint16) of one text: UTF-8 bytes + 1, cut to max_length.

    encode("Hi é", 10) -> [73, 106, 33, 196, 170] ('é' is the two bytes 0xC3 0xA9).
    """
    if isinstance(text, str):
        text = text.encode("utf-8")
    return np.frombuffer(text[:max_length], dtype=np.uint8).astype(ID_DTYPE) + 1


def encode_batch(texts: Sequence[bytes | str], max_length: int) -> tuple[np.ndarray, int]:
    """(uint16 [N, max_length] zero-padded ids, number of texts longer than max_length)."""
    out = np.zeros((len(texts), max_length), dtype=ID_DTYPE)
    truncated = 0
    for i, text in enumerate(texts):
        if isinstance(text, str):
            text = text.encode("utf-8")
        truncated += len(text) > max_length
        ids = encode(text, max_length)
        out[i, : len(ids)] = ids
    return out, truncated


# ----------------------------------------------------------------------------- aclImdb files


def find_aclimdb(data_dir: str) -> str | None:
    """The aclImdb folder under data_dir (or data_dir itself), if it has train/ or test/."""
    for root in (os.path.join(data_dir, ACLIMDB), data_dir):
        if any(os.path.isdir(os.path.join(root, s, lab)) for s in RAW_SPLITS for lab in LABELS):
            return root
    return None


def unpack_aclimdb(archive: str, out: str, progress: bool = False) -> int:
    """Writes the labelled reviews of aclImdb_v1.tar.gz, aclImdb/{train,test}/{pos,neg}/*.txt,
    under out (train/unsup/ and the vocabulary files are left out); returns how many."""
    return extract_members(archive, out, lambda n: n if _REVIEW_MEMBER.fullmatch(n) else None,
                           progress)


def read_aclimdb_split(root: str, split: str) -> tuple[list[bytes], np.ndarray]:
    """(review bytes, int32 labels) of aclImdb/<split>/{neg,pos}/*.txt, in TFDS's order."""
    texts: list[bytes] = []
    labels: list[int] = []
    keys: list[str] = []
    skipped: list[str] = []
    for label, name in enumerate(LABELS):
        folder = os.path.join(root, split, name)
        if not os.path.isdir(folder):
            raise DataError(
                f"{folder}: folder not found; expected the original IMDB layout "
                f"aclImdb/{{train,test}}/{{pos,neg}}/*.txt (from aclImdb_v1.tar.gz; unpack it "
                f"with: python -m data_prep.text --source aclimdb --out DIR)"
            )
        for entry in sorted(os.listdir(folder)):
            path = os.path.join(folder, entry)
            if entry.startswith(".") or not entry.endswith(".txt") or not os.path.isfile(path):
                skipped.append(path)  # TFDS's archive reader ignores hidden files as well
                continue
            try:
                with open(path, "rb") as f:
                    texts.append(f.read().strip())
            except OSError as e:
                raise DataError(f"{path}: cannot read ({e})") from None
            labels.append(label)
            keys.append(f"{ACLIMDB}/{split}/{name}/{entry}")  # the tarball member name
    if skipped:
        log.warning("text %s: skipped %d entries that are not review files (*.txt, not hidden): "
                "%s%s", split,
                    len(skipped), ", ".join(skipped[:5]), " ..." if len(skipped) > 5 else "")
    if not texts:
        raise DataError(f"{os.path.join(root, split)}: no *.txt reviews in pos/ or neg/")
    order = tfds_order(keys, split)
    return [texts[i] for i in order], np.asarray(labels, dtype=np.int32)[order]


# ----------------------------------------------------------------------------- TFDS


def tfds_prepared(data_dir: str) -> bool:
    """Whether data_dir holds a prepared imdb_reviews (any version)."""
    return _tfds_prepared(data_dir, TFDS_NAME, TFDS_CONFIG)


def read_tfds_split(data_dir: str, split: str) -> tuple[list[bytes], np.ndarray]:
    records = read_all(open_tfds(TFDS_NAME, split, data_dir, PREPARE_HINT))
    where = f"TFDS {TFDS_NAME} {split} in {data_dir or '~/tensorflow_datasets'}"
    texts, labels = [], []
    for i, rec in enumerate(records):
        try:
            text, label = rec["text"], int(rec["label"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}, record {i}: expected features 'text' and 'label', got "
                            f"{sorted(rec) if isinstance(rec, dict) else type(rec)}") from None
        if label not in (0, 1):
            raise DataError(f"{where}, record {i}: label {label}; expected 0 (neg) or 1 (pos)")
        texts.append(text.encode("utf-8") if isinstance(text, str) else bytes(text))
        labels.append(label)
    if not texts:
        raise DataError(f"{where}: the split is empty")
    return texts, np.asarray(labels, dtype=np.int32)


# ----------------------------------------------------------------------------- splits


def _field(data_cfg: Any, name: str) -> Any:
    return getattr(data_cfg, name, DEFAULTS[name])


def resolve_source(data_cfg: Any) -> tuple[str, str]:
    """(source, data_dir) with 'auto' resolved."""
    return _resolve(data_cfg, SOURCES, find_aclimdb, tfds_prepared, _missing_message)


def _missing_message(data_dir: str) -> str:
    return (
        f"config field data.data_dir: no IMDB data in {data_dir or '(unset)'!s}; expected either "
        f"the unpacked original {os.path.join(data_dir, ACLIMDB)}/{{train,test}}/{{pos,neg}}/*.txt"
        f" (data.source='aclimdb') or TFDS's prepared "
        f"{os.path.join(data_dir, TFDS_NAME, TFDS_CONFIG)}/<version>/ in array_record format "
        f"(data.source='tfds'). Make one with: {PREPARE_HINT} (TFDS, needs a network) or "
        f"python -m data_prep.text --source aclimdb --out DIR [--archive aclImdb_v1.tar.gz]"
    )


def read_raw_splits(data_cfg: Any) -> tuple[str, dict[str, tuple[list[bytes], np.ndarray]]]:
    """(source, {'train'|'test': (review bytes, labels)}) before tokenisation."""
    source, data_dir = resolve_source(data_cfg)
    if source == "aclimdb":
        root = find_aclimdb(data_dir) if data_dir else None
        if root is None:
            raise DataError(
                f"{os.path.join(data_dir, ACLIMDB)}: folder not found; expected the unpacked "
                f"aclImdb/{{train,test}}/{{pos,neg}}/*.txt under data.data_dir={data_dir!r}")
        return source, {s: read_aclimdb_split(root, s) for s in RAW_SPLITS}
    return source, {s: read_tfds_split(data_dir, s) for s in RAW_SPLITS}


def _log_split(name: str, texts: Iterable[bytes], labels: np.ndarray, truncated: int,
               max_length: int, source: str) -> None:
    texts = list(texts)
    lengths = [len(t) for t in texts]
    empty = sum(1 for n in lengths if n == 0)
    bad_utf8 = 0
    for t in texts:
        try:
            t.decode("utf-8")
        except UnicodeDecodeError:
            bad_utf8 += 1
    counts = np.bincount(labels, minlength=2)
    log.info("text %s: %d reviews (neg %d, pos %d) from %s, longest %d bytes, %d truncated to "
             "%d", name, len(texts), counts[0], counts[1], source, max(lengths, default=0),
             truncated, max_length)
    if empty:
        log.warning("text %s: %d empty reviews kept (all padding)", name, empty)
    if bad_utf8:
        log.warning("text %s: %d reviews are not valid UTF-8; kept, their bytes used as they are",
                    name, bad_utf8)


def load_splits(data_cfg: Any) -> Splits:
    """{'train'|'val'|'test': {'inputs': uint16 [N, max_length], 'targets': int32 [N]}}.

    Reads data_cfg.data_dir, max_length (default 4000) and the optional fields in DEFAULTS.
    """
    max_length = int(getattr(data_cfg, "max_length", 0) or TASK.max_length)
    if max_length < 1:
        raise DataError(f"config field data.max_length: {max_length}; expected >= 1")
    val_from_train = int(_field(data_cfg, "val_from_train"))
    seed = int(_field(data_cfg, "split_seed"))
    source, raw = read_raw_splits(data_cfg)

    encoded: dict[str, Split] = {}
    for name, (texts, labels) in raw.items():
        inputs, truncated = encode_batch(texts, max_length)
        _log_split(name, texts, labels, truncated, max_length, source)
        encoded[name] = {"inputs": inputs, "targets": labels}

    train, test = encoded["train"], encoded["test"]
    n_train = len(train["targets"])
    if val_from_train < 0 or val_from_train >= n_train:
        raise DataError(f"config field data.val_from_train: {val_from_train}; expected 0 (validate "
                        f"on the test split, as LRA) or 1..{n_train - 1}")
    max_train = int(_field(data_cfg, "max_train_examples"))
    max_eval = int(_field(data_cfg, "max_eval_examples"))
    test = subsample(test, max_eval, seed, "text test")
    if val_from_train:
        perm = np.random.default_rng(seed).permutation(n_train)
        val_idx, train_idx = np.sort(perm[:val_from_train]), np.sort(perm[val_from_train:])
        val = subsample({k: v[val_idx] for k, v in train.items()}, max_eval, seed,
                        "text val")
        train = {k: v[train_idx] for k, v in train.items()}
        log.info("text: held out %d train reviews as val (data.val_from_train, split_seed %d); "
                 "%d left for training", val_from_train, seed, len(train_idx))
    else:
        val = dict(test)  # LRA: the test split doubles as validation (the same arrays)
        log.info("text: val is the test split (as LRA); set data.val_from_train to hold out "
                 "train reviews instead")
    return {"train": subsample(train, max_train, seed, "text train"), "val": val,
            "test": test}
