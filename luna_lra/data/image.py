"""Image (LRA): CIFAR-10 in grey levels as a sequence of 1,024 pixel tokens, 10 classes.

Pixels: each 32x32 RGB image is turned grey exactly as LRA does it
(lra_benchmarks/image/input_pipeline.py: tf.cast(tf.image.rgb_to_grayscale(image), tf.int32)).
For uint8 input, tf.image.rgb_to_grayscale computes, in float32,

    grey = uint8( ( (R/255)*0.2989 + (G/255)*0.5870 + (B/255)*0.1140 ) * 255.5 )

i.e. each channel is scaled by (1/255) (convert_image_dtype), the weighted sum is taken, and the
result is scaled by 255.5 and truncated toward zero (convert_image_dtype back to uint8). This is
*not* rounding of the luma to the nearest integer: pure green (0, 255, 0) has luma 149.685 and
becomes 149, (2, 0, 0) becomes 0. `rgb_to_grey` below reproduces TensorFlow 2.21's CPU result
bit for bit on all 2^24 RGB triples (checked once against TensorFlow in a separate environment).
The image is then flattened row by row to 1,024 tokens with values 0..255 (vocabulary 256).

Padding: LRA's models treat token 0 as padding (`inputs > 0` masks), so black pixels are masked
out there. Here that quirk is off by default: every split carries an explicit all-True `mask`.
`data.zero_is_padding = True` restores LRA's behaviour (mask = pixel != 0).

Splits (LRA: tfds 'train[:90%]', 'train[90%:]', 'test'): the 50,000 training images in TFDS's
record order, the first round(0.9 * 50,000) = 45,000 for train and the last 5,000 for val, and
the 10,000 test images for test.

Sources (`data.source`):
  'tfds'    tfds.data_source('cifar10', data_dir=data.data_dir): TFDS's cifar10 prepared in
            array_record format (reading needs no TensorFlow; preparing does, for PNG encoding:
            `python -m data_prep.image --source tfds --out DIR`, or `python -m data_prep.fetch
            --tasks image` into data/image).
  'pickle'  the unpacked python release (cifar-10-python.tar.gz): cifar-10-batches-py/
            data_batch_1..5 and test_batch under data.data_dir (or data.data_dir pointing at
            cifar-10-batches-py itself); each a pickled dict with b'data' (uint8 [n, 3072], the R,
            G and B planes of 32x32 one after the other) and b'labels' (n ints 0..9). The images
            are put in TFDS's record order (TFDS keys its cifar10 records by their index in
            data_batch_1..5 / test_batch and stores them sorted by md5(split + key)), so the
            45,000/5,000 split is LRA's, assuming the python and binary CIFAR releases list the
            images in the same order.
  'auto'    (default) 'pickle' if the pickles are there, else 'tfds' if TFDS's prepared cifar10
            is there, else an error saying where the files are expected.

Optional data_cfg fields (defaults in DEFAULTS): source, zero_is_padding, split_seed,
max_train_examples / max_eval_examples (0 = all; otherwise a seeded random subset).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from typing import Any

import numpy as np

from luna_lra.data import DataError, Splits, TaskInfo
from luna_lra.data.download import extract_members
from luna_lra.data.splits import split_limits, subsample
from luna_lra.data.tfds_source import (open_tfds, read_all, resolve_source as _resolve,
                                       tfds_order, tfds_prepared as _tfds_prepared)

TASK = TaskInfo(name="image", num_classes=10, vocab_size=256, max_length=1024)

SIDE = 32
NUM_PIXELS = SIDE * SIDE
TRAIN_FRACTION_PCT = 90  # LRA: train[:90%] / train[90%:]
TFDS_NAME = "cifar10"
PICKLE_DIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
SOURCES = ("auto", "tfds", "pickle")
PREPARE_HINT = "python -m data_prep.image --out DIR"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_PICKLE_MEMBER = re.compile(r"cifar-10-batches-py/(data_batch_[1-5]|test_batch|batches\.meta)")
GREY_WEIGHTS = np.asarray([0.2989, 0.5870, 0.1140], dtype=np.float32)  # tf.image.rgb_to_grayscale

DEFAULTS: dict[str, Any] = {
    "source": "auto",
    "zero_is_padding": False,
    "split_seed": 0,
    "max_train_examples": 0,
    "max_eval_examples": 0,
}

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- pixels


def rgb_to_grey(images: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] RGB -> uint8 [...] grey, as tf.image.rgb_to_grayscale on uint8 input."""
    if images.dtype != np.uint8 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 [..., 3] RGB, got {images.dtype} {images.shape}")
    f = images.astype(np.float32) * np.float32(1.0 / 255)
    grey = f[..., 0] * GREY_WEIGHTS[0] + f[..., 1] * GREY_WEIGHTS[1] + f[..., 2] * GREY_WEIGHTS[2]
    return (grey * np.float32(255.5)).astype(np.uint8)


