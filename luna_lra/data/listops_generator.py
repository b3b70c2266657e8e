"""Seeded generator for the ListOps task of the Long Range Arena (LRA).

The behaviour follows the generator shipped with LRA
(google-research/long-range-arena, lra_benchmarks/data/listops.py); the code here is our own.

What is generated
-----------------
An expression tree over the values 0..9 and the operators MIN, MAX, MED (median) and SM
(sum modulo 10). A node at depth < max_depth is a value with probability 0.75 and otherwise
an operator with randint(2, max_args) arguments, each a node at depth + 1; a node at
max_depth is always a value. The root is at depth 1.

The node "length" is 1 for a value and 2 + (sum of the children's lengths) for an operator
(the operator token and its closing `]`). It equals the number of tokens after the LRA
tokenisation (drop `(` and `)`, split on whitespace). A tree is kept when
min_length < length < max_length (both strict, as in LRA).

Text format (byte-identical to LRA's)
--------------------------------------
LRA stores an operator with arguments a1..an as the left-nested pairs
((((op, a1), a2), ...), an), END) and prints a pair as "( " + left + " " + right + " )".
For example MAX(2, 9) is written

    ( ( ( [MAX 2 ) 9 ) ] )

i.e. n + 1 opening "( ", the operator, then " <arg> )" for each argument and " ] )".

Labels: MIN and MAX as usual; MED = int(numpy.median(args)) (for an even count the mean of the
two middle values, truncated); SM = sum(args) % 10.

Differences from LRA, none of which changes the distribution of the kept examples:
  * LRA collects trees in a Python set, so its output order (and hence which trees land in
    train/val/test) depends on the interpreter's hash seed. Here duplicates are dropped
    keeping the first occurrence, so a seed gives byte-identical files.
  * A tree whose running length reaches max_length is abandoned at once instead of being
    built to the end and then rejected (see `_make_sampler`).
  * Uniform draws are made with `int(random() * k)` rather than random.choice/randint
    (same distribution up to float rounding, ~2**-53, and several times faster).

Output: <out>/basic_train.tsv, basic_val.tsv, basic_test.tsv, each a tab-separated file written
by csv.writer (so lines end in "\\r\\n", as LRA's files do) with the header `Source<TAB>Target`
and one `<expression>\\t<label>` line per example. Each file is written to a temporary name in
the same folder and then renamed into place, so an interrupted run never leaves a partial file
under a final name.

Command line: `python -m data_prep.listops --out DIR` (data_prep/listops.py).
"""

from __future__ import annotations

import csv
import os
import random
import sys
import uuid
from typing import Callable, Iterable, Sequence

OPERATORS: tuple[str, ...] = ("[MIN", "[MAX", "[MED", "[SM")
MIN, MAX, MED, SUM_MOD = range(4)  # indices into OPERATORS
END = "]"
VALUE_PROB = 0.75  # probability that a node above max_depth is a value
SPLITS: tuple[str, ...] = ("train", "val", "test")
TASK_PREFIX = "basic"
HEADER: tuple[str, str] = ("Source", "Target")

DEFAULT_NUM_TRAIN = 96_000
DEFAULT_NUM_VAL = 2_000
DEFAULT_NUM_TEST = 2_000
DEFAULT_MIN_LENGTH = 500
DEFAULT_MAX_LENGTH = 2_000
DEFAULT_MAX_DEPTH = 10
DEFAULT_MAX_ARGS = 10
DEFAULT_SEED = 0

# Give up when this many accepted trees in a row were duplicates: the requested number of
# distinct examples is then (nearly) all there is for these parameters.
MAX_DUPLICATES_IN_A_ROW = 10_000
# Give up when this many trees in a row were rejected for their length: the length window
# is (practically) unreachable for these parameters.
MAX_REJECTIONS_IN_A_ROW = 1_000_000


def split_path(out_dir: str, split: str) -> str:
    """Path of one split's file: <out_dir>/basic_<split>.tsv."""
    return os.path.join(out_dir, f"{TASK_PREFIX}_{split}.tsv")


class _TooLong(Exception):
    """Raised inside the sampler when a tree's running length reaches max_length."""


