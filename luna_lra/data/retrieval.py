"""Retrieval (LRA): ACL Anthology Network (AAN) citation matching, two documents per example,
2 classes, byte level, two towers.

Files (the LRA release, lra_release.gz): `new_aan_pairs.train.tsv`, `new_aan_pairs.eval.tsv`
(our 'val') and `new_aan_pairs.test.tsv`. data.data_dir may point at the folder holding them
(`tsv_data/`), at the folder above it, or at the unpacked `lra_release/` (also the doubly
nested `lra_release/lra_release/tsv_data/` that `tar xvf lra_release.gz` gives). Put them
there with `python -m data_prep.fetch --tasks retrieval` (data/retrieval/tsv_data/, the
counts checked) or `python -m data_prep.retrieval --archive lra_release.gz --out DIR`.

Each line: `label<TAB>id1<TAB>id2<TAB>text1<TAB>text2`, no header, no quoting (LRA reads the
files with tf.data.experimental.make_csv_dataset(field_delim='\\t', use_quote_delim=False,
header=False) and column defaults float32, string x 4; lra_benchmarks/matching/input_pipeline.py).
Lines end in LF (a CR before it is dropped); a final empty line is ignored. A line with another
number of fields, a blank line in the middle, or a label other than 0 or 1 is an error naming the
file and the 1-based line number.

Labels: LRA parses the label column as a float and casts it to int32. We accept exactly `0` or
`1`, optionally followed by `.` and zeros (`0.0`, `1.0`, ...), and reject anything else.

Tokenisation (LRA, char/byte tokenizer): each text field's raw bytes, exactly as they are in
the file (no unescaping, no decoding), are cut to their first 10,000 bytes (LRA slices the
bytes of the tf.string: `s.numpy()[:10000]`), byte-encoded as id = byte + 1 (ByteTextEncoder,
0 = padding, vocabulary 257), then cut to data.max_length tokens (default 4,000) and
zero-padded. As every byte is one token, this is the first min(10,000, max_length) bytes.
`inputs` is text1 and `inputs2` is text2.

Optional data_cfg fields: max_train_examples / max_eval_examples (0 = all; otherwise a seeded
random subset, for quick CPU runs), split_seed.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import numpy as np

from luna_lra.data import DataError, Splits, TaskInfo
from luna_lra.data.splits import split_limits, subsample

TASK = TaskInfo(name="retrieval", num_classes=2, vocab_size=257, max_length=4000,
                two_tower=True)

PAD_ID = 0
ID_DTYPE = np.uint16  # ids 0..256; the pipeline casts batches to int32
LRA_CHAR_LIMIT = 10_000  # LRA keeps the first 10,000 bytes of each text before encoding
NUM_FIELDS = 5
FIELDS = "label<TAB>id1<TAB>id2<TAB>text1<TAB>text2"
FILE_SPLITS = {"train": "train", "val": "eval", "test": "test"}
FILE_PATTERN = "new_aan_pairs.{}.tsv"
PREPARE_HINT = ("python -m data_prep.fetch --tasks retrieval (into data/retrieval), or "
                "python -m data_prep.retrieval --archive lra_release.gz --out DIR")
_LABEL_RE = re.compile(rb"([01])(\.0*)?")

DEFAULTS: dict[str, Any] = {"max_train_examples": 0, "max_eval_examples": 0, "split_seed": 0}

log = logging.getLogger(__name__)


def encode(text: bytes, max_length: int) -> np.ndarray:
    """Ids (1-D uint16) of one text field: its first min(10,000, max_length) bytes, + 1."""
    return np.frombuffer(text[:LRA_CHAR_LIMIT][:max_length], dtype=np.uint8).astype(ID_DTYPE) + 1


def parse_label(field: bytes, where: str) -> int:
    m = _LABEL_RE.fullmatch(field)
    if m is None:
        shown = field.decode("utf-8", errors="backslashreplace")
        raise DataError(f"{where}: bad label {shown[:40]!r}; expected 0 or 1 (or 0.0 / 1.0)")
    return int(m.group(1))


def read_tsv(path: str, max_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(inputs uint16 [N, max_length], inputs2 uint16 [N, max_length], targets int32 [N], stats)
    of one AAN file; stats counts truncated texts and the longest text (in bytes)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; expected AAN pairs ({FIELDS} lines) from the "
                        f"LRA release; put them there with: {PREPARE_HINT}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e})") from None
    with f:
        # Count the lines first so the two [N, max_length] arrays are allocated once.
        capacity = 1 + sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))
        f.seek(0)
        inputs = np.zeros((capacity, max_length), dtype=ID_DTYPE)
        inputs2 = np.zeros((capacity, max_length), dtype=ID_DTYPE)
        labels: list[int] = []
        stats = {"truncated": 0, "longest": 0}
        limit = min(LRA_CHAR_LIMIT, max_length)
        pending_blank = 0
        for lineno, line in enumerate(f, start=1):
            line = line[:-1] if line.endswith(b"\n") else line
            line = line[:-1] if line.endswith(b"\r") else line
            if not line:
                pending_blank = pending_blank or lineno
                continue
            if pending_blank:
                raise DataError(f"{path}, line {pending_blank}: blank line; expected {NUM_FIELDS} "
                                f"tab-separated fields ({FIELDS})")
            fields = line.split(b"\t")
            if len(fields) != NUM_FIELDS:
                raise DataError(f"{path}, line {lineno}: {len(fields)} tab-separated fields; "
                                f"expected {NUM_FIELDS} ({FIELDS})")
            row = len(labels)
            labels.append(parse_label(fields[0], f"{path}, line {lineno}"))
            for text, out in ((fields[3], inputs), (fields[4], inputs2)):
                stats["truncated"] += len(text) > limit
                stats["longest"] = max(stats["longest"], len(text))
                ids = encode(text, max_length)
                out[row, : len(ids)] = ids
    if not labels:
        raise DataError(f"{path}: no examples; expected {FIELDS} lines")
    n = len(labels)  # capacity counted a final empty line too; drop the unused rows
    return inputs[:n], inputs2[:n], np.asarray(labels, dtype=np.int32), stats


def candidate_dirs(data_dir: str) -> list[str]:
    """Where the TSVs may be, in the order looked at."""
    return [
        data_dir,
        os.path.join(data_dir, "tsv_data"),
        os.path.join(data_dir, "lra_release", "tsv_data"),
        os.path.join(data_dir, "lra_release", "lra_release", "tsv_data"),
    ]


def find_tsv_dir(data_dir: str) -> str | None:
    for d in candidate_dirs(data_dir):
        if os.path.isfile(os.path.join(d, FILE_PATTERN.format("train"))):
            return d
    return None


def split_paths(folder: str) -> dict[str, str]:
    return {s: os.path.join(folder, FILE_PATTERN.format(f)) for s, f in FILE_SPLITS.items()}


def load_splits(data_cfg: Any) -> Splits:
    """{'train'|'val'|'test': {'inputs', 'inputs2': uint16 [N, max_length], 'targets': int32}}."""
    data_dir = os.fspath(getattr(data_cfg, "data_dir", "") or "")
    if not data_dir:
        raise DataError(f"config field data.data_dir: not set; expected the folder with "
                        f"new_aan_pairs.{{train,eval,test}}.tsv (put them there with: "
                        f"{PREPARE_HINT})")
    max_length = int(getattr(data_cfg, "max_length", 0) or TASK.max_length)
    if max_length < 1:
        raise DataError(f"config field data.max_length: {max_length}; expected >= 1")
    folder = find_tsv_dir(data_dir)
    if folder is None:
        raise DataError(
            f"{os.path.join(data_dir, FILE_PATTERN.format('train'))}: file not found; expected "
            f"new_aan_pairs.{{train,eval,test}}.tsv in one of "
            f"{', '.join(candidate_dirs(data_dir))}; put them there with: {PREPARE_HINT}")
    seed = int(getattr(data_cfg, "split_seed", DEFAULTS["split_seed"]))
    limits = split_limits(data_cfg)
    splits: Splits = {}
    for name, path in split_paths(folder).items():
        inputs, inputs2, targets, stats = read_tsv(path, max_length)
        counts = np.bincount(targets, minlength=2)
        log.info("retrieval %s: %d pairs (label 0: %d, 1: %d), longest text %d bytes, %d of %d "
                 "texts cut to %d bytes [%s]", name, len(targets), counts[0], counts[1],
                 stats["longest"], stats["truncated"], 2 * len(targets),
                 min(LRA_CHAR_LIMIT, max_length), path)
        split = {"inputs": inputs, "inputs2": inputs2, "targets": targets}
        splits[name] = subsample(split, limits[name], seed, f"retrieval {name}")
    return splits
