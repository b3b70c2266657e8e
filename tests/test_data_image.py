"""Image (CIFAR-10 grey, 1,024 pixel tokens): luna_lra.data.image, data_prep.image and
configs/image.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import image as prep
from luna_lra.data import DataError
from luna_lra.data import image as task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PER_BATCH = 20  # images per data_batch_i in the small test sets (the real files hold 10,000)


def make_images(n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    images[:, 0, :4] = 0  # some black pixels in every image
    labels = rng.integers(0, 10, n)
    return images, labels


def to_pickle_dict(images, labels):
    """The original layout: b'data' uint8 [n, 3072] = R plane, G plane, B plane (row-major)."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    return {b"batch_label": b"testing batch", b"labels": [int(x) for x in labels],
            b"data": data, b"filenames": [b"img_%d.png" % i for i in range(len(images))]}


def make_pickles(root, per_batch=PER_BATCH, test_n=12):
    """cifar-10-batches-py/{data_batch_1..5,test_batch}; returns (train images, labels, test
    images, labels) in file order."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    train_images, train_labels = make_images(5 * per_batch, seed=1)
    for i in range(5):
        sl = slice(i * per_batch, (i + 1) * per_batch)
        with open(os.path.join(folder, f"data_batch_{i + 1}"), "wb") as f:
            pickle.dump(to_pickle_dict(train_images[sl], train_labels[sl]), f)
    test_images, test_labels = make_images(test_n, seed=2)
    with open(os.path.join(folder, "test_batch"), "wb") as f:
        pickle.dump(to_pickle_dict(test_images, test_labels), f)
    return train_images, train_labels, test_images, test_labels


def cfg(data_dir, **kw):
    kw.setdefault("max_length", 1024)
    return types.SimpleNamespace(data_dir=str(data_dir), **kw)


def hand_grey(r, g, b):
    """tf.image.rgb_to_grayscale on uint8, by hand in float32: scale to [0, 1], weigh, scale
    by 255.5, truncate."""
    f32 = np.float32
    s = f32(1.0 / 255)
    v = (f32(r) * s) * f32(0.2989) + (f32(g) * s) * f32(0.5870)
    v = v + (f32(b) * s) * f32(0.1140)
    return int(v * f32(255.5))


def tfds_order(n, split):
    return sorted(range(n), key=lambda i: int(hashlib.md5(f"{split}{i}".encode()).hexdigest(), 16))


# ----------------------------------------------------------------------------- pixels


@pytest.mark.parametrize("rgb,grey", [
    ((0, 0, 0), 0), ((255, 255, 255), 255), ((255, 0, 0), 76), ((0, 0, 255), 29),
    ((0, 255, 0), 149),  # luma 149.685: truncation, not rounding (150)
    ((2, 0, 0), 0),  # luma 0.598 -> 0
    ((100, 150, 200), 141),
])
def test_grey_hand_computed(rgb, grey):
    assert hand_grey(*rgb) == grey
    assert task.rgb_to_grey(np.asarray([[rgb]], np.uint8)).item() == grey


# Values from tf.image.rgb_to_grayscale (TensorFlow 2.21, CPU), chosen where float64
# arithmetic or a different summation order gives another result.
TF_REFERENCE = [((0, 122, 186), 93), ((3, 121, 122), 86), ((3, 254, 50), 156),
                ((5, 171, 227), 128), ((6, 120, 58), 79), ((6, 242, 244), 172),
                ((9, 241, 180), 165), ((11, 169, 99), 114), ((94, 116, 93), 106),
                ((103, 143, 158), 133), ((118, 127, 96), 121), ((129, 174, 9), 142),
                ((131, 224, 114), 184), ((139, 139, 163), 142), ((146, 249, 51), 196)]


def test_grey_matches_tensorflow_on_tricky_pixels():
    rgb = np.asarray([[c for c, _ in TF_REFERENCE]], np.uint8)
    assert task.rgb_to_grey(rgb)[0].tolist() == [g for _, g in TF_REFERENCE]
    assert [hand_grey(*c) for c, _ in TF_REFERENCE] == [g for _, g in TF_REFERENCE]


def test_grey_all_values_against_hand_formula():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5000, 3), dtype=np.uint8)
    assert task.rgb_to_grey(rgb).tolist() == [hand_grey(*c) for c in rgb.tolist()]


def test_tokens_are_row_major():
    img = np.zeros((1, 32, 32, 3), np.uint8)
    img[0, 1, 2] = (255, 255, 255)  # row 1, column 2
    img[0, 31, 0] = (0, 255, 0)
    tokens = task.to_tokens(img)
    assert tokens.shape == (1, 1024) and tokens.dtype == np.uint8
    assert tokens[0, 1 * 32 + 2] == 255 and tokens[0, 31 * 32] == 149
    assert np.count_nonzero(tokens) == 2


# ----------------------------------------------------------------------------- pickles


def test_pickle_splits_follow_lra(tmp_path):
    train_images, train_labels, test_images, test_labels = make_pickles(tmp_path)
    splits = task.load_splits(cfg(tmp_path))
    n = 5 * PER_BATCH
    cut = int(round(90 * n / 100.0))
    assert [len(splits[k]["targets"]) for k in ("train", "val", "test")] == [cut, n - cut, 12]
    order = tfds_order(n, "train")  # TFDS's record order of the training images
    want_tokens = task.to_tokens(train_images)[order]
    np.testing.assert_array_equal(splits["train"]["inputs"], want_tokens[:cut])
    np.testing.assert_array_equal(splits["val"]["inputs"], want_tokens[cut:])
    np.testing.assert_array_equal(splits["train"]["targets"], train_labels[order][:cut])
    np.testing.assert_array_equal(splits["val"]["targets"], train_labels[order][cut:])
    test_order = tfds_order(12, "test")
    np.testing.assert_array_equal(splits["test"]["inputs"], task.to_tokens(test_images)[test_order])
    np.testing.assert_array_equal(splits["test"]["targets"], test_labels[test_order])
    for s in splits.values():
        assert s["inputs"].dtype == np.uint8 and s["targets"].dtype == np.int32
        assert s["inputs"].shape[1] == 1024


def test_lra_boundary_for_the_full_dataset():
    assert task.lra_train_val_boundary(50_000) == 45_000


def test_mask_all_true_by_default_and_zero_is_padding(tmp_path):
    make_pickles(tmp_path)
    plain = task.load_splits(cfg(tmp_path))
    quirk = task.load_splits(cfg(tmp_path, zero_is_padding=True))
    for name in ("train", "val", "test"):
        mask = plain[name]["mask"]
        assert mask.shape == plain[name]["inputs"].shape and mask.dtype == bool and mask.all()
        np.testing.assert_array_equal(quirk[name]["mask"], quirk[name]["inputs"] != 0)
        assert not quirk[name]["mask"].all()  # the black corner pixels are masked
        np.testing.assert_array_equal(quirk[name]["inputs"], plain[name]["inputs"])


def test_data_dir_may_be_the_pickle_folder(tmp_path):
    make_pickles(tmp_path)
    a = task.load_splits(cfg(tmp_path))
    b = task.load_splits(cfg(tmp_path / "cifar-10-batches-py"))
    np.testing.assert_array_equal(a["test"]["inputs"], b["test"]["inputs"])


def test_eval_subsets(tmp_path):
    make_pickles(tmp_path)
    s = task.load_splits(cfg(tmp_path, max_eval_examples=5))
    assert [len(s[k]["targets"]) for k in ("train", "val", "test")] == [90, 5, 5]
    assert s["test"]["mask"].shape == (5, 1024)


def _rewrite(path, changes):
    with open(path, "rb") as f:
        d = pickle.load(f)
    d.update(changes)
    with open(path, "wb") as f:
        pickle.dump(d, f)


@pytest.mark.parametrize("change,pattern", [
    ({b"data": np.zeros((PER_BATCH, 3000), np.uint8)}, r"b'data' is uint8 \[20, 3000\]"),
    ({b"data": np.zeros((PER_BATCH, 3072), np.float32)}, r"b'data' is float32"),
    ({b"labels": [0] * (PER_BATCH - 1)}, r"20 images but b'labels' has shape \[19\]"),
    ({b"labels": [10] * PER_BATCH}, r"label 10 at index 0; expected 0\.\.9"),
])
def test_bad_pickle_contents_name_the_file(tmp_path, change, pattern):
    make_pickles(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    _rewrite(path, change)
    with pytest.raises(DataError, match=pattern) as e:
        task.load_splits(cfg(tmp_path))
    assert str(path) in str(e.value)


def test_missing_batch_file(tmp_path):
    make_pickles(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_4"
    os.remove(path)
    with pytest.raises(DataError, match=f"{path}: file not found"):
        task.load_splits(cfg(tmp_path))


def test_not_a_pickle_or_not_a_dict(tmp_path):
    make_pickles(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"{path}: not a CIFAR-10 python batch"):
        task.load_splits(cfg(tmp_path))
    with open(path, "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(DataError, match=f"{path}: expected a pickled dict"):
        task.load_splits(cfg(tmp_path))
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8)}, f)
    with pytest.raises(DataError, match=f"{path}: expected keys b'data' and b'labels'"):
        task.load_splits(cfg(tmp_path))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_other_objects_is_refused(tmp_path):
    make_pickles(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    with open(path, "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match="refusing to load"):
        task.load_splits(cfg(tmp_path))


def test_max_length_must_be_1024(tmp_path):
    make_pickles(tmp_path)
    with pytest.raises(DataError, match="exactly 1024"):
        task.load_splits(cfg(tmp_path, max_length=256))


def test_no_data_says_where_files_are_expected(tmp_path):
    with pytest.raises(DataError) as e:
        task.load_splits(cfg(tmp_path))
    assert "cifar-10-batches-py" in str(e.value) and "cifar10" in str(e.value)


# ----------------------------------------------------------------------------- TFDS


def test_tfds_source_under_mock_data(tmp_path):
    """tfds.data_source works here without TensorFlow; mock_data returns random images (and
    ignores split slicing, so our own 90/10 split is what is checked)."""
    with tfds.testing.mock_data(num_examples=20):
        splits = task.load_splits(cfg(tmp_path, source="tfds"))
        train = tfds.data_source("cifar10", split="train")
        images = np.stack([train[i]["image"] for i in range(20)])
    assert [len(splits[k]["targets"]) for k in ("train", "val", "test")] == [18, 2, 20]
    tokens = task.to_tokens(images)
    np.testing.assert_array_equal(splits["train"]["inputs"], tokens[:18])
    np.testing.assert_array_equal(splits["val"]["inputs"], tokens[18:])
    assert splits["train"]["inputs"].dtype == np.uint8
    assert splits["train"]["mask"].all()
    assert set(splits["test"]["targets"].tolist()) <= set(range(10))


def _fake_tfds_cifar10(data_dir, train_images, train_labels, test_images, test_labels):
    """A real TFDS cifar10 (array_record) keyed as TFDS keys it (the running index), images
    given as PNG bytes so that no TensorFlow is needed."""
    from PIL import Image
    from tensorflow_datasets.image_classification import cifar

    def gen(prefix, images, labels):
        for i, (img, lab) in enumerate(zip(images, labels)):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            yield i, {"id": f"{prefix}{i:05d}", "image": buf.getvalue(), "label": int(lab)}

    with tfds.core.registered.skip_registration():
        class FakeCifar10(cifar.Cifar10):
            name = "cifar10"

            @classmethod
            def _get_pkg_dir_path(cls):
                return cifar.Cifar10._get_pkg_dir_path()

            def _split_generators(self, dl_manager):
                return {"train": gen("train_", train_images, train_labels),
                        "test": gen("test_", test_images, test_labels)}

        FakeCifar10(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def test_real_tfds_array_record_matches_pickles(tmp_path):
    arrays = make_pickles(tmp_path / "pickles")
    _fake_tfds_cifar10(tmp_path / "tfds", *arrays)
    assert task.tfds_prepared(str(tmp_path / "tfds"))
    a = task.load_splits(cfg(tmp_path / "pickles"))
    b = task.load_splits(cfg(tmp_path / "tfds"))  # auto -> tfds
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a[split]["inputs"], b[split]["inputs"])
        np.testing.assert_array_equal(a[split]["targets"], b[split]["targets"])
    # ... and the val split is what tfds itself calls 'train[90%:]'.
    ds = tfds.data_source("cifar10", split="train[90%:]", data_dir=str(tmp_path / "tfds"))
    got = task.to_tokens(np.stack([ds[i]["image"] for i in range(len(ds))]))
    np.testing.assert_array_equal(got, a["val"]["inputs"])


def test_tfds_source_missing(tmp_path):
    with pytest.raises(DataError, match="cifar10.*data_prep.image"):
        task.load_splits(cfg(tmp_path, source="tfds"))


# ----------------------------------------------------------------------------- data_prep + configs


def test_prepare_from_archive_and_check(tmp_path, capsys):
    make_pickles(tmp_path / "src")
    (tmp_path / "src" / "cifar-10-batches-py" / "readme.html").write_bytes(b"<html>")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    out = tmp_path / "out"
    assert prep.main(["--archive", str(archive), "--out", str(out)]) == 0
    assert not (out / "cifar-10-batches-py" / "readme.html").exists()
    printed = capsys.readouterr().out
    assert "unpacked 6 files" in printed
    assert "[pickle] train: 90 images" in printed and "[pickle] val: 10 images" in printed
    assert "[pickle] test: 12 images" in printed


def test_check_reports_missing(tmp_path, capsys):
    assert prep.main(["--check", str(tmp_path)]) == 1
    assert "cifar-10-batches-py" in capsys.readouterr().out


def _config(variant):
    from luna_lra import config as config_lib

    return config_lib.load(os.path.join(REPO, "configs/image.py") + f":{variant}")


def test_config_variants():
    c = _config("luna256")
    assert (c.model.num_layers, c.model.emb_dim, c.model.mlp_dim, c.model.num_heads) == (1, 64, 128, 8)
    assert c.model.classifier_dim == 128 and not c.model.append_eos
    assert (c.optim.learning_rate, c.optim.warmup_steps, c.train.num_steps) == (0.005, 4000, 35000)
    assert c.data.batch_size == 256 and c.data.zero_is_padding is False
    t = _config("transformer")
    assert (t.model.num_layers, t.model.emb_dim, t.model.num_heads) == (1, 128, 8)
    assert t.optim.schedule == "cosine" and t.optim.warmup_steps == 175


@pytest.mark.slow
def test_train_cli_tiny_end_to_end(tmp_path):
    data = tmp_path / "data"
    make_pickles(data, per_batch=4, test_n=6)
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "luna_lra.train", "--config", "configs/image.py:tiny",
           "--workdir", str(work), f"--config.data.data_dir={data}",
           "--config.train.num_steps=2", "--config.train.results_dir=",
           "--config.data.batch_size=4", "--config.data.eval_batch_size=4",
           "--config.train.progress_bar=False"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((work / "result.json").read_text())
    for key in ("test_accuracy", "val_accuracy", "step", "config"):
        assert key in result
    assert result["step"] == 2 and result["config"]["data"]["task"] == "image"