def _make_sampler(
    rng: random.Random, max_depth: int, max_args: int, max_length: int
) -> Callable[[], tuple[str | None, int, int]]:
    """Returns sample() -> (source, label, length); source is None for an abandoned tree.

    One call draws one tree from the process described in the module docstring and writes
    its LRA text and value on the fly (no intermediate tree is built).

    A tree is abandoned as soon as its running length reaches max_length. That does not
    change which trees are kept, nor their distribution:
      * the running length only grows while a tree is built (every node adds 1 or 2), so a
        tree whose running length has reached max_length would finish with length
        >= max_length and be rejected anyway: no tree that could be kept is abandoned;
      * each attempt starts from the random stream where the previous one stopped and the
        draws are i.i.d., so attempts are i.i.d. draws from the process however many numbers
        the previous attempt used. The kept trees are therefore i.i.d. samples of the process
        conditioned on min_length < length < max_length, exactly as in LRA; only which
        particular trees a given seed yields differs from a build-everything loop.
    (The running length is brought up to date before each sub-operator and at the end of
    each operator; checking less often than after every node only delays the abandonment.)

    Draws inside a tree are made in LRA's order: value-or-operator (only below max_depth),
    then the value; or the argument count, the arguments, and the operator last.
    """
    rand = rng.random
    arg_choices = max_args - 1  # randint(2, max_args) has max_args - 1 outcomes
    op_prob = 1.0 - VALUE_PROB  # LRA: r = random(); a value when r > 0.25
    # heads[n][op]: the n + 1 opening parentheses and the operator of an n-argument node.
    heads = [[("( " * (n + 1)) + op for op in OPERATORS] for n in range(max_args + 1)]
    value_parts = [f" {v} )" for v in range(10)]  # a value argument and its pair's ")"
    closing = " " + END + " )"
    parts: list[str] = []
    append = parts.append
    length = 0

    def operator(depth: int) -> int:
        """Writes an operator node at `depth` (< max_depth) into parts; returns its value."""
        nonlocal length
        length += 2
        if length >= max_length:
            raise _TooLong
        n = 2 + int(rand() * arg_choices)
        head_at = len(parts)
        append("")  # the head is known once the operator is drawn, after the arguments
        child_depth = depth + 1
        if child_depth < max_depth:
            args = []
            leaves = 0
            for _ in range(n):
                if rand() <= op_prob:
                    length += leaves
                    leaves = 0
                    append(" ")
                    v = operator(child_depth)
                    append(" )")
                else:
                    leaves += 1
                    v = int(rand() * 10)
                    append(value_parts[v])
                args.append(v)
            length += leaves
        else:  # children at max_depth are values
            args = [int(rand() * 10) for _ in range(n)]
            parts.extend([value_parts[v] for v in args])
            length += n
        if length >= max_length:
            raise _TooLong
        op = int(rand() * 4)
        parts[head_at] = heads[n][op]
        append(closing)
        return _apply(op, args)

    def sample() -> tuple[str | None, int, int]:
        nonlocal length
        if max_depth > 1 and rand() <= op_prob:
            length = 0
            parts.clear()
            try:
                label = operator(1)
            except _TooLong:
                return None, -1, length
            return "".join(parts), label, length
        v = int(rand() * 10)
        return str(v), v, 1

    return sample


def _apply(op: int, args: list[int]) -> int:
    """Value of operator `op` (an index into OPERATORS) on `args`; may sort args in place."""
    if op == MIN:
        return min(args)
    if op == MAX:
        return max(args)
    if op == MED:
        # numpy.median: the middle value, or the mean of the two middle values; LRA's int()
        # truncates that, which for these non-negative values is floor division.
        args.sort()
        m = len(args) // 2
        return args[m] if len(args) % 2 else (args[m - 1] + args[m]) // 2
    return sum(args) % 10


def _max_possible_length(max_depth: int, max_args: int) -> int:
    length = 1  # a node at max_depth
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