def to_tokens(images: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """uint8 [N, 32, 32, 3] -> uint8 [N, 1024] grey pixel tokens, row by row."""
    out = np.empty((len(images), NUM_PIXELS), dtype=np.uint8)
    for start in range(0, len(images), chunk):  # bounded float32 temporaries
        block = images[start:start + chunk]
        out[start:start + len(block)] = rgb_to_grey(block).reshape(len(block), NUM_PIXELS)
    return out


# ----------------------------------------------------------------------------- pickles


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes, numbers and numpy arrays; refuses any other object."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_pickle_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [n, 32, 32, 3] RGB images, int32 [n] labels) of one CIFAR-10 python batch file."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; expected a CIFAR-10 python batch from "
                        f"cifar-10-python.tar.gz (python -m data_prep.image --source pickle "
                        f"--out DIR)") from None
    except Exception as e:  # unpickling errors come in many types
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict with b'data' and b'labels', got "
                        f"{type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path}: expected keys b'data' and b'labels', got "
                        f"{sorted(map(repr, batch))}")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * NUM_PIXELS:
        raise DataError(f"{path}: b'data' is {data.dtype} {list(data.shape)}; expected uint8 "
                        f"[n, {3 * NUM_PIXELS}] (R, G, B planes of {SIDE}x{SIDE})")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: b'labels' is not a list of integers") from None
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but b'labels' has shape "
                        f"{list(labels.shape)}; expected [{len(data)}]")
    if len(labels) and (labels.min() < 0 or labels.max() >= TASK.num_classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= TASK.num_classes))[0])
        raise DataError(f"{path}: label {int(labels[bad])} at index {bad}; expected 0..9")
    images = data.reshape(len(data), 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return images, labels.astype(np.int32)


def find_pickle_dir(data_dir: str) -> str | None:
    for d in (os.path.join(data_dir, PICKLE_DIR), data_dir):
        if os.path.isfile(os.path.join(d, TEST_FILE)) or os.path.isfile(
                os.path.join(d, TRAIN_FILES[0])):
            return d
    return None


def unpack_pickles(archive: str, out: str, progress: bool = False) -> int:
    """Writes cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} of
    cifar-10-python.tar.gz under out; returns how many files it wrote."""
    return extract_members(archive, out, lambda n: n if _PICKLE_MEMBER.fullmatch(n) else None,
                           progress)


def read_pickle_split(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(grey tokens uint8 [N, 1024], labels int32 [N]) of 'train' (data_batch_1..5, 50,000
    images) or 'test' (test_batch), in TFDS's record order."""
    files = TRAIN_FILES if split == "train" else (TEST_FILE,)
    parts = [read_pickle_batch(os.path.join(folder, name)) for name in files]
    tokens = np.concatenate([to_tokens(images) for images, _ in parts])
    labels = np.concatenate([labels for _, labels in parts])
    order = tfds_order(range(len(labels)), split)  # TFDS keys: the running index
    return tokens[order], labels[order]


# ----------------------------------------------------------------------------- TFDS


def tfds_prepared(data_dir: str) -> bool:
    return _tfds_prepared(data_dir, TFDS_NAME)


def read_tfds_split(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    records = read_all(open_tfds(TFDS_NAME, split, data_dir, PREPARE_HINT))
    where = f"TFDS {TFDS_NAME} {split} in {data_dir or '~/tensorflow_datasets'}"
    if not records:
        raise DataError(f"{where}: the split is empty")
    images = np.zeros((len(records), SIDE, SIDE, 3), dtype=np.uint8)
    labels = np.zeros(len(records), dtype=np.int32)
    for i, rec in enumerate(records):
        try:
            image, label = np.asarray(rec["image"]), int(rec["label"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}, record {i}: expected features 'image' and 'label'") from None
        if image.shape != (SIDE, SIDE, 3) or image.dtype != np.uint8:
            raise DataError(f"{where}, record {i}: image is {image.dtype} {list(image.shape)}; "
                            f"expected uint8 [{SIDE}, {SIDE}, 3]")
        if not 0 <= label < TASK.num_classes:
            raise DataError(f"{where}, record {i}: label {label}; expected 0..9")
        images[i], labels[i] = image, label
    return to_tokens(images), labels


# ----------------------------------------------------------------------------- splits


def resolve_source(data_cfg: Any) -> tuple[str, str]:
    return _resolve(data_cfg, SOURCES, find_pickle_dir, tfds_prepared, _missing_message)


def _missing_message(data_dir: str) -> str:
    return (
        f"config field data.data_dir: no CIFAR-10 in {data_dir or '(unset)'!s}; expected either "
        f"the unpacked python release {os.path.join(data_dir, PICKLE_DIR)}/"
        f"{{data_batch_1..5,test_batch}} (data.source='pickle') or TFDS's prepared "
        f"{os.path.join(data_dir, TFDS_NAME)}/<version>/ in array_record format "
        f"(data.source='tfds'). Make one with: python -m data_prep.image --source pickle --out "
        f"DIR [--archive cifar-10-python.tar.gz], or {PREPARE_HINT} (TFDS; needs TensorFlow and "
        f"a network)")


def read_raw_splits(data_cfg: Any) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(source, {'train'|'test': (grey tokens uint8 [N, 1024], labels)}) in TFDS order."""
    source, data_dir = resolve_source(data_cfg)
    if source == "pickle":
        folder = find_pickle_dir(data_dir) if data_dir else None
        if folder is None:
            raise DataError(
                f"{os.path.join(data_dir, PICKLE_DIR, TEST_FILE)}: file not found; expected the "
                f"unpacked {PICKLE_DIR}/ (data_batch_1..5, test_batch) under data.data_dir="
                f"{data_dir!r}")
        return source, {s: read_pickle_split(folder, s) for s in ("train", "test")}
    return source, {s: read_tfds_split(data_dir, s) for s in ("train", "test")}


def lra_train_val_boundary(num_train: int) -> int:
    """Index where TFDS's 'train[90%:]' starts (TFDS rounds percent boundaries to closest)."""
    return int(round(TRAIN_FRACTION_PCT * num_train / 100.0))


def load_splits(data_cfg: Any) -> Splits:
    """{'train'|'val'|'test': {'inputs': uint8 [N, 1024], 'mask': bool [N, 1024],
    'targets': int32 [N]}}."""
    max_length = int(getattr(data_cfg, "max_length", 0) or TASK.max_length)
    if max_length != NUM_PIXELS:
        raise DataError(f"config field data.max_length: {max_length}; the image task has exactly "
                        f"{NUM_PIXELS} pixel tokens")
    zero_is_padding = bool(getattr(data_cfg, "zero_is_padding", DEFAULTS["zero_is_padding"]))
    seed = int(getattr(data_cfg, "split_seed", DEFAULTS["split_seed"]))
    source, raw = read_raw_splits(data_cfg)

    train_tokens, train_labels = raw["train"]
    cut = lra_train_val_boundary(len(train_labels))
    if not 0 < cut < len(train_labels):
        raise DataError(f"CIFAR-10 train has {len(train_labels)} images: too few to split "
                        f"{TRAIN_FRACTION_PCT}% / {100 - TRAIN_FRACTION_PCT}% into train and val")
    parts = {
        "train": (train_tokens[:cut], train_labels[:cut]),
        "val": (train_tokens[cut:], train_labels[cut:]),
        "test": raw["test"],
    }
    limits = split_limits(data_cfg)
    splits: Splits = {}
    for name, (tokens, labels) in parts.items():
        if zero_is_padding:
            mask = tokens != 0
        else:  # every pixel is a real token; a broadcast view costs no memory
            mask = np.broadcast_to(np.ones((1, NUM_PIXELS), dtype=bool), tokens.shape)
        counts = np.bincount(labels, minlength=TASK.num_classes)
        log.info("image %s: %d images from %s, per class %s, %.2f%% of pixels are 0 (%s)", name,
                 len(labels), source, counts.tolist(), 100.0 * float(np.mean(tokens == 0)),
                 "masked as padding: data.zero_is_padding" if zero_is_padding else "kept")
        split = {"inputs": tokens, "mask": mask, "targets": labels}
        splits[name] = subsample(split, limits[name], seed, f"image {name}")
    if len(train_labels) != 50_000 or len(raw["test"][1]) != 10_000:
        log.warning("image: %d train and %d test images; the full CIFAR-10 has 50,000 and 10,000",
                    len(train_labels), len(raw["test"][1]))
    return splits
