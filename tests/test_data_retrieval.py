"""Retrieval (AAN, byte level, two towers): luna_lra.data.retrieval, data_prep.retrieval and
configs/retrieval.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import types

import numpy as np
import pytest

from data_prep import retrieval as prep
from luna_lra.data import DataError
from luna_lra.data import retrieval as task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (label field, text1, text2) per split; texts as in the release: raw bytes of the field
ROWS = {
    "train": [(b"1.0", b"b'Graph parsing'", b"b'Parsing graphs\\nwith DAGs'"),
              (b"0.0", b"b'Speech'", b"b'Vision'"),
              (b"1", b"abc", b"abd"),
              (b"0", b"x", b"y")],
    "eval": [(b"1", b"same", b"same"), (b"0", b"p", b"q")],
    "test": [(b"0.0", b"left", b"right"), (b"1.0", b"up", b"upper"), (b"1", b"a", b"a")],
}


def write_tsv(path, rows, ending=b"\n"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        for i, (label, t1, t2) in enumerate(rows):
            f.write(b"\t".join([label, b"E%02d-1%03d" % (i, i), b"P%02d-2%03d" % (i, i), t1, t2])
                    + ending)


def make_release(folder, rows=ROWS, ending=b"\n"):
    """new_aan_pairs.{train,eval,test}.tsv in `folder`, as in lra_release/tsv_data/."""
    for split, split_rows in rows.items():
        write_tsv(os.path.join(folder, f"new_aan_pairs.{split}.tsv"), split_rows, ending)
    return str(folder)


def cfg(data_dir, **kw):
    kw.setdefault("max_length", 40)
    return types.SimpleNamespace(data_dir=str(data_dir), **kw)


def ids_of(b: bytes, length: int) -> list[int]:
    ids = [x + 1 for x in b[:length]]
    return ids + [0] * (length - len(ids))


# ----------------------------------------------------------------------------- reading


def test_two_towers_tokens_and_labels(tmp_path):
    make_release(tmp_path / "tsv_data")
    splits = task.load_splits(cfg(tmp_path, max_length=12))
    assert task.TASK.two_tower and task.TASK.vocab_size == 257 and task.TASK.num_classes == 2
    for name, file_split in (("train", "train"), ("val", "eval"), ("test", "test")):
        s = splits[name]
        rows = ROWS[file_split]
        assert s["inputs"].shape == s["inputs2"].shape == (len(rows), 12)
        assert s["inputs"].dtype == s["inputs2"].dtype == np.uint16
        assert s["targets"].dtype == np.int32
        assert s["targets"].tolist() == [int(float(r[0])) for r in rows]  # file order
        assert s["inputs"].tolist() == [ids_of(r[1], 12) for r in rows]
        assert s["inputs2"].tolist() == [ids_of(r[2], 12) for r in rows]
    # The release's texts are used byte for byte: b'...' and a literal backslash-n stay.
    row = task.load_splits(cfg(tmp_path, max_length=40))["train"]["inputs2"][0].tolist()
    assert row[:2] == [ord("b") + 1, ord("'") + 1]
    assert row[16:18] == [ord("\\") + 1, ord("n") + 1]


def test_first_10000_bytes_then_max_length(tmp_path):
    long_text = bytes(range(32, 127)) * 120  # 11,400 bytes
    rows = {"train": [(b"1", long_text, b"short")], "eval": ROWS["eval"], "test": ROWS["test"]}
    make_release(tmp_path, rows)
    big = task.load_splits(cfg(tmp_path, max_length=12000))["train"]
    assert big["inputs"].shape == (1, 12000)
    assert big["inputs"][0, :10000].tolist() == [b + 1 for b in long_text[:10000]]
    assert not big["inputs"][0, 10000:].any()  # LRA keeps only the first 10,000 bytes
    small = task.load_splits(cfg(tmp_path, max_length=5))["train"]
    assert small["inputs"].tolist() == [ids_of(long_text, 5)]
    assert small["inputs2"].tolist() == [ids_of(b"short", 5)]


@pytest.mark.parametrize("layout", ["flat", "parent", "lra_release", "nested", "tsv_itself"])
def test_data_dir_layouts(tmp_path, layout):
    sub = {"flat": "", "parent": "tsv_data", "lra_release": "lra_release/tsv_data",
           "nested": "lra_release/lra_release/tsv_data", "tsv_itself": "tsv_data"}[layout]
    make_release(tmp_path / sub if sub else tmp_path)
    data_dir = tmp_path / "tsv_data" if layout == "tsv_itself" else tmp_path
    if layout == "lra_release":
        data_dir = tmp_path / "lra_release"  # pointing at the unpacked lra_release/ folder
    s = task.load_splits(cfg(data_dir))
    assert len(s["train"]["targets"]) == 4 and len(s["val"]["targets"]) == 2


def test_crlf_and_trailing_blank_lines(tmp_path):
    make_release(tmp_path, ending=b"\r\n")
    with open(tmp_path / "new_aan_pairs.test.tsv", "ab") as f:
        f.write(b"\n\n")
    s = task.load_splits(cfg(tmp_path, max_length=6))
    assert s["test"]["inputs2"].tolist()[0] == ids_of(b"right", 6)  # no CR in the text
    assert len(s["test"]["targets"]) == 3


def test_eval_subsets(tmp_path):
    make_release(tmp_path)
    s = task.load_splits(cfg(tmp_path, max_eval_examples=1, max_train_examples=2))
    assert [len(s[k]["targets"]) for k in ("train", "val", "test")] == [2, 1, 1]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("line,fields", [
    (b"1\tA\tB\tonly four", 4),
    (b"1\tA\tB\tt1\tt2\textra", 6),
    (b"1 A B t1 t2", 1),
])
def test_wrong_field_count_names_file_and_line(tmp_path, line, fields):
    make_release(tmp_path)
    path = tmp_path / "new_aan_pairs.eval.tsv"
    with open(path, "ab") as f:
        f.write(line + b"\n")
    with pytest.raises(DataError) as e:
        task.load_splits(cfg(tmp_path))
    msg = str(e.value)
    assert f"{path}, line 3: {fields} tab-separated fields; expected 5" in msg
    assert "label<TAB>id1<TAB>id2<TAB>text1<TAB>text2" in msg


@pytest.mark.parametrize("label", [b"2", b"0.5", b"-1", b"yes", b"", b"1.0.0", b" 1", b"1e0"])
def test_bad_label_names_file_and_line(tmp_path, label):
    rows = dict(ROWS)
    rows["test"] = ROWS["test"][:1] + [(label, b"t", b"u")]
    make_release(tmp_path, rows)
    with pytest.raises(DataError, match=r"new_aan_pairs\.test\.tsv, line 2: bad label"):
        task.load_splits(cfg(tmp_path))


@pytest.mark.parametrize("label,value", [(b"0", 0), (b"1", 1), (b"0.0", 0), (b"1.0", 1),
                                         (b"1.00", 1), (b"1.", 1)])
def test_accepted_labels(label, value):
    assert task.parse_label(label, "here") == value


def test_blank_line_in_the_middle(tmp_path):
    make_release(tmp_path)
    path = tmp_path / "new_aan_pairs.train.tsv"
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:2] + [b""] + lines[2:]))
    with pytest.raises(DataError, match=r"new_aan_pairs\.train\.tsv, line 3: blank line"):
        task.load_splits(cfg(tmp_path))


def test_missing_split_file(tmp_path):
    make_release(tmp_path)
    os.remove(tmp_path / "new_aan_pairs.test.tsv")
    with pytest.raises(DataError, match=r"new_aan_pairs\.test\.tsv: file not found"):
        task.load_splits(cfg(tmp_path))


def test_no_data_lists_where_it_looked(tmp_path):
    with pytest.raises(DataError) as e:
        task.load_splits(cfg(tmp_path))
    msg = str(e.value)
    assert "tsv_data" in msg and "lra_release" in msg and "data_prep.retrieval" in msg


def test_empty_file(tmp_path):
    make_release(tmp_path)
    (tmp_path / "new_aan_pairs.eval.tsv").write_bytes(b"")
    with pytest.raises(DataError, match=r"new_aan_pairs\.eval\.tsv: no examples"):
        task.load_splits(cfg(tmp_path))


# ----------------------------------------------------------------------------- data_prep + configs


def test_unpack_release_and_check(tmp_path, capsys):
    src = tmp_path / "src"
    make_release(src / "lra_release" / "tsv_data")
    (src / "lra_release" / "listops-1000").mkdir(parents=True)
    (src / "lra_release" / "listops-1000" / "basic_train.tsv").write_bytes(b"Source\tTarget\n")
    archive = tmp_path / "lra_release.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "lra_release", arcname="lra_release")
    out = tmp_path / "out"
    assert prep.main(["--archive", str(archive), "--out", str(out)]) == 0
    assert sorted(os.listdir(out / "tsv_data")) == [
        "new_aan_pairs.eval.tsv", "new_aan_pairs.test.tsv", "new_aan_pairs.train.tsv"]
    printed = capsys.readouterr().out
    assert "unpacked 3 AAN files" in printed
    assert "train: 4 pairs, labels 0: 2, 1: 2" in printed
    assert "val: 2 pairs" in printed and "test: 3 pairs, labels 0: 1, 1: 2" in printed


def test_prep_without_archive_says_what_to_do(tmp_path, capsys):
    assert prep.main(["--out", str(tmp_path)]) == 2
    assert "lra_release.gz" in capsys.readouterr().err
    assert prep.main(["--check", str(tmp_path)]) == 1
    assert "new_aan_pairs" in capsys.readouterr().out


def _config(variant):
    from luna_lra import config as config_lib

    return config_lib.load(os.path.join(REPO, "configs/retrieval.py") + f":{variant}")


def test_config_variants():
    c = _config("luna256")
    assert (c.model.num_layers, c.model.emb_dim, c.model.mlp_dim, c.model.num_heads) == (4, 128, 512, 4)
    assert c.model.tower_combine == "concat" and c.model.classifier_dim == 512
    assert c.model.init == "official" and c.model.dropout_rate == 0.1
    assert (c.optim.learning_rate, c.optim.weight_decay, c.train.num_steps) == (5e-4, 1e-4, 20000)
    t = _config("transformer")
    assert t.train.num_steps == 5000 and t.optim.warmup_steps == 8000
    assert _config("luna128").model.proj_len == 128


@pytest.mark.slow
def test_train_cli_tiny_end_to_end(tmp_path):
    data = tmp_path / "data"
    make_release(data / "lra_release" / "tsv_data")
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "luna_lra.train", "--config", "configs/retrieval.py:tiny",
           "--workdir", str(work), f"--config.data.data_dir={data}",
           "--config.train.num_steps=3", "--config.train.results_dir=",
           "--config.data.max_length=32", "--config.data.batch_size=2",
           "--config.data.eval_batch_size=2", "--config.train.progress_bar=False"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((work / "result.json").read_text())
    for key in ("test_accuracy", "val_accuracy", "step", "config"):
        assert key in result
    assert result["step"] == 3 and result["config"]["data"]["task"] == "retrieval"
