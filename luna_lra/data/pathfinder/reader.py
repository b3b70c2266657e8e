"""Pathfinder and Path-X (LRA): is there a path between the two circles? Binary classification
of an image read as a sequence of pixel tokens.

Pathfinder (LRA's "Path") is the 32 x 32 hard level: 1,024 tokens. Path-X is the 128 x 128 hard
level: 16,384 tokens. Any of the release's resolutions (32, 64, 128, 256) and levels works.

Files (the LRA release layout, read unchanged): a level folder
`<level_dir>/metadata/<batch>.npy` + `<level_dir>/imgs/<batch>/sample_<i>.png`, where
<level_dir> is `curv_baseline` (data.level='easy'), `curv_contour_length_9` ('intermediate') or
`curv_contour_length_14` ('hard'), found as data_dir/<level_dir> (data_dir = e.g.
lra_release/pathfinder32) or data_dir/pathfinder<resolution>/<level_dir> (data_dir =
lra_release). In the release the metadata ".npy" files are text, one line per image:

    imgs/<batch> sample_<i>.png <i> <label> <continuity> <contour length> ...

of which the image path (fields 1 and 2) and the label (field 4, 0 or 1) are used; fields 3
(index) must be an integer. A real NumPy .npy holding the same rows as strings (what the
original generator's np.save writes) is read too. Make data with
`python -m data_prep.pathfinder` (same layout; see `generator` and `writer`), or set
data.generate_if_missing.

Reading: metadata files in numeric batch order, lines in file order; every PNG is decoded as
8-bit grey (palette / RGB(A) / LA images are converted) and must be resolution x resolution;
it becomes resolution**2 pixel tokens (values 0..255, vocab 256), row-major. Split: LRA's
in-order 80 / 10 / 10: train = the first round(0.8 N) images, val up to round(0.9 N), test the
rest.

Pixel value 0 (black background) is a real token, not padding: each split carries an all-True
'mask' (a broadcast view: no memory). data.zero_is_padding=True drops it, so the pipeline masks
token 0 as LRA's code does (its models treat id 0 as padding).

Bad input raises DataError naming the file and (1-based) line: a missing level folder or
metadata folder, a malformed metadata line, a line pointing at a missing image, an unreadable
or wrongly sized PNG (check_level, behind `data_prep.pathfinder --check`, decodes every image
the same way and reports each kind of problem). Nothing is dropped silently: with
data.skip_bad_images=True (default False) missing and unreadable images are skipped instead,
counted and logged (LRA's pipeline drops empty image files; the pathfinder32 release has at
least one).

No decoded-array cache is kept: decoding runs on a thread pool at roughly 0.2 ms per
128 x 128 PNG per core, so Path-X's 200k images take about a minute.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from luna_lra.data import DataError, Splits, TaskInfo
from luna_lra.data.pathfinder import writer
from luna_lra.data.pathfinder.generator import LEVEL_DIRS, RESOLUTIONS

TASK = TaskInfo(name="pathfinder", num_classes=2, vocab_size=256, max_length=32 * 32)

SPLITS = ("train", "val", "test")
MAKE_HINT = "python -m data_prep.pathfinder --out DIR --resolution R --level L --num_images N"
_CONVERTIBLE_MODES = ("1", "P", "LA", "RGB", "RGBA", "La", "RGBa", "PA")
_NPY_MAGIC = b"\x93NUMPY"

# Defaults of the data_cfg fields read by prepare_if_missing.
GENERATE_DEFAULTS: dict[str, int] = {
    "generate_num_images": 2000,
    "generate_seed": 0,
    "generate_batch_size": 1000,
    "generate_workers": 0,  # 0 = all cores
}

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- locating


def level_dir_name(level: str) -> str:
    """'easy' | 'intermediate' | 'hard' (or a release folder name) -> the release folder."""
    if level in LEVEL_DIRS:
        return LEVEL_DIRS[level]
    if level in LEVEL_DIRS.values():
        return level
    raise DataError(f"config field data.level: {level!r}; expected one of "
                    f"{sorted(LEVEL_DIRS)} (release folders {sorted(LEVEL_DIRS.values())})")


def _resolution(data_cfg: Any) -> int:
    res = int(getattr(data_cfg, "resolution", 32))
    if res not in RESOLUTIONS:
        raise DataError(f"config field data.resolution: {res}; expected one of {RESOLUTIONS}")
    return res


def _data_dir(data_cfg: Any) -> str:
    data_dir = getattr(data_cfg, "data_dir", None)
    if not data_dir:
        raise DataError("config field data.data_dir: not set; expected a Pathfinder folder "
                        f"(e.g. lra_release/pathfinder32), made with: {MAKE_HINT}")
    return os.fspath(data_dir)


def candidate_level_dirs(data_dir: str, resolution: int, level: str) -> list[str]:
    name = level_dir_name(level)
    return [os.path.join(data_dir, name), os.path.join(data_dir, f"pathfinder{resolution}", name)]


def find_level_dir(data_dir: str, resolution: int, level: str) -> str:
    """The level folder: data_dir/<level_dir>, else data_dir/pathfinder<res>/<level_dir>."""
    candidates = candidate_level_dirs(data_dir, resolution, level)
    for path in candidates:
        if os.path.isdir(path):
            return path
    raise DataError(
        f"{candidates[0]}: level folder not found (nor {candidates[1]}); data.level={level!r} "
        f"is the release folder {level_dir_name(level)!r}. Point data.data_dir at a "
        f"pathfinder<resolution> folder of the LRA release, or make one with: {MAKE_HINT}, "
        f"or set data.generate_if_missing=True")


def _batch_key(name: str) -> tuple:
    stem = name[:-len(".npy")]
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def metadata_files(level_dir: str) -> list[str]:
    """The metadata files of a level folder, in numeric batch order (0, 1, 2, ..., 10, ...)."""
    meta = os.path.join(level_dir, "metadata")
    if not os.path.isdir(meta):
        raise DataError(f"{meta}: metadata folder not found; expected "
                        f"{level_dir}/metadata/<batch>.npy files (the LRA release layout)")
    names = sorted((n for n in os.listdir(meta) if n.endswith(".npy") and not n.startswith(".")),
                   key=_batch_key)
    if not names:
        raise DataError(f"{meta}: no <batch>.npy metadata files")
    return [os.path.join(meta, n) for n in names]


# ----------------------------------------------------------------------------- metadata


def _rows(path: str) -> list[tuple[int, list[str]]]:
    """(1-based line number, fields) of every line; blank lines are allowed only at the end."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if raw.startswith(_NPY_MAGIC):  # a real .npy of strings, as np.save in the published code
        try:
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - any parse failure is a data error here
            raise DataError(f"{path}: unreadable NumPy metadata file ({e})") from None
        if arr.ndim != 2:
            raise DataError(f"{path}: NumPy metadata of shape {arr.shape}; expected one row "
                            f"per image")
        return [(i + 1, [str(x) for x in row]) for i, row in enumerate(arr)]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text; expected metadata lines "
                        f"'imgs/<batch> sample_<i>.png <i> <label> ...'") from None
    out, pending_blank = [], 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            pending_blank = pending_blank or lineno
            continue
        if pending_blank:
            raise DataError(f"{path}, line {pending_blank}: blank line; expected "
                            f"'imgs/<batch> sample_<i>.png <i> <label> ...'")
        out.append((lineno, line.split()))
    return out


