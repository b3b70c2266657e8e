"""Text (IMDB, byte level): luna_lra.data.text, data_prep.text and configs/text.py."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import text as prep
from luna_lra.data import DataError
from luna_lra.data import text as task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (split, label folder) -> reviews, as bytes exactly as written to the files
REVIEWS = {
    ("train", "pos"): [b"Great film!", "Tr\u00e8s bien \u2014 10/10".encode(), b"  padded  \n"],
    ("train", "neg"): [b"Awful.", b"Boring plot and bad acting", b"meh"],
    ("test", "pos"): [b"Loved it", b"Wonderful"],
    ("test", "neg"): [b"Hated it", b"No"],
}


def make_aclimdb(root, reviews=REVIEWS) -> str:
    """Writes aclImdb/{split}/{pos,neg}/{i}_{rating}.txt as in aclImdb_v1.tar.gz."""
    for (split, label), texts in reviews.items():
        folder = os.path.join(root, "aclImdb", split, label)
        os.makedirs(folder, exist_ok=True)
        for i, t in enumerate(texts):
            with open(os.path.join(folder, f"{i}_{8 if label == 'pos' else 2}.txt"), "wb") as f:
                f.write(t)
    return str(root)


def cfg(data_dir, **kw):
    kw.setdefault("max_length", 32)
    return types.SimpleNamespace(data_dir=str(data_dir), **kw)


def ids_of(b: bytes, length: int) -> list[int]:
    """Hand tokenisation: byte + 1, zero-padded to length."""
    ids = [x + 1 for x in b[:length]]
    return ids + [0] * (length - len(ids))


def md5_key(split: str, key: str) -> int:
    return int(hashlib.md5((split + key).encode()).hexdigest(), 16)


# ----------------------------------------------------------------------------- tokenisation


def test_encode_hand_made_example():
    # 'H'=72, 'i'=105, ' '=32, 'é' = 0xC3 0xA9 = 195 169; id = byte + 1
    assert task.encode("Hi \u00e9", 10).tolist() == [73, 106, 33, 196, 170]
    assert task.encode(b"Hi \xc3\xa9", 3).tolist() == [73, 106, 33]
    ids, truncated = task.encode_batch([b"ab", "\u00e9\u00e9", b""], 3)
    assert ids.dtype == np.uint16 and ids.shape == (3, 3)
    assert ids.tolist() == [[98, 99, 0], [196, 170, 196], [0, 0, 0]]
    assert truncated == 1
    assert task.TASK.vocab_size == 257 and task.TASK.num_classes == 2
    assert task.TASK.max_length == 4000 and not task.TASK.two_tower


def test_all_bytes_map_to_1_to_256():
    ids = task.encode(bytes(range(256)), 300)
    assert ids.tolist() == list(range(1, 257))


# ----------------------------------------------------------------------------- aclImdb source


def test_aclimdb_splits_tokens_and_labels(tmp_path):
    make_aclimdb(tmp_path)
    splits = task.load_splits(cfg(tmp_path, max_length=16))
    assert set(splits) == {"train", "val", "test"}
    for name, n in (("train", 6), ("val", 4), ("test", 4)):
        s = splits[name]
        assert s["inputs"].shape == (n, 16) and s["inputs"].dtype == np.uint16
        assert s["targets"].dtype == np.int32 and "mask" not in s
    # Every review appears once with its label and its hand tokenisation (stripped like TFDS).
    want = {}
    for (split, label), texts in REVIEWS.items():
        for t in texts:
            want.setdefault(split, []).append((ids_of(t.strip(), 16), int(label == "pos")))
    for split in ("train", "test"):
        got = sorted(zip(splits[split]["inputs"].tolist(), splits[split]["targets"].tolist()))
        assert got == sorted(want[split])
    # The multi-byte review is cut after 16 bytes, mid-character, as bytes are the tokens.
    row = ids_of("Tr\u00e8s bien \u2014 10/10".encode(), 16)
    assert row in splits["train"]["inputs"].tolist()


def test_val_is_test_by_default(tmp_path):
    make_aclimdb(tmp_path)
    splits = task.load_splits(cfg(tmp_path))
    np.testing.assert_array_equal(splits["val"]["inputs"], splits["test"]["inputs"])
    np.testing.assert_array_equal(splits["val"]["targets"], splits["test"]["targets"])
    # The very same arrays (no copy), also when the eval splits are subsampled.
    assert splits["val"]["inputs"] is splits["test"]["inputs"]
    sub = task.load_splits(cfg(tmp_path, max_eval_examples=2))
    assert sub["val"]["inputs"] is sub["test"]["inputs"] and len(sub["val"]["targets"]) == 2


def test_aclimdb_order_is_tfds_record_order(tmp_path):
    make_aclimdb(tmp_path)
    splits = task.load_splits(cfg(tmp_path))
    for split in ("train", "test"):
        keys = [f"aclImdb/{split}/{lab}/{i}_{8 if lab == 'pos' else 2}.txt"
                for lab in ("neg", "pos") for i in range(len(REVIEWS[(split, lab)]))]
        texts = {k: REVIEWS[(split, k.split("/")[2])][int(k.split("/")[3].split("_")[0])]
                 for k in keys}
        ordered = sorted(keys, key=lambda k: md5_key(split, k))
        want = [ids_of(texts[k].strip(), 32) for k in ordered]
        assert splits[split]["inputs"].tolist() == want


def test_data_dir_may_be_the_aclimdb_folder(tmp_path):
    make_aclimdb(tmp_path)
    a = task.load_splits(cfg(tmp_path))
    b = task.load_splits(cfg(tmp_path / "aclImdb"))
    np.testing.assert_array_equal(a["train"]["inputs"], b["train"]["inputs"])


def test_val_from_train_holds_out_a_fixed_seeded_slice(tmp_path):
    make_aclimdb(tmp_path)
    a = task.load_splits(cfg(tmp_path, val_from_train=2))
    b = task.load_splits(cfg(tmp_path, val_from_train=2))
    assert len(a["train"]["targets"]) == 4 and len(a["val"]["targets"]) == 2
    np.testing.assert_array_equal(a["val"]["inputs"], b["val"]["inputs"])  # deterministic
    full = task.load_splits(cfg(tmp_path))["train"]["inputs"].tolist()
    held, kept = a["val"]["inputs"].tolist(), a["train"]["inputs"].tolist()
    assert sorted(held + kept) == sorted(full)  # a partition of train
    assert len(a["test"]["targets"]) == 4  # test untouched
    seeds = {tuple(map(tuple, task.load_splits(cfg(tmp_path, val_from_train=2, split_seed=s))
                       ["val"]["inputs"].tolist())) for s in range(6)}
    assert len(seeds) > 1  # the seed chooses the slice


@pytest.mark.parametrize("k", [-1, 6, 100])
def test_val_from_train_out_of_range(tmp_path, k):
    make_aclimdb(tmp_path)
    with pytest.raises(DataError, match="data.val_from_train"):
        task.load_splits(cfg(tmp_path, val_from_train=k))


def test_eval_subset(tmp_path):
    make_aclimdb(tmp_path)
    s = task.load_splits(cfg(tmp_path, max_eval_examples=3))
    assert len(s["val"]["targets"]) == 3 and len(s["test"]["targets"]) == 3
    np.testing.assert_array_equal(s["val"]["inputs"], s["test"]["inputs"])
    assert len(s["train"]["targets"]) == 6


def test_skipped_entries_are_logged(tmp_path, caplog):
    make_aclimdb(tmp_path)
    folder = tmp_path / "aclImdb" / "train" / "pos"
    (folder / "notes.md").write_bytes(b"x")
    (folder / ".hidden.txt").write_bytes(b"x")
    (folder / "sub").mkdir()
    with caplog.at_level(logging.WARNING, logger="luna_lra.data.text"):
        s = task.load_splits(cfg(tmp_path))
    assert len(s["train"]["targets"]) == 6
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 3 entries" in msg and "notes.md" in msg


def test_empty_and_non_utf8_reviews_are_kept_and_logged(tmp_path, caplog):
    reviews = dict(REVIEWS)
    reviews[("train", "neg")] = [b"   ", b"\xff\xfe bad bytes"]
    make_aclimdb(tmp_path, reviews)
    with caplog.at_level(logging.WARNING, logger="luna_lra.data.text"):
        s = task.load_splits(cfg(tmp_path, max_length=8))
    rows = s["train"]["inputs"].tolist()
    assert [0] * 8 in rows and ids_of(b"\xff\xfe bad bytes", 8) in rows
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "1 empty" in msg and "not valid UTF-8" in msg


def test_missing_split_folder(tmp_path):
    make_aclimdb(tmp_path)
    os.rename(tmp_path / "aclImdb" / "test" / "neg", tmp_path / "elsewhere")
    with pytest.raises(DataError, match=r"aclImdb/test/neg: folder not found"):
        task.load_splits(cfg(tmp_path))


def test_no_data_says_where_files_are_expected(tmp_path):
    with pytest.raises(DataError) as e:
        task.load_splits(cfg(tmp_path))
    msg = str(e.value)
    assert "aclImdb" in msg and "imdb_reviews" in msg and "data_prep.text" in msg


def test_bad_source_and_max_length(tmp_path):
    make_aclimdb(tmp_path)
    with pytest.raises(DataError, match="data.source"):
        task.load_splits(cfg(tmp_path, source="csv"))
    with pytest.raises(DataError, match="data.max_length"):
        task.load_splits(cfg(tmp_path, max_length=-3))


# ----------------------------------------------------------------------------- TFDS source


def test_tfds_source_under_mock_data(tmp_path):
    """tfds.data_source works here without TensorFlow; mock_data returns random examples."""
    with tfds.testing.mock_data(num_examples=7):
        splits = task.load_splits(cfg(tmp_path, source="tfds", max_length=24))
        records = [tfds.data_source("imdb_reviews", split="train")[i] for i in range(7)]
    assert splits["train"]["inputs"].shape == (7, 24)
    assert splits["train"]["inputs"].dtype == np.uint16
    assert set(splits["train"]["targets"].tolist()) <= {0, 1}
    np.testing.assert_array_equal(splits["val"]["inputs"], splits["test"]["inputs"])
    for rec, row in zip(records, splits["train"]["inputs"].tolist()):
        text = rec["text"].encode() if isinstance(rec["text"], str) else rec["text"]
        assert row == ids_of(text, 24)


def _fake_tfds_imdb(data_dir, acl_root):
    """Writes a real TFDS imdb_reviews (array_record) from an aclImdb tree, through the real
    builder's _generate_examples (fed the tree as its archive), without downloading."""
    from tensorflow_datasets.datasets.imdb_reviews import imdb_reviews_dataset_builder as imdb

    def archive():
        for dirpath, _, files in os.walk(acl_root):
            for name in files:
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, os.path.dirname(acl_root)).replace(os.sep, "/")
                yield rel, io.BytesIO(open(path, "rb").read())

    with tfds.core.registered.skip_registration():
        class FakeImdb(imdb.Builder):
            name = "imdb_reviews"

            @classmethod
            def _get_pkg_dir_path(cls):
                return imdb.Builder._get_pkg_dir_path()

            def _split_generators(self, dl_manager):
                return {s: self._generate_examples(archive(), os.path.join("aclImdb", s))
                        for s in ("train", "test")}

        FakeImdb(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def test_real_tfds_array_record_matches_aclimdb(tmp_path):
    acl = tmp_path / "acl"
    make_aclimdb(acl)
    _fake_tfds_imdb(tmp_path / "tfds", str(acl / "aclImdb"))
    assert task.tfds_prepared(str(tmp_path / "tfds"))
    a = task.load_splits(cfg(acl, source="aclimdb"))
    b = task.load_splits(cfg(tmp_path / "tfds"))  # auto -> tfds
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a[split]["inputs"], b[split]["inputs"])
        np.testing.assert_array_equal(a[split]["targets"], b[split]["targets"])


