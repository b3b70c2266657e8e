"""ListOps (LRA): nested MIN/MAX/MED/SM expressions over 0..9, 10-way classification.

Files: `basic_train.tsv`, `basic_val.tsv`, `basic_test.tsv`, read from `data_cfg.data_dir`, or
from `data_cfg.data_dir/listops-1000/` when that folder exists (the layout of the LRA release,
`lra_release/listops-1000/basic_*.tsv`). Each file: the header `Source<TAB>Target`, then one
`<expression><TAB><label 0..9>` line per example (LF or CRLF line ends). Make synthetic files
with `python -m data_prep.listops --out DIR`, or set `data_cfg.generate_if_missing = True`.

Tokenisation (as in LRA): `]` becomes `X`, `(` and `)` are dropped, the rest is split on
whitespace and each token is looked up in the fixed vocabulary VOCAB below (id 0 = padding).
A token outside it is an error, reported with its file and line.
"""

from __future__ import annotations

import fcntl
import logging
import os
from typing import Any

import numpy as np

from luna_lra.checks import short
from luna_lra.data import DataError, Splits, TaskInfo
from luna_lra.data import listops_generator as generator

TASK = TaskInfo(name="listops", num_classes=10, vocab_size=16, max_length=2000)

# Token ids: VOCAB[i] has id i + 1; id 0 is padding.
#   1 [MIN   2 [MAX   3 [MED   4 [SM   5 X (the closing `]`)   6..15 the digits 0..9
VOCAB: tuple[str, ...] = ("[MIN", "[MAX", "[MED", "[SM", "X") + tuple(str(d) for d in range(10))
PAD_ID = 0
TOKEN_TO_ID: dict[str, int] = {tok: i + 1 for i, tok in enumerate(VOCAB)}
assert len(VOCAB) + 1 == TASK.vocab_size

SPLITS = ("train", "val", "test")
RELEASE_SUBDIR = "listops-1000"
HEADER = "Source\tTarget"
MAKE_HINT = "python -m data_prep.listops --out DIR"

# Defaults of the data_cfg fields read by prepare_if_missing (those of the LRA generator).
GENERATE_DEFAULTS: dict[str, int] = {
    "generate_num_train": 96_000,
    "generate_num_val": 2_000,
    "generate_num_test": 2_000,
    "generate_min_length": 500,
    "generate_max_length": 2_000,
    "generate_max_depth": 10,
    "generate_max_args": 10,
    "generate_seed": 0,
}

log = logging.getLogger(__name__)

# Tokenisation works on bytes. The reference path (_encode_line: one dict lookup per token)
# is used by tokenize() and to word errors; files go through _encode_chunk, which does the
# same thing with numpy over many lines at once and agrees with it exactly (tested).
_TRANSLATE = bytes.maketrans(b"]", b"X")
_DELETE = b"()"
_TOKEN_BYTE: dict[bytes, bytes] = {tok.encode(): bytes([i]) for tok, i in TOKEN_TO_ID.items()}
_HEADER_BYTES = HEADER.encode()
_WHITESPACE = b" \t\n\r\x0b\x0c"  # what bytes.split() splits on
_CHUNK_LINES = 2048

# Per-byte class for _encode_chunk: 0 whitespace, the id of a one-character token (X, 0..9),
# _BRACKET for "[", _OTHER for anything else.
_BRACKET, _OTHER = 16, 17
_CLASS = np.full(256, _OTHER, dtype=np.uint8)
_CLASS[list(_WHITESPACE)] = 0
_CLASS[ord("[")] = _BRACKET
for _tok, _id in TOKEN_TO_ID.items():
    if len(_tok) == 1:
        _CLASS[ord(_tok)] = _id


def _fmt_token(tok: bytes) -> str:
    return short(tok.decode("utf-8", errors="backslashreplace"))


