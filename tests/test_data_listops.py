"""ListOps: the generator (luna_lra.data.listops_generator, its command data_prep.listops) and
the task reader (luna_lra.data.listops)."""

from __future__ import annotations

import collections
import csv
import logging
import os
import random
import subprocess
import sys
import types

import numpy as np
import pytest

from luna_lra.data import listops_generator as gen
from luna_lra.data import DataError
from luna_lra.data import listops as task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(min_length=10, max_length=60, max_depth=5, max_args=5)


# ---------------------------------------------------------------- independent helpers


def lra_tokens(source: str) -> list[str]:
    """The LRA tokenisation, written here independently of the task module."""
    return source.replace("]", "X").replace("(", " ").replace(")", " ").split()


def stack_eval(tokens: list[str]) -> int:
    """Evaluates a tokenised expression with an explicit stack (no tree, no recursion)."""
    stack: list[tuple[str, list[int]]] = []
    result = None
    for tok in tokens:
        if tok.startswith("["):
            stack.append((tok, []))
        elif tok == "X":
            op, args = stack.pop()
            assert len(args) >= 2, "an operator has at least two arguments"
            if op == "[MIN":
                v = min(args)
            elif op == "[MAX":
                v = max(args)
            elif op == "[SM":
                v = sum(args) % 10
            elif op == "[MED":
                v = int(np.median(args))
            else:
                raise AssertionError(op)
            if stack:
                stack[-1][1].append(v)
            else:
                assert result is None
                result = v
        else:
            assert tok.isdigit() and len(tok) == 1, tok
            if stack:
                stack[-1][1].append(int(tok))
            else:
                assert result is None
                result = int(tok)
    assert not stack and result is not None
    return result


def reference_examples(num, *, min_length, max_length, max_depth, max_args, seed):
    """LRA's scheme built the long way: trees as left-nested pairs ((((op, a1), a2), ..), END),
    printed as '( ' + left + ' ' + right + ' )', labels with numpy; no early abandonment.
    Draws are made in LRA's order with the same uniform draws as the module, so as long as no
    tree is abandoned early (max_length out of reach) the two must agree byte for byte."""
    rng = random.Random(seed)
    ops = ["[MIN", "[MAX", "[MED", "[SM"]

    def tree(depth):
        if depth < max_depth and rng.random() <= 0.25:
            n = 2 + int(rng.random() * (max_args - 1))
            kids = [tree(depth + 1) for _ in range(n)]
            op = ops[int(rng.random() * 4)]
            t = (op, kids[0][0])
            for k in kids[1:]:
                t = (t, k[0])
            vals = [k[1] for k in kids]
            fn = {"[MIN": min, "[MAX": max, "[MED": lambda a: int(np.median(a)),
                  "[SM": lambda a: int(np.sum(a) % 10)}[op]
            return (t, "]"), fn(vals), 2 + sum(k[2] for k in kids)
        v = int(rng.random() * 10)
        return v, v, 1

    def to_str(t):
        if isinstance(t, (str, int)):
            return str(t)
        return "( " + to_str(t[0]) + " " + to_str(t[1]) + " )"

    out: dict[str, int] = {}
    while len(out) < num:
        t, value, length = tree(1)
        if min_length < length < max_length:
            out.setdefault(to_str(t), value)
    return list(out.items())