def test_tfds_source_missing(tmp_path):
    with pytest.raises(DataError, match="imdb_reviews.*data_prep.text"):
        task.load_splits(cfg(tmp_path, source="tfds"))


# ----------------------------------------------------------------------------- data_prep + configs


def test_prepare_from_archive_and_check(tmp_path, capsys):
    src = tmp_path / "src"
    make_aclimdb(src)
    (src / "aclImdb" / "train" / "unsup").mkdir()
    (src / "aclImdb" / "train" / "unsup" / "0_0.txt").write_bytes(b"no label")
    (src / "aclImdb" / "imdb.vocab").write_bytes(b"the\n")
    archive = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "aclImdb", arcname="aclImdb")
    out = tmp_path / "out"
    assert prep.main(["--source", "aclimdb", "--archive", str(archive), "--out", str(out)]) == 0
    assert not (out / "aclImdb" / "train" / "unsup").exists()
    assert not (out / "aclImdb" / "imdb.vocab").exists()
    printed = capsys.readouterr().out
    assert "unpacked 10 reviews" in printed
    assert "[aclimdb] train: 6 reviews, labels (0 neg, 1 pos) 0: 3, 1: 3" in printed
    assert "[aclimdb] test: 4 reviews" in printed


def test_check_reports_missing(tmp_path, capsys):
    assert prep.main(["--check", str(tmp_path)]) == 1
    printed = capsys.readouterr().out
    assert "aclImdb" in printed and "imdb_reviews" in printed