def _encode_line(source: bytes, where: str) -> np.ndarray:
    """Token ids (1-D uint8) of one LRA source string; `where` names it in errors."""
    toks = source.translate(_TRANSLATE, _DELETE).split()
    try:
        ids = b"".join(map(_TOKEN_BYTE.__getitem__, toks))
    except KeyError:
        bad = next(t for t in toks if t not in _TOKEN_BYTE)
        raise DataError(
            f"{where}: unknown token {_fmt_token(bad)}; expected one of {' '.join(VOCAB)} "
            f"(after `]` -> `X` and dropping parentheses)"
        ) from None
    return np.frombuffer(ids, dtype=np.uint8)


def _encode_chunk(sources: list[bytes]) -> tuple[np.ndarray, np.ndarray] | None:
    """(flat uint8 ids, int64 token count per source), or None if any token is unknown."""
    text = (b"\n".join(sources) + b"\n").translate(_TRANSLATE, _DELETE)
    raw = np.frombuffer(text + b"   ", dtype=np.uint8)  # 3 spare bytes for the look-ahead
    cls = _CLASS[raw]
    in_tok = cls != 0
    edge = np.diff(in_tok.view(np.int8), prepend=np.int8(0))
    starts = np.flatnonzero(edge == 1)  # tokens are maximal runs of non-whitespace
    ends = np.flatnonzero(edge == -1)  # text ends in "\n", so every run ends
    lengths = ends - starts
    ids = cls[starts]
    ok = (ids <= 15) & (lengths == 1)  # X or a digit, alone
    br = np.flatnonzero(ids == _BRACKET)
    if len(br):
        at = starts[br]
        n = lengths[br]
        b1, b2, b3 = raw[at + 1], raw[at + 2], raw[at + 3]
        m = b1 == ord("M")
        op = (
            1 * (m & (b2 == ord("I")) & (b3 == ord("N")) & (n == 4))
            + 2 * (m & (b2 == ord("A")) & (b3 == ord("X")) & (n == 4))
            + 3 * (m & (b2 == ord("E")) & (b3 == ord("D")) & (n == 4))
            + 4 * ((b1 == ord("S")) & (b2 == ord("M")) & (n == 3))
        )
        ids[br] = op
        ok[br] = op > 0
    if not ok.all():
        return None
    line_ends = np.flatnonzero(raw == ord("\n"))
    counts = np.diff(np.searchsorted(starts, line_ends), prepend=0)
    return ids, counts


def _open(path: str):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DataError(
            f"{path}: file not found; expected a ListOps split file (header "
            f"'Source<TAB>Target', then '<expression><TAB><label 0..9>' lines). "
            f"Make one with: {MAKE_HINT}"
        ) from None
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e})") from None