def _check_params(num, min_length, max_length, max_depth, max_args) -> None:
    if num < 0:
        raise ValueError(f"number of examples must be >= 0, got {num}")
    if max_depth < 1:
        raise ValueError(f"max_depth must be >= 1, got {max_depth}")
    if max_args < 2:
        raise ValueError(f"max_args must be >= 2, got {max_args}")
    if max_length - min_length < 2:
        raise ValueError(
            f"no length L satisfies min_length < L < max_length for min_length={min_length}, "
            f"max_length={max_length}"
        )
    top = _max_possible_length(max_depth, max_args)
    if top <= min_length:
        raise ValueError(
            f"min_length={min_length} is unreachable: trees with max_depth={max_depth} and "
            f"max_args={max_args} have length at most {top}"
        )


def sample_examples(
    num: int,
    *,
    min_length: int = DEFAULT_MIN_LENGTH,
    max_length: int = DEFAULT_MAX_LENGTH,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_args: int = DEFAULT_MAX_ARGS,
    seed: int = DEFAULT_SEED,
    show_progress: bool = False,
) -> list[tuple[str, int]]:
    """`num` distinct (source, label) examples, in the order first generated."""
    _check_params(num, min_length, max_length, max_depth, max_args)
    sample = _make_sampler(random.Random(seed), max_depth, max_args, max_length)
    seen: dict[str, int] = {}  # insertion-ordered: keeps the first occurrence
    duplicates_in_a_row = 0
    rejections_in_a_row = 0
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=num, desc="listops examples", unit="ex", file=sys.stderr)
    try:
        while len(seen) < num:
            source, label, length = sample()
            if source is None or not (min_length < length < max_length):
                rejections_in_a_row += 1
                if rejections_in_a_row >= MAX_REJECTIONS_IN_A_ROW:
                    raise RuntimeError(
                        f"{rejections_in_a_row} trees in a row fell outside "
                        f"{min_length} < length < {max_length} (max_depth={max_depth}, "
                        f"max_args={max_args}); widen the length window"
                    )
                continue
            rejections_in_a_row = 0
            if source in seen:
                duplicates_in_a_row += 1
                if duplicates_in_a_row >= MAX_DUPLICATES_IN_A_ROW:
                    raise RuntimeError(
                        f"only {len(seen)} distinct examples found ({duplicates_in_a_row} "
                        f"duplicates in a row) for {min_length} < length < {max_length}, "
                        f"max_depth={max_depth}, max_args={max_args}; asked for {num}"
                    )
                continue
            duplicates_in_a_row = 0
            seen[source] = label
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return list(seen.items())


def write_tsv(path: str, rows: Iterable[Sequence[object]]) -> None:
    """Writes header + rows as LRA does (csv.writer, tab-delimited), atomically."""
    folder, name = os.path.split(os.path.abspath(path))
    # A hidden, unique name in the same folder (so os.replace is atomic); unlike
    # tempfile.mkstemp (mode 0600) this gives the file the usual 0666 & ~umask permissions.
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter="\t")
            writer.writerow(HEADER)
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def generate(
    out_dir: str,
    *,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    num_test: int = DEFAULT_NUM_TEST,
    min_length: int = DEFAULT_MIN_LENGTH,
    max_length: int = DEFAULT_MAX_LENGTH,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_args: int = DEFAULT_MAX_ARGS,
    seed: int = DEFAULT_SEED,
    show_progress: bool = True,
) -> dict[str, str]:
    """Generates the three splits into out_dir (created if needed); returns {split: path}.

    The first num_train distinct examples go to train, the next num_val to val and the
    last num_test to test. Same arguments, same bytes.
    """
    counts = {"train": num_train, "val": num_val, "test": num_test}
    for split, n in counts.items():
        if n < 0:
            raise ValueError(f"num_{split} must be >= 0, got {n}")
    examples = sample_examples(
        sum(counts.values()),
        min_length=min_length,
        max_length=max_length,
        max_depth=max_depth,
        max_args=max_args,
        seed=seed,
        show_progress=show_progress,
    )
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    start = 0
    for split in SPLITS:
        end = start + counts[split]
        paths[split] = split_path(out_dir, split)
        write_tsv(paths[split], examples[start:end])
        start = end
    return paths