def read_metadata(path: str, level_dir: str) -> list[tuple[str, int, int]]:
    """[(image path, label, line number)] of one metadata file."""
    entries = []
    for lineno, fields in _rows(path):
        where = f"{path}, line {lineno}"
        if len(fields) < 4:
            raise DataError(f"{where}: {len(fields)} fields; expected at least 4 "
                            f"('imgs/<batch> sample_<i>.png <i> <label> ...')")
        sub, name, index, label = fields[:4]
        if not re.fullmatch(r"-?\d+", index):
            raise DataError(f"{where}: bad index {index!r}; expected an integer (field 3)")
        if label not in ("0", "1"):
            raise DataError(f"{where}: bad label {label!r}; expected 0 or 1 (field 4)")
        rel = os.path.normpath(os.path.join(sub, name))
        if os.path.isabs(rel) or rel.startswith(".."):
            raise DataError(f"{where}: image path {sub}/{name} points outside {level_dir}")
        entries.append((os.path.join(level_dir, rel), int(label), lineno))
    return entries


# ----------------------------------------------------------------------------- images


class BadImage(Exception):
    """An image the reader refuses; `kind` says which problem it is (one of BAD_KINDS)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


BAD_KINDS = ("missing", "empty", "unreadable", "wrong mode", "wrong size")


def decode_png(path: str, resolution: int) -> np.ndarray:
    """uint8 [resolution**2]: the image as 8-bit grey, row-major. Raises BadImage."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BadImage("missing", "image file not found") from None
    except OSError as e:
        raise BadImage("unreadable", f"cannot read ({e})") from None
    if not data:
        raise BadImage("empty", "empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in _CONVERTIBLE_MODES:
                im = im.convert("L")
            if im.mode != "L":
                raise BadImage("wrong mode", f"image mode {im.mode!r}; expected 8-bit grey ('L')")
            if im.size != (resolution, resolution):
                raise BadImage("wrong size", f"image is {im.size[0]}x{im.size[1]}; expected "
                               f"{resolution}x{resolution} (data.resolution={resolution})")
            return np.frombuffer(im.tobytes(), np.uint8)
    except BadImage:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadImage("unreadable", f"unreadable image ({type(e).__name__}: {e})") from None


def level_entries(level_dir: str) -> list[tuple[str, int, str]]:
    """[(image path, label, "metadata file, line k")] of a level, in reading order."""
    return [(path, label, f"{meta}, line {lineno}") for meta in metadata_files(level_dir)
            for path, label, lineno in read_metadata(meta, level_dir)]


def decode_all(entries: list[tuple[str, int, str]], resolution: int, store, workers: int = 0,
               stop_at_first: bool = False) -> dict[int, BadImage]:
    """Decodes every entry on a thread pool, calling store(i, pixels) for the good ones;
    returns {entry index: BadImage} of the bad ones (with stop_at_first, each chunk stops at
    its first bad image)."""
    errors: dict[int, BadImage] = {}

    def work(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            try:
                store(i, decode_png(entries[i][0], resolution))
            except BadImage as e:
                errors[i] = e
                if stop_at_first:
                    return

    n = len(entries)
    workers = int(workers) if workers and int(workers) > 0 else min(8, os.cpu_count() or 1)
    bounds = [(lo, min(lo + 256, n)) for lo in range(0, n, 256)]
    if workers == 1 or len(bounds) <= 1:
        for lo, hi in bounds:
            work(lo, hi)
            if errors and stop_at_first:
                break
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda b: work(*b), bounds))
    return errors