def _read_flat(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(all token ids concatenated as uint8, int64 token count per example, int32 labels)."""
    chunks_ids: list[np.ndarray] = []
    chunks_counts: list[np.ndarray] = []
    labels: list[int] = []
    sources: list[bytes] = []
    first_line = 2  # file line number of sources[0]
    pending_blank = 0  # line number of a blank line; an error unless only blanks follow

    def flush() -> None:
        nonlocal first_line
        if not sources:
            return
        enc = _encode_chunk(sources)
        if enc is None:  # find and report the first bad token, line by line
            for i, src in enumerate(sources):
                _encode_line(src, f"{path}, line {first_line + i}")
            raise AssertionError("listops: chunk and line tokenisers disagree")  # unreachable
        ids, counts = enc
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            raise DataError(
                f"{path}, line {first_line + int(empty[0])}: empty expression; expected "
                f"'<expression><TAB><label 0..9>'"
            )
        chunks_ids.append(ids)
        chunks_counts.append(counts)
        first_line += len(sources)
        sources.clear()

    with _open(path) as f:
        header = f.readline()
        if header.rstrip(b"\r\n") != _HEADER_BYTES:
            got = "an empty file" if not header else _fmt_token(header.rstrip(b"\r\n"))
            raise DataError(
                f"{path}, line 1: bad header; expected 'Source<TAB>Target', got {got}"
            )
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip(b"\r\n")
            if not line:
                pending_blank = pending_blank or lineno
                continue
            if pending_blank:
                raise DataError(
                    f"{path}, line {pending_blank}: blank line; expected "
                    f"'<expression><TAB><label 0..9>'"
                )
            fields = line.split(b"\t")
            if len(fields) != 2:
                raise DataError(
                    f"{path}, line {lineno}: {len(fields)} tab-separated fields; expected 2 "
                    f"('<expression><TAB><label 0..9>')"
                )
            source, target = fields
            try:
                label = int(target)
            except ValueError:
                label = -1
            if not 0 <= label <= 9:
                raise DataError(
                    f"{path}, line {lineno}: bad label {_fmt_token(target)}; expected an "
                    f"integer 0..9"
                )
            sources.append(source)
            labels.append(label)
            if len(sources) == _CHUNK_LINES:
                flush()
        flush()
    ids = np.concatenate(chunks_ids) if chunks_ids else np.zeros(0, np.uint8)
    counts = np.concatenate(chunks_counts) if chunks_counts else np.zeros(0, np.int64)
    return ids, counts, np.asarray(labels, dtype=np.int32)


def tokenize(source: str) -> list[int]:
    """Token ids of one source string, e.g. '( ( [SM 3 ) ] )' -> [4, 9, 5]."""
    return _encode_line(source.encode("utf-8"), "listops source").tolist()


def read_tsv(path: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Reads one split file: (token ids per example as 1-D uint8 arrays, int32 labels [N]).

    Raises DataError naming the file and line (1-based, the header is line 1) for a bad
    header, a line without exactly two tab-separated fields, a label outside 0..9, an empty
    expression, an unknown token, or a blank line followed by more data.
    """
    ids, counts, labels = _read_flat(path)
    return np.split(ids, np.cumsum(counts)[:-1]) if len(counts) else [], labels


def pad_flat(ids: np.ndarray, counts: np.ndarray, max_length: int) -> tuple[np.ndarray, int]:
    """Zero-padded int32 [N, max_length] from concatenated ids and per-example counts,
    cutting longer examples; returns (array, number of examples cut)."""
    n = len(counts)
    out = np.zeros((n, max_length), dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    cols = np.arange(max_length)
    for r0 in range(0, n, _CHUNK_LINES):  # bounded temporaries
        r1 = min(n, r0 + _CHUNK_LINES)
        c = counts[r0:r1]
        flat = ids[offsets[r0] : offsets[r1]]
        if c.max(initial=0) > max_length:
            pos = np.arange(len(flat)) - np.repeat(offsets[r0:r1] - offsets[r0], c)
            flat = flat[pos < max_length]
        out[r0:r1][cols < np.minimum(c, max_length)[:, None]] = flat
    return out, int((counts > max_length).sum())


def split_dir(data_dir: str) -> str:
    """The folder holding basic_*.tsv: data_dir/listops-1000 if it exists, else data_dir."""
    release = os.path.join(data_dir, RELEASE_SUBDIR)
    return release if os.path.isdir(release) else data_dir


def split_paths(data_dir: str) -> dict[str, str]:
    folder = split_dir(data_dir)
    return {s: os.path.join(folder, f"basic_{s}.tsv") for s in SPLITS}


def _data_dir(data_cfg: Any) -> str:
    data_dir = getattr(data_cfg, "data_dir", None)
    if not data_dir:
        raise DataError(
            "config field data.data_dir: not set; expected a folder with ListOps "
            f"basic_{{train,val,test}}.tsv (make one with: {MAKE_HINT})"
        )
    return os.fspath(data_dir)


def _expected_files_msg(data_dir: str) -> str:
    return (
        f"expected basic_train.tsv, basic_val.tsv and basic_test.tsv in {data_dir} or in "
        f"{os.path.join(data_dir, RELEASE_SUBDIR)} (the LRA release layout); make them with: "
        f"python -m data_prep.listops --out {data_dir}, or set data.generate_if_missing=True"
    )


def load_splits(data_cfg: Any) -> Splits:
    """{'train'|'val'|'test': {'inputs': int32 [N, max_length], 'targets': int32 [N]}}.

    data_cfg fields: data_dir (str), max_length (int, default TASK.max_length): sequences
    longer than max_length are cut (and counted in the log); shorter ones are zero-padded.
    """
    data_dir = _data_dir(data_cfg)
    max_length = int(getattr(data_cfg, "max_length", TASK.max_length))
    if max_length < 1:
        raise DataError(f"config field data.max_length: {max_length}; expected >= 1")
    if not os.path.isdir(data_dir):
        raise DataError(
            f"config field data.data_dir: {data_dir} is not a folder; "
            + _expected_files_msg(data_dir)
        )
    paths = split_paths(data_dir)
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        raise DataError(
            f"{missing[0]}: file not found (missing: {', '.join(missing)}); "
            + _expected_files_msg(data_dir)
        )
    splits: Splits = {}
    for split, path in paths.items():
        ids, counts, labels = _read_flat(path)
        if not len(counts):
            raise DataError(f"{path}: no examples after the header (the {split} split); "
                            "expected '<expression><TAB><label 0..9>' lines")
        inputs, truncated = pad_flat(ids, counts, max_length)
        longest = int(counts.max(initial=0))
        if truncated:
            log.warning(
                "listops %s: %d of %d examples longer than max_length=%d were truncated "
                "(longest %d tokens) [%s]", split, truncated, len(counts), max_length, longest,
                path,
            )
        log.info(
            "listops %s: %d examples, longest %d tokens, %d truncated to %d [%s]",
            split, len(counts), longest, truncated, max_length, path,
        )
        splits[split] = {"inputs": inputs, "targets": labels}
    return splits


def prepare_if_missing(data_cfg: Any) -> bool:
    """Generates synthetic ListOps files when data_cfg.generate_if_missing is true and none
    of the three split files exist; returns whether it generated.

    Reads data_cfg.generate_{num_train,num_val,num_test,min_length,max_length,max_depth,
    max_args,seed} (defaults in GENERATE_DEFAULTS, those of LRA) and, optionally,
    generate_show_progress (default True: a tqdm bar). Files go where load_splits looks
    (data_dir, or data_dir/listops-1000 if that folder exists). A partial set of files is an
    error rather than being overwritten. Runs or processes that start together take turns
    (a lock file in data_dir): one generates, the others find the files.
    """
    if not getattr(data_cfg, "generate_if_missing", False):
        return False
    data_dir = _data_dir(data_cfg)
    if all(os.path.isfile(p) for p in split_paths(data_dir).values()):
        return False  # (no lock needed, so a read-only data folder is fine)
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, ".generate.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _generate_unless_present(data_cfg, data_dir)


def _generate_unless_present(data_cfg: Any, data_dir: str) -> bool:
    paths = split_paths(data_dir)
    present = [p for p in paths.values() if os.path.isfile(p)]
    if len(present) == len(paths):
        return False
    if present:
        missing = [p for p in paths.values() if p not in present]
        raise DataError(
            f"{missing[0]}: file not found, but {', '.join(present)} exist; not overwriting "
            f"a partial ListOps data set. Remove the existing files to regenerate, or supply "
            f"the missing ones."
        )
    kw = {k: default if getattr(data_cfg, k, None) is None else int(getattr(data_cfg, k))
          for k, default in GENERATE_DEFAULTS.items()}
    out = split_dir(data_dir)
    log.warning(
        "listops: no data in %s; generating synthetic ListOps into %s (train/val/test "
        "%d/%d/%d, %d < length < %d, max_depth %d, max_args %d, seed %d)", data_dir, out,
        *(kw[f"generate_{k}"] for k in ("num_train", "num_val", "num_test", "min_length",
                                         "max_length", "max_depth", "max_args", "seed")))
    generator.generate(
        out, num_train=kw["generate_num_train"], num_val=kw["generate_num_val"],
        num_test=kw["generate_num_test"], min_length=kw["generate_min_length"],
        max_length=kw["generate_max_length"], max_depth=kw["generate_max_depth"],
        max_args=kw["generate_max_args"], seed=kw["generate_seed"],
        show_progress=bool(getattr(data_cfg, "generate_show_progress", True)))
    log.info("listops: wrote %s", ", ".join(paths.values()))
    return True