def _config(variant):
    from luna_lra import config as config_lib

    return config_lib.load(os.path.join(REPO, "configs/text.py") + f":{variant}")


def test_config_variants():
    c = _config("luna256")
    assert (c.model.num_layers, c.model.emb_dim, c.model.mlp_dim, c.model.num_heads) == (4, 256, 1024, 4)
    assert c.model.proj_len == 256 and c.model.init == "bert" and c.model.classifier_dim == 1024
    assert (c.optim.learning_rate, c.optim.warmup_steps, c.train.num_steps) == (5e-5, 8000, 20000)
    assert c.data.max_length == 4000
    assert _config("luna16").model.proj_len == 16
    t = _config("transformer")
    assert t.model.name == "transformer"
    assert t.optim.learning_rate == pytest.approx(0.05 / 8000**0.5) and t.optim.weight_decay == 0.1
    assert _config("tiny").data.max_length == 256
    with pytest.raises(ValueError, match="unknown variant"):  # a ConfigError
        _config("luna7")


@pytest.mark.slow
def test_train_cli_tiny_end_to_end(tmp_path):
    data = tmp_path / "data"
    make_aclimdb(data)
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "luna_lra.train", "--config", "configs/text.py:tiny",
           "--workdir", str(work), f"--config.data.data_dir={data}",
           "--config.train.num_steps=3", "--config.train.results_dir=",
           "--config.data.max_length=32", "--config.data.batch_size=4",
           "--config.data.eval_batch_size=4", "--config.train.progress_bar=False"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((work / "result.json").read_text())
    for key in ("test_accuracy", "val_accuracy", "step", "config"):
        assert key in result
    assert result["step"] == 3 and result["config"]["data"]["task"] == "text"
    assert 0.0 <= result["test_accuracy"] <= 1.0