def load_level(level_dir: str, resolution: int, skip_bad_images: bool = False,
               workers: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images of a level: (uint8 [N, resolution**2], int32 labels [N], skipped messages)."""
    entries = level_entries(level_dir)
    n, size = len(entries), resolution * resolution
    if not n:
        raise DataError(f"{level_dir}/metadata: the metadata files list no images")
    inputs = np.empty((n, size), np.uint8)

    def store(i: int, pixels: np.ndarray) -> None:
        inputs[i] = pixels

    bad = decode_all(entries, resolution, store, workers, stop_at_first=not skip_bad_images)
    errors = {i: f"{entries[i][0]}: {e} (listed in {entries[i][2]})" for i, e in bad.items()}
    if errors and not skip_bad_images:
        first = errors[min(errors)]
        more = f" ({len(errors) - 1} more bad images found)" if len(errors) > 1 else ""
        raise DataError(f"{first}{more}; set data.skip_bad_images=True to skip bad images "
                        f"(counted and logged) as LRA's pipeline does")
    labels = np.asarray([e[1] for e in entries], np.int32)
    skipped = [errors[i] for i in sorted(errors)]
    if skipped:
        ok = np.ones(n, bool)
        ok[list(errors)] = False
        inputs, labels = inputs[ok], labels[ok]
        if not len(labels):
            raise DataError(f"{level_dir}: every listed image is bad, e.g. {skipped[0]}")
    return inputs, labels, skipped


def check_level(level_dir: str, resolution: int, workers: int = 0) -> dict[str, Any]:
    """What `data_prep.pathfinder --check` reports for one level: its entries (metadata
    problems raise DataError), labels, split sizes, and every image decoded as training
    decodes it: {kind: (count, first image, its message, where it is listed)} of bad ones."""
    entries = level_entries(level_dir)
    bad = decode_all(entries, resolution, lambda i, pixels: None, workers)
    problems: dict[str, list] = {}
    for i in sorted(bad):
        kind = bad[i].kind
        if kind in problems:
            problems[kind][0] += 1
        else:
            problems[kind] = [1, entries[i][0], str(bad[i]), entries[i][2]]
    labels = np.bincount([label for _, label, _ in entries], minlength=2)
    return {"images": len(entries), "labels": labels.tolist(),
            "split": split_bounds(len(entries)),
            "problems": {k: tuple(v) for k, v in problems.items()}}


def split_bounds(n: int) -> tuple[int, int]:
    """(end of train, end of val) for LRA's in-order [:80%] / [80%:90%] / [90%:] split."""
    return (8 * n + 5) // 10, (9 * n + 5) // 10


def load_splits(data_cfg: Any) -> Splits:
    """{'train'|'val'|'test': {'inputs': uint8 [N, resolution**2], 'targets': int32 [N],
    'mask': all-True bool [N, resolution**2] (a read-only broadcast view), unless
    data.zero_is_padding}}.

    data_cfg fields: data_dir, resolution (32), level ('hard'), max_length (>= resolution**2),
    zero_is_padding (False), skip_bad_images (False), decode_workers (0 = up to 8 threads).
    """
    data_dir = _data_dir(data_cfg)
    resolution = _resolution(data_cfg)
    level = str(getattr(data_cfg, "level", "hard"))
    size = resolution * resolution
    max_length = int(getattr(data_cfg, "max_length", size) or size)
    if max_length < size:
        raise DataError(f"config field data.max_length: {max_length}; pathfinder{resolution} "
                        f"images are {resolution}x{resolution} = {size} tokens")
    level_dir = find_level_dir(data_dir, resolution, level)
    skip = bool(getattr(data_cfg, "skip_bad_images", False))
    inputs, labels, skipped = load_level(level_dir, resolution, skip_bad_images=skip,
                                         workers=int(getattr(data_cfg, "decode_workers", 0)))
    if skipped:
        log.warning("pathfinder: skipped %d bad images (data.skip_bad_images=True) in %s; "
                    "first: %s", len(skipped), level_dir, "; ".join(skipped[:5]))
    n = len(labels)
    a, b = split_bounds(n)
    if a == 0 or b == a or b == n:
        raise DataError(f"{level_dir}: {n} images is too few for an 80/10/10 split")
    zero_pad = bool(getattr(data_cfg, "zero_is_padding", False))
    splits: Splits = {}
    for name, lo, hi in (("train", 0, a), ("val", a, b), ("test", b, n)):
        split = {"inputs": inputs[lo:hi], "targets": labels[lo:hi]}
        if not zero_pad:
            split["mask"] = np.broadcast_to(np.True_, split["inputs"].shape)
        splits[name] = split
        log.info("pathfinder%d %s %s: %d images, %.1f%% positive [%s]", resolution,
                 level_dir_name(level), name, hi - lo, 100.0 * labels[lo:hi].mean(), level_dir)
    return splits


# ----------------------------------------------------------------------------- generation


def _generated_and_complete(root: str, resolution: int, level: str, kw: dict) -> bool:
    """Whether `root` holds a finished generator run with exactly these parameters."""
    try:
        with open(os.path.join(root, writer.PARAMS_FILE)) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return False
    want = {"format": writer.FORMAT_VERSION, "resolution": resolution, "level": level,
            "num_images": kw["generate_num_images"], "seed": kw["generate_seed"],
            "batch_size": kw["generate_batch_size"]}
    if any(rec.get(k) != v for k, v in want.items()):
        return False  # the generator itself reports the mismatch
    sizes = writer.batch_sizes(want["num_images"], want["batch_size"])
    return all(writer.batch_is_complete(root, b, n) for b, n in enumerate(sizes))


def prepare_if_missing(data_cfg: Any) -> bool:
    """Generates a Pathfinder level (`writer`) when
    data.generate_if_missing is true and no level folder with metadata exists (or one this
    generator started is incomplete: it is resumed). Returns whether it ran the generator.

    Fields: generate_num_images (2000), generate_seed (0), generate_batch_size (1000),
    generate_workers (0 = all cores), generate_show_progress (True). Data goes to
    data_dir/<level_dir>. A release folder (metadata but no generator.json) is never touched.
    The generator runs in this process; its worker processes are spawned, not forked, once
    JAX is loaded.
    """
    if not getattr(data_cfg, "generate_if_missing", False):
        return False
    data_dir = _data_dir(data_cfg)
    resolution = _resolution(data_cfg)
    level = str(getattr(data_cfg, "level", "hard"))
    name = level_dir_name(level)
    for path in candidate_level_dirs(data_dir, resolution, level):
        has_meta = os.path.isdir(os.path.join(path, "metadata")) and any(
            n.endswith(".npy") for n in os.listdir(os.path.join(path, "metadata")))
        if has_meta and not os.path.isfile(os.path.join(path, writer.PARAMS_FILE)):
            return False  # data from elsewhere (e.g. the LRA release): use it as it is
    kw = {k: int(getattr(data_cfg, k, v)) for k, v in GENERATE_DEFAULTS.items()}
    level_key = next(k for k, v in LEVEL_DIRS.items() if v == name)
    if _generated_and_complete(os.path.join(data_dir, name), resolution, level_key, kw):
        return False
    msg = (f"pathfinder: generating pathfinder{resolution}/{name} in {data_dir} "
           f"({kw['generate_num_images']} images, seed {kw['generate_seed']}; resumes an "
           f"interrupted run)")
    log.warning(msg)
    print(msg, file=sys.stderr, flush=True)
    try:
        summary = writer.generate(
            data_dir, resolution, level_key, kw["generate_num_images"],
            batch_size=kw["generate_batch_size"], workers=kw["generate_workers"] or None,
            seed=kw["generate_seed"],
            show_progress=bool(getattr(data_cfg, "generate_show_progress", True)))
    except ValueError as e:
        raise DataError(f"{os.path.join(data_dir, name)}: the Pathfinder generator refused to "
                        f"run: {e}") from None
    log.info("pathfinder: generated %d images in %.1f s", summary["generated_images"],
             summary["seconds"])
    return True