def read_rows(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["Source", "Target"]
    return [(s, int(t)) for s, t in rows[1:]]


def make(tmp_path, name="d", num_train=300, num_val=50, num_test=50, seed=0, **kw):
    params = {**SMALL, **kw}
    out = tmp_path / name
    gen.generate(str(out), num_train=num_train, num_val=num_val, num_test=num_test,
                 seed=seed, show_progress=False, **params)
    return out


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def cfg(data_dir, max_length=60, **kw):
    return types.SimpleNamespace(data_dir=str(data_dir), max_length=max_length, **kw)


def good_files(folder, train="( ( ( [MAX 2 ) 9 ) ] )\t9\n"):
    for split in ("train", "val", "test"):
        write(folder / f"basic_{split}.tsv", "Source\tTarget\n" + train)


# ---------------------------------------------------------------- generator


def test_string_format_and_labels_match_lra_scheme():
    params = dict(min_length=-1, max_length=10**9, max_depth=5, max_args=5)
    ours = gen.sample_examples(400, seed=3, **params)
    ref = reference_examples(400, seed=3, **params)
    assert ours == ref


def test_tiny_example_format():
    src = "( ( ( [MAX 2 ) 9 ) ] )"
    assert stack_eval(lra_tokens(src)) == 9
    # such a 2-argument node (length 4) is among small generated trees
    rows = gen.sample_examples(200, min_length=3, max_length=5, max_depth=2, max_args=2, seed=0)
    assert all(s.count("(") == s.count(")") == 3 for s, _ in rows)
    assert any(s.startswith("( ( ( [MAX ") and s.endswith(" ) ] )") for s, _ in rows)


def test_labels_match_independent_evaluator(tmp_path):
    out = make(tmp_path, num_train=300, num_val=50, num_test=50, max_depth=6, max_args=6)
    n = 0
    for split in ("train", "val", "test"):
        for source, label in read_rows(out / f"basic_{split}.tsv"):
            assert stack_eval(lra_tokens(source)) == label, source
            n += 1
    assert n == 400


def test_lengths_strictly_inside_window(tmp_path):
    lo, hi = 10, 60
    out = make(tmp_path, num_train=500, min_length=lo, max_length=hi, max_depth=6)
    lengths = []
    for split in ("train", "val", "test"):
        for source, _ in read_rows(out / f"basic_{split}.tsv"):
            toks = lra_tokens(source)
            n_ops = sum(t.startswith("[") for t in toks)
            n_vals = sum(t.isdigit() for t in toks)
            # node length = 1 per value + 2 per operator (op and `]`) = token count
            assert toks.count("X") == n_ops
            assert len(toks) == n_vals + 2 * n_ops
            # each n-argument operator contributes n + 1 "(" and as many ")"
            assert source.count("(") == source.count(")") == n_vals + n_ops - 1 + n_ops
            assert lo < len(toks) < hi
            lengths.append(len(toks))
    assert min(lengths) <= lo + 3  # the window is used near both ends
    assert max(lengths) >= hi - 3


def test_default_length_window_respected():
    # the early abandonment at max_length must never let a too-long tree through
    rows = gen.sample_examples(20, min_length=500, max_length=700, seed=1)
    for source, label in rows:
        toks = lra_tokens(source)
        assert 500 < len(toks) < 700
        assert stack_eval(toks) == label


def test_early_abandonment_keeps_distribution():
    # Same process with and without abandonment (the reference builds every tree): the
    # kept examples must look alike. Seeds are fixed, so this is deterministic.
    params = dict(min_length=10, max_length=40, max_depth=6, max_args=5)
    ours = gen.sample_examples(2000, seed=11, **params)
    ref = reference_examples(2000, seed=12, **params)
    len_ours = np.array([len(lra_tokens(s)) for s, _ in ours])
    len_ref = np.array([len(lra_tokens(s)) for s, _ in ref])
    assert abs(len_ours.mean() - len_ref.mean()) < 1.0
    lab_ours = np.bincount([l for _, l in ours], minlength=10) / 2000
    lab_ref = np.bincount([l for _, l in ref], minlength=10) / 2000
    assert np.abs(lab_ours - lab_ref).max() < 0.04


def test_label_statistics():
    rows = gen.sample_examples(3000, seed=0, **SMALL)
    counts = collections.Counter(label for _, label in rows)
    assert set(counts) == set(range(10))
    # measured with these parameters: shares 0.084 (label 7) .. 0.116 (label 0)
    assert max(counts.values()) / len(rows) < 0.40
    assert min(counts.values()) / len(rows) > 0.02


def test_same_seed_same_bytes_other_seed_differs_no_duplicates(tmp_path):
    a = make(tmp_path, "a", seed=5)
    b = make(tmp_path, "b", seed=5)
    c = make(tmp_path, "c", seed=6)
    names = ["basic_train.tsv", "basic_val.tsv", "basic_test.tsv"]
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert any((a / name).read_bytes() != (c / name).read_bytes() for name in names)
    sources = [s for name in names for s, _ in read_rows(a / name)]
    assert len(sources) == 400 and len(set(sources)) == len(sources)
    assert sorted(os.listdir(a)) == sorted(names)  # no temporary files left behind
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(a / "basic_train.tsv").st_mode & 0o777 == 0o666 & ~umask
    # csv.writer line ends, as LRA's files
    assert (a / "basic_val.tsv").read_bytes().startswith(b"Source\tTarget\r\n")


def test_split_counts(tmp_path):
    out = make(tmp_path, num_train=7, num_val=3, num_test=0)
    assert [len(read_rows(out / f"basic_{s}.tsv")) for s in ("train", "val", "test")] == [7, 3, 0]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    def rows():
        yield ("1", 1)
        raise KeyboardInterrupt

    path = tmp_path / "basic_train.tsv"
    with pytest.raises(KeyboardInterrupt):
        gen.write_tsv(str(path), rows())
    assert os.listdir(tmp_path) == []


def test_impossible_parameters_rejected():
    with pytest.raises(ValueError, match="unreachable"):
        gen.sample_examples(1, min_length=100, max_length=200, max_depth=2, max_args=5)
    with pytest.raises(ValueError, match="no length"):
        gen.sample_examples(1, min_length=10, max_length=11)
    with pytest.raises(RuntimeError, match="distinct"):
        # only a handful of distinct 2-argument trees of depth 2 exist: 4 ops x 100 args
        gen.sample_examples(1000, min_length=3, max_length=5, max_depth=2, max_args=2)


def test_cli(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "data_prep.listops", "--out", str(out), "--num_train", "20",
         "--num_val", "5", "--num_test", "5", "--min_length", "10", "--max_length", "40",
         "--max_depth", "5", "--max_args", "4", "--seed", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(read_rows(out / "basic_train.tsv")) == 20
    same = make(tmp_path, "api", num_train=20, num_val=5, num_test=5, seed=2,
                min_length=10, max_length=40, max_depth=5, max_args=4)
    assert (out / "basic_test.tsv").read_bytes() == (same / "basic_test.tsv").read_bytes()


# ---------------------------------------------------------------- task module


def test_vocab_and_task():
    assert task.TASK.name == "listops" and task.TASK.num_classes == 10
    assert task.TASK.vocab_size == 16 and task.TASK.max_length == 2000
    assert task.VOCAB == ("[MIN", "[MAX", "[MED", "[SM", "X", "0", "1", "2", "3", "4", "5",
                          "6", "7", "8", "9")


def test_tokenizer_hand_example():
    src = "( ( ( ( [SM 3 ) ( ( ( [MED 0 ) 9 ) ] ) ) ( ( ( [MIN 7 ) ( ( ( [MAX 1 ) 2 ) ] ) ) ] ) ) ] )"
    #            [SM  3  [MED 0  9  ]  [MIN 7   [MAX 1  2  ]  ]  ]
    assert task.tokenize(src) == [4, 9, 3, 6, 15, 5, 1, 13, 2, 7, 8, 5, 5, 5]
    assert task.tokenize("( ( ( [MAX 2 ) 9 ) ] )") == [2, 8, 15, 5]
    with pytest.raises(DataError, match="'12'"):
        task.tokenize("( ( ( [MAX 2 ) 12 ) ] )")


def test_load_generated_roundtrip(tmp_path):
    out = make(tmp_path)
    splits = task.load_splits(cfg(out, max_length=60))
    assert set(splits) == {"train", "val", "test"}
    for split, n in (("train", 300), ("val", 50), ("test", 50)):
        x, y = splits[split]["inputs"], splits[split]["targets"]
        assert x.shape == (n, 60) and x.dtype == np.int32
        assert y.shape == (n,) and y.dtype == np.int32
        rows = read_rows(out / f"basic_{split}.tsv")
        assert y.tolist() == [l for _, l in rows]
        inv = {i + 1: t for i, t in enumerate(task.VOCAB)}
        for row, (source, _) in zip(x, rows):
            ids = row[row > 0].tolist()
            assert [inv[i] for i in ids] == lra_tokens(source)
            assert (row[len(ids):] == 0).all()


def test_release_layout(tmp_path):
    make(tmp_path, "lra_release/listops-1000", num_train=20, num_val=5, num_test=5)
    splits = task.load_splits(cfg(tmp_path / "lra_release"))
    assert [len(splits[s]["targets"]) for s in ("train", "val", "test")] == [20, 5, 5]


def test_truncation_and_padding(tmp_path, caplog):
    folder = tmp_path / "t"
    good_files(folder)
    write(folder / "basic_train.tsv",
          "Source\tTarget\n"
          "( ( ( [MAX 2 ) 9 ) ] )\t9\n"
          "( ( ( ( ( [SM 1 ) 2 ) 3 ) 4 ) ] )\t0\n"
          "( ( [MIN 5 ) ] )\t5\n")
    with caplog.at_level(logging.INFO):
        splits = task.load_splits(cfg(folder, max_length=5))
    x = splits["train"]["inputs"]
    assert x.tolist() == [
        [2, 8, 15, 5, 0],
        [4, 7, 8, 9, 10],  # 6 tokens cut to 5
        [1, 11, 5, 0, 0],
    ]
    assert splits["train"]["targets"].tolist() == [9, 0, 5]
    assert any("1 of 3" in r.getMessage() and "truncated" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize(
    "body, line, what",
    [
        ("( ( ( [MAX 2 ) 9 ) ] )\t9\n( ( ( [MAX 2 ) 9 ) ] )\n", 3, "fields"),
        ("( ( ( [MAX 2 ) 9 ) ] )\t9\nx\t1\t2\n", 3, "fields"),
        ("( ( ( [MAX 2 ) 9 ) ] )\t10\n", 2, "label"),
        ("( ( ( [MAX 2 ) 9 ) ] )\tnine\n", 2, "label"),
        ("( ( ( [MAX 2 ) 9 ) ] )\t-1\n", 2, "label"),
        ("( ( ( [MAX 2 ) 9 ) ] )\t9\n( ) \t9\n", 3, "empty expression"),
        ("( ( ( [MAX 2 ) 9 ) ] )\t9\n( ( ( [MAX 2 ) 9 ) ] )\t9\n( ( ( [MEAN 2 ) 9 ) ] )\t9\n",
         4, "[MEAN"),
        ("( ( ( [MAX 2 ) 9 ) ] )\t9\n\n( ( ( [MAX 2 ) 9 ) ] )\t9\n", 3, "blank"),
    ],
)
def test_bad_lines(tmp_path, body, line, what):
    folder = tmp_path / "bad"
    good_files(folder)
    write(folder / "basic_val.tsv", "Source\tTarget\n" + body)
    with pytest.raises(DataError) as e:
        task.load_splits(cfg(folder))
    msg = str(e.value)
    assert "basic_val.tsv" in msg and f"line {line}:" in msg and what in msg, msg


def test_trailing_blank_lines_and_crlf_ok(tmp_path):
    folder = tmp_path / "ok"
    good_files(folder)
    write(folder / "basic_test.tsv", "Source\tTarget\r\n( ( ( [MAX 2 ) 9 ) ] )\t9\r\n\n\n")
    splits = task.load_splits(cfg(folder, max_length=4))
    assert splits["test"]["inputs"].tolist() == [[2, 8, 15, 5]]


@pytest.mark.parametrize("header", ["Source,Target\n", "source\ttarget\n", "", "Target\tSource\n"])
def test_bad_header(tmp_path, header):
    folder = tmp_path / "hdr"
    good_files(folder)
    write(folder / "basic_train.tsv", header + ("( ( ( [MAX 2 ) 9 ) ] )\t9\n" if header else ""))
    with pytest.raises(DataError) as e:
        task.load_splits(cfg(folder))
    msg = str(e.value)
    assert "basic_train.tsv" in msg and "line 1:" in msg and "Source<TAB>Target" in msg, msg


def test_missing_directory_and_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        task.load_splits(cfg(missing))
    assert str(missing) in str(e.value) and "basic_train.tsv" in str(e.value)
    folder = tmp_path / "partial"
    write(folder / "basic_train.tsv", "Source\tTarget\n")
    with pytest.raises(DataError) as e:
        task.load_splits(cfg(folder))
    assert "basic_val.tsv" in str(e.value) and "data_prep.listops" in str(e.value)
    with pytest.raises(DataError) as e:
        task.read_tsv(str(folder / "basic_val.tsv"))
    assert "basic_val.tsv" in str(e.value) and "data_prep.listops" in str(e.value)
    with pytest.raises(DataError, match="data_dir"):
        task.load_splits(types.SimpleNamespace(max_length=10))


def test_prepare_if_missing(tmp_path, caplog):
    folder = tmp_path / "gen"
    off = cfg(folder, generate_if_missing=False)
    assert task.prepare_if_missing(off) is False and not folder.exists()
    on = cfg(folder, generate_if_missing=True, generate_num_train=30, generate_num_val=4,
             generate_num_test=6, generate_min_length=10, generate_max_length=50,
             generate_max_depth=5, generate_max_args=5, generate_seed=1,
             generate_show_progress=False)
    with caplog.at_level("WARNING", logger="luna_lra.data.listops"):
        assert task.prepare_if_missing(on) is True
    assert "generating synthetic ListOps" in caplog.text
    splits = task.load_splits(on)
    assert [len(splits[s]["targets"]) for s in ("train", "val", "test")] == [30, 4, 6]
    before = (folder / "basic_train.tsv").read_bytes()
    assert task.prepare_if_missing(on) is False  # already there: untouched
    assert (folder / "basic_train.tsv").read_bytes() == before
    os.remove(folder / "basic_test.tsv")
    with pytest.raises(DataError, match="basic_test.tsv"):
        task.prepare_if_missing(on)


def test_prepare_if_missing_with_config_dict(tmp_path):
    ml_collections = pytest.importorskip("ml_collections")
    folder = tmp_path / "cd"
    c = ml_collections.ConfigDict(dict(
        data_dir=str(folder), max_length=64, generate_if_missing=True, generate_num_train=12,
        generate_num_val=3, generate_num_test=3, generate_min_length=10,
        generate_max_length=40, generate_max_depth=5, generate_seed=None,  # None: default
        generate_show_progress=False))  # generate_max_args absent: default
    assert task.prepare_if_missing(c) is True
    splits = task.load_splits(c)
    assert splits["train"]["inputs"].shape == (12, 64)
    assert splits["val"]["targets"].shape == (3,)


def test_chunk_tokeniser_agrees_with_line_tokeniser():
    rng = random.Random(0)
    pieces = ["[MIN", "[MAX", "[MED", "[SM", "]", "X", "(", ")", *"0123456789",
              "[MI", "[MINN", "MAX", "[SMX", "[S", "[", "1X", "12", "]]", "[MAXX", "[ME D",
              "x", "é", "\x00", "\x0b", "\x0c", "\r", " ", "  "]
    lines = []
    for _ in range(3000):
        k = rng.randint(0, 8)
        seps = [" ", " ", " ", "", "\r", "\x0c"]
        lines.append("".join(rng.choice(pieces) + rng.choice(seps) for _ in range(k)).encode())
    n_bad = 0
    good = []
    for line in lines:
        try:
            ref = task._encode_line(line, "x")
        except DataError:
            ref = None
            n_bad += 1
        got = task._encode_chunk([line])
        if ref is None:
            assert got is None, line
        else:
            assert got is not None, line
            assert got[0].tolist() == ref.tolist() and got[1].tolist() == [len(ref)], line
            good.append((line, ref))
    assert 300 < n_bad < 2700  # both branches well exercised
    ids, counts = task._encode_chunk([line for line, _ in good])
    assert ids.tolist() == [i for _, ref in good for i in ref.tolist()]
    assert counts.tolist() == [len(ref) for _, ref in good]


def test_errors_and_padding_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(task, "_CHUNK_LINES", 3)
    folder = tmp_path / "chunks"
    good_files(folder)
    exprs = ["( ( ( [MAX 2 ) 9 ) ] )", "( ( ( ( ( [SM 1 ) 2 ) 3 ) 4 ) ] )", "( ( [MIN 5 ) ] )"]
    body = "".join(f"{exprs[i % 3]}\t{i % 10}\n" for i in range(10))
    write(folder / "basic_train.tsv", "Source\tTarget\n" + body)
    splits = task.load_splits(cfg(folder, max_length=5))
    rows = {0: [2, 8, 15, 5, 0], 1: [4, 7, 8, 9, 10], 2: [1, 11, 5, 0, 0]}
    assert splits["train"]["inputs"].tolist() == [rows[i % 3] for i in range(10)]
    assert splits["train"]["targets"].tolist() == list(range(10))
    seqs, labels = task.read_tsv(str(folder / "basic_train.tsv"))
    assert [len(s) for s in seqs] == [[4, 6, 3][i % 3] for i in range(10)]
    bad = body.splitlines(keepends=True)
    bad[7] = bad[7].replace("[SM", "[SUM")  # file line 9 (header is line 1)
    write(folder / "basic_train.tsv", "Source\tTarget\n" + "".join(bad))
    with pytest.raises(DataError, match=r"basic_train\.tsv, line 9: unknown token '\[SUM'"):
        task.load_splits(cfg(folder))


def test_check_command_reports_counts_and_labels(tmp_path, capsys):
    from data_prep import listops as command

    gen.generate(str(tmp_path), num_train=20, num_val=5, num_test=7, min_length=5,
                       max_length=40, max_depth=4, max_args=4, seed=3, show_progress=False)
    assert command.main(["--check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train (" in out and "20 examples" in out and "7 examples" in out
    (tmp_path / "basic_val.tsv").write_text("Source\tTarget\n[MAX 3 ]\t12\n")
    assert command.main(["--check", str(tmp_path)]) == 1
    assert "basic_val.tsv, line 2" in capsys.readouterr().out
