"""Are two sets of Pathfinder images drawn from the same distribution? A two-sample check, and
reference sets made by the original generator itself.

Used to hold our generator against the original (drewlinsley/pathfinder, which LRA ran) or the
LRA release: if a classifier can tell images of set A from images of set B better than chance,
a model trained on one set meets a distribution shift on the other.

* Statistics per set (`image_statistics`): mean pixel, share of non-zero pixels, the mean pixel
  of each quadrant (the original's seed test favours some places), saturated (255) pixels per
  image, distinct grey levels per image, mean of the non-zero pixels, share of faint halo
  pixels (levels 1..15), bright pixels (>= 64) per image, and 8-connected components per image
  of the non-zero and of the bright pixels; the share of one set's non-zero grey levels that
  never occur in the other (`missing_levels`); and distractor snakes drawn per image where the
  set says (`distractor_counts`).
* Two-sample classifiers (`two_sample_accuracy`): label A's images 0 and B's 1 (the same
  number of each) and report the stratified k-fold cross-validated accuracy of a logistic
  regression and a random forest, on raw pixels and on a 12-bin intensity histogram. 50% is
  chance; the bars (`BARS`) are a logistic regression on pixels and a random forest on the
  histogram at no more than 60%.
* The original generator (`build_reference`, `replay`): its own code, from a local copy of
  drewlinsley/pathfinder at commit ab9c130 (the one LRA used; this module fetches nothing and
  the repository holds none of it), run in this Python with the real OpenCV
  (`opencv-python-headless`) and LRA's parameters (`original_args`). It is Python 2-era code,
  so its modules see three run-time stand-ins for what no longer exists (`_LegacyNumpy`,
  `_legacy_misc`): scipy.misc.imresize and imsave as SciPy 1.0 defined them (byte-scale a
  non-uint8 image from its min..max to 0..255, rounding half up; then Pillow's Lanczos resize,
  or an 8-bit PNG), and numpy's removed np.float (= float) and np.round_ (= np.round).
  Nothing else is changed; the only other hook counts its distractor snakes. `replay` runs the
  original and our generator on the same random draws and counts identical images.

Images are read from a level folder of the release layout (<dir>/metadata/*.npy, or a folder
holding one: <dir>/<level_dir>, <dir>/pathfinder<R>/<level_dir>), decoded by the task reader,
or else from every *.png under the folder in natural order. Needs scikit-learn (and the SciPy
it brings), and OpenCV for the original: `pip install -e '.[fidelity]'`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import re
import sys
import tempfile
import types
from typing import Any

import numpy as np
from PIL import Image

from luna_lra.data import DataError
from luna_lra.data.pathfinder import generator, reader, writer

HISTOGRAM_BINS = 12
HALO_BELOW = 16  # grey levels 1..15: the faint ringing of the Lanczos resampling
BRIGHT_FROM = 64
BARS = {"logistic_regression/pixels": 0.60, "random_forest/histogram": 0.60}
CLASSIFIERS = ("logistic_regression/pixels", "random_forest/histogram",
               "logistic_regression/histogram", "random_forest/pixels")
REFERENCE_FILE = "reference.json"  # beside a reference set's metadata/: provenance and counts


def _natural_key(path: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def find_level(path: str, level: str = "hard", resolution: int | None = None) -> str | None:
    """The level folder at or under `path` (one with metadata/), or None."""
    if os.path.isdir(os.path.join(path, "metadata")):
        return path
    for res in ([resolution] if resolution else list(generator.RESOLUTIONS)):
        try:
            return reader.find_level_dir(path, res, level)
        except DataError:
            continue
    return None


def image_paths(path: str, level: str = "hard", resolution: int | None = None) -> list[str]:
    """The images of a level folder in metadata order, else every PNG under `path`."""
    if not os.path.isdir(path):
        raise DataError(f"{path}: not a folder; expected a folder of Pathfinder PNG images or "
                        f"a level folder of the release layout")
    level_dir = find_level(path, level, resolution)
    if level_dir is not None:
        return [p for meta in reader.metadata_files(level_dir)
                for p, _, _ in reader.read_metadata(meta, level_dir)]
    found = [os.path.join(d, f) for d, _, files in os.walk(path) for f in files
             if f.endswith(".png") and not f.startswith(".")]
    if not found:
        raise DataError(f"{path}: no PNG images and no metadata/ folder under it")
    return sorted(found, key=_natural_key)


def load_images(path: str, limit: int = 1000, level: str = "hard",
                resolution: int | None = None) -> np.ndarray:
    """uint8 [N, R, R]: the first `limit` images of `path` (see image_paths), decoded as the
    task reader decodes them; R is taken from the first image when not given."""
    paths = image_paths(path, level, resolution)[:limit]
    if resolution is None:
        try:
            with Image.open(paths[0]) as im:
                resolution = im.size[0]
        except OSError as e:
            raise DataError(f"{paths[0]}: unreadable image ({e})") from None
    images = np.empty((len(paths), resolution * resolution), np.uint8)
    for i, p in enumerate(paths):
        try:
            images[i] = reader.decode_png(p, resolution)
        except reader.BadImage as e:
            raise DataError(f"{p}: {e}") from None
    return images.reshape(len(paths), resolution, resolution)


def distractor_counts(path: str, images: np.ndarray, level: str = "hard") -> np.ndarray | None:
    """Distractor snakes drawn in each of `images` (the first images of the set at `path`):
    from a reference set's reference.json, or, for a set our writer made (generator.json),
    by making those images again with their trace (each must equal its PNG); else None."""
    level_dir = find_level(path, level, images.shape[1])
    if level_dir is None:
        return None
    ref = os.path.join(level_dir, REFERENCE_FILE)
    made = os.path.join(level_dir, writer.PARAMS_FILE)
    if os.path.isfile(ref):
        with open(ref) as f:
            rec = json.load(f)
        counts = [c for b in sorted(rec["distractors"], key=int) for c in rec["distractors"][b]]
        return np.asarray(counts[:len(images)], np.float64)
    if not os.path.isfile(made):
        return None
    with open(made) as f:
        rec = json.load(f)
    params = generator.PARAMS[rec["resolution"]]
    contour = generator.LEVELS[rec["level"]][1]
    counts = []
    for g, img in enumerate(images):
        rng = generator.image_rng(rec["seed"], rec["resolution"], contour, g)
        again, _, _, trace = generator.generate_image(params, contour, rng, return_trace=True)
        if not np.array_equal(again, img):
            raise DataError(f"{level_dir}: image {g} differs from what {made} says made it")
        counts.append(len(trace["distractors"]))
    return np.asarray(counts, np.float64)


def _components(masks: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    eight = np.ones((3, 3), bool)
    return np.array([ndimage.label(m, structure=eight)[1] for m in masks], np.float64)


def image_statistics(images: np.ndarray) -> dict[str, float]:
    """Per-set statistics of uint8 images [N, R, R] (pixel values of 0..255)."""
    x = images.reshape(len(images), -1)
    nonzero = x > 0
    levels = [len(np.unique(row)) for row in x]
    h = images.shape[1] // 2
    stats = {
        "images": len(x),
        "mean_pixel": x.mean(),
        "nonzero_share": nonzero.mean(),
        "mean_top_left": images[:, :h, :h].mean(),
        "mean_top_right": images[:, :h, h:].mean(),
        "mean_bottom_left": images[:, h:, :h].mean(),
        "mean_bottom_right": images[:, h:, h:].mean(),
        "saturated_per_image": (x == 255).sum(1).mean(),
        "grey_levels_per_image": float(np.mean(levels)),
        "nonzero_mean": x[nonzero].mean() if nonzero.any() else 0.0,
        "halo_share": (nonzero & (x < HALO_BELOW)).mean(),
        "bright_per_image": (x >= BRIGHT_FROM).sum(1).mean(),
        "components_nonzero": _components(images > 0).mean(),
        "components_bright": _components(images >= BRIGHT_FROM).mean(),
    }
    return {k: float(v) for k, v in stats.items()}


def missing_levels(a: np.ndarray, b: np.ndarray) -> float:
    """The share of b's non-zero grey levels that never occur in a."""
    in_a = np.bincount(a.ravel(), minlength=256) > 0
    in_b = np.bincount(b.ravel(), minlength=256) > 0
    in_b[0] = False
    return float((in_b & ~in_a).sum() / max(1, in_b.sum()))


def features(images: np.ndarray, kind: str) -> np.ndarray:
    """'pixels': the raw pixels / 255; 'histogram': a 12-bin intensity histogram (shares)."""
    x = images.reshape(len(images), -1)
    if kind == "pixels":
        return x.astype(np.float32) / 255.0
    if kind == "histogram":
        bins = (x.astype(np.int64) * HISTOGRAM_BINS) // 256
        counts = np.stack([np.bincount(row, minlength=HISTOGRAM_BINS) for row in bins])
        return counts.astype(np.float32) / x.shape[1]
    raise ValueError(f"feature kind {kind!r}; expected 'pixels' or 'histogram'")


def _model(name: str, seed: int):
    try:
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise DataError("the fidelity check needs scikit-learn: pip install -e '.[fidelity]'") \
            from None
    if name == "logistic_regression":
        return LogisticRegression(max_iter=5000)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=200, random_state=seed)
    raise ValueError(f"model {name!r}; expected 'logistic_regression' or 'random_forest'")


def two_sample_accuracy(a: np.ndarray, b: np.ndarray, classifier: str, folds: int = 5,
                        seed: int = 0) -> dict[str, float]:
    """Cross-validated accuracy of telling images of a (label 0) from b (label 1), using the
    first min(len(a), len(b)) of each; classifier is '<model>/<features>'."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    model, kind = classifier.split("/")
    n = min(len(a), len(b))
    if n < folds:
        raise DataError(f"{n} images per set is too few for {folds}-fold cross-validation")
    x = np.concatenate([features(a[:n], kind), features(b[:n], kind)])
    y = np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)]
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = cross_val_score(_model(model, seed), x, y, cv=cv)
    return {"accuracy": float(scores.mean()), "fold_std": float(scores.std())}


def compare(a: np.ndarray, b: np.ndarray, folds: int = 5, seed: int = 0,
            classifiers: tuple[str, ...] = CLASSIFIERS,
            distractors: tuple = (None, None)) -> dict[str, Any]:
    """Statistics of both sets and the two-sample classifiers' accuracies, on the first
    min(len(a), len(b)) images of each; `distractors`: the sets' distractor counts per image
    where known (distractor_counts)."""
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    stats = {"a": image_statistics(a), "b": image_statistics(b)}
    for side, counts in zip("ab", distractors):
        if counts is not None:
            stats[side]["distractors_per_image"] = float(np.mean(counts[:n]))
    result = {
        "images_per_set": n,
        "folds": folds,
        "chance_std": float(np.sqrt(0.25 / (2 * n))),  # accuracy's spread at chance
        "statistics": stats,
        "levels_of_b_missing_in_a": missing_levels(a, b),
        "levels_of_a_missing_in_b": missing_levels(b, a),
        "classifiers": {c: two_sample_accuracy(a, b, c, folds, seed) for c in classifiers},
    }
    result["bars"] = {c: {"max": bar, "passed": result["classifiers"][c]["accuracy"] <= bar}
                      for c, bar in BARS.items() if c in result["classifiers"]}
    return result


STAT_NAMES = {
    "mean_pixel": "mean pixel (of 255)",
    "nonzero_share": "non-zero pixels (share)",
    "distractors_per_image": "distractor snakes drawn per image",
    "mean_top_left": "mean pixel, top-left quadrant",
    "mean_top_right": "mean pixel, top-right quadrant",
    "mean_bottom_left": "mean pixel, bottom-left quadrant",
    "mean_bottom_right": "mean pixel, bottom-right quadrant",
    "saturated_per_image": "saturated (255) pixels per image",
    "grey_levels_per_image": "distinct grey levels per image",
    "nonzero_mean": "mean of non-zero pixels",
    "halo_share": f"halo pixels, levels 1..{HALO_BELOW - 1} (share)",
    "bright_per_image": f"bright pixels (>= {BRIGHT_FROM}) per image",
    "components_nonzero": "8-connected components of non-zero pixels per image",
    "components_bright": f"8-connected components of pixels >= {BRIGHT_FROM} per image",
}


def markdown_section(title: str, name_a: str, name_b: str, result: dict[str, Any]) -> str:
    """One comparison as Markdown: the statistics side by side, then the classifiers."""
    sa, sb = result["statistics"]["a"], result["statistics"]["b"]
    lines = [f"## {title}", "", f"A = `{name_a}`, B = `{name_b}`; {result['images_per_set']} "
             f"images of each.", "", "| statistic | A | B |", "|---|---|---|"]
    for key, label in STAT_NAMES.items():
        if key in sa or key in sb:
            cells = [f"{s[key]:.4g}" if key in s else "n/a" for s in (sa, sb)]
            lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    lines.append(f"| B's non-zero grey levels never in A | "
                 f"{result['levels_of_b_missing_in_a']:.1%} | |")
    lines.append(f"| A's non-zero grey levels never in B | "
                 f"{result['levels_of_a_missing_in_b']:.1%} | |")
    lines += ["", f"Two-sample classifiers, {result['folds']}-fold stratified cross-validation "
              f"(chance 50%; at chance the accuracy varies by about "
              f"±{100 * result['chance_std']:.1f} points, one standard deviation):", "",
              "| classifier | accuracy | std over folds | bar |", "|---|---|---|---|"]
    for name, r in result["classifiers"].items():
        bar = result["bars"].get(name)
        mark = "" if bar is None else \
            f"<= {bar['max']:.0%}: {'met' if bar['passed'] else 'NOT met'}"
        lines.append(f"| {name} | {r['accuracy']:.1%} | {r['fold_std']:.1%} | {mark} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the original

ORIGINAL = "drewlinsley/pathfinder"
ORIGINAL_COMMIT = "ab9c130cdf0f27c5bc4117801915521559a3cd2f"  # 2019-12-06, "Pushed the gen."
# the files of that commit (later commits change how pixels are made)
ORIGINAL_SHA256 = {
    "snakes.py": "ffc6e7dee83864f9ed482657abc4641429fcaacf9c4790117f8e4c3f8db4f3a2",
    "snakes2.py": "be63c04acee244c916a5d24af8a84426c8677c8c5877f907c900a96a571bef15",
}
STAND_INS = (
    "scipy.misc.imresize(arr, size, interp='lanczos'): SciPy 1.0's: a non-uint8 image is "
    "byte-scaled (min..max to 0..255, rounded half up), then Pillow's Image.resize with LANCZOS",
    "scipy.misc.imsave(path, arr): SciPy 1.0's: the same byte scaling, then an 8-bit grey PNG",
    "numpy.float = float, numpy.round_ = numpy.round (removed from NumPy since); the original's "
    "modules see them in their own `np`, NumPy itself is not changed",
)


class _LegacyNumpy(types.ModuleType):
    """numpy as the original's modules see it: with np.float and np.round_ back."""

    float = float
    round_ = staticmethod(np.round)

    def __getattr__(self, name: str):
        return getattr(np, name)


def _scipy10_bytescale(data: np.ndarray) -> np.ndarray:
    """scipy.misc.bytescale (SciPy 1.0) with its defaults (low 0, high 255, cmin/cmax from the
    data); written here again so that the reference shares nothing with `raster`."""
    data = np.asarray(data)
    if data.dtype == np.uint8:
        return data
    cmin, cmax = data.min(), data.max()
    cscale = cmax - cmin
    if cscale == 0:
        cscale = 1
    scale = float(255 - 0) / cscale
    bytedata = (data - cmin) * scale + 0
    return (bytedata.clip(0, 255) + 0.5).astype(np.uint8)


def _legacy_misc() -> types.SimpleNamespace:
    def imresize(arr, size, interp="bilinear", mode=None):
        if interp != "lanczos" or mode is not None:
            raise NotImplementedError("the original only resizes with interp='lanczos'")
        image = Image.fromarray(_scipy10_bytescale(arr))  # SciPy's toimage of a 2-D array: 'L'
        return np.array(image.resize((size[1], size[0]), resample=Image.Resampling.LANCZOS))

    def imsave(name, arr):
        Image.fromarray(_scipy10_bytescale(arr)).save(name)

    return types.SimpleNamespace(imresize=imresize, imsave=imsave)


@dataclasses.dataclass
class Original:
    """The original's two modules, loaded from a local copy, and its distractor counter."""

    snakes: Any
    snakes2: Any
    distractors: list  # per image made since the last reset

    def run(self, args) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per image
            self.snakes2.from_wrapper(args)


def check_original(folder: str) -> None:
    """Raises DataError unless `folder` holds snakes.py and snakes2.py of commit ab9c130 and
    OpenCV is installed."""
    for name, digest in ORIGINAL_SHA256.items():
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as f:
                got = hashlib.sha256(f.read()).hexdigest()
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e}); expected a copy of {ORIGINAL} at "
                            f"commit {ORIGINAL_COMMIT[:7]}") from None
        if got != digest:
            raise DataError(f"{path}: not the file of {ORIGINAL} commit {ORIGINAL_COMMIT[:7]} "
                            f"(sha256 {got[:12]}..., expected {digest[:12]}...); check out that "
                            f"commit (later ones change how the pixels are made)")
    if importlib.util.find_spec("cv2") is None:
        raise DataError("the original generator needs OpenCV: pip install -e '.[fidelity]'")


def load_original(folder: str) -> Original:
    """Loads snakes.py and snakes2.py from `folder` with the stand-ins. Their import changes
    this process's module path, so it runs in worker processes (`_in_workers`)."""
    check_original(folder)
    import matplotlib

    matplotlib.use("Agg")  # the original imports pyplot (it draws nothing here)
    modules = {}
    for name in ("snakes", "snakes2"):  # snakes2 imports snakes by name
        spec = importlib.util.spec_from_file_location(name, os.path.join(folder, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        module.np = _LegacyNumpy("numpy")
        module.scipy = types.SimpleNamespace(misc=_legacy_misc())
        modules[name] = module
    original = Original(modules["snakes"], modules["snakes2"], [])
    make_snake = original.snakes.make_snake
    made = [0]

    def counting_make_snake(*args, **kwargs):  # make_many_snakes calls it for distractors
        out = make_snake(*args, **kwargs)
        made[0] += bool(out[2])
        return out

    imsave = original.snakes2.scipy.misc.imsave

    def counting_imsave(name, arr):  # once per image, after its distractors
        original.distractors.append(made[0])
        made[0] = 0
        imsave(name, arr)

    original.snakes.make_snake = counting_make_snake
    original.snakes2.scipy.misc.imsave = counting_imsave
    return original


def original_args(params: generator.ResolutionParams, contour_length: int, out: str,
                  batch: int, num_images: int) -> types.SimpleNamespace:
    """The original wrapper's Args with LRA's parameters for this resolution and level (see
    generator.PARAMS); out = the level folder the original writes."""
    dl = generator.distractor_length(contour_length)
    return types.SimpleNamespace(
        contour_path=out, batch_id=batch, n_images=num_images,
        window_size=[params.resolution, params.resolution], padding=params.padding,
        antialias_scale=params.antialias_scale, LABEL=1, seed_distance=params.seed_distance,
        marker_radius=params.marker_radius, contour_length=contour_length, distractor_length=dl,
        num_distractor_snakes=generator.num_distractors(params, contour_length),
        snake_contrast_list=[params.snake_contrast], use_single_paddles=False,
        max_target_contour_retrial=4,
        max_distractor_contour_retrial=generator.MAX_DISTRACTOR_RETRIAL,
        max_paddle_retrial=generator.MAX_PADDLE_RETRIAL, continuity=params.continuity,
        paddle_length=params.paddle_length, paddle_thickness=params.paddle_thickness,
        paddle_margin_list=list(params.paddle_margins),
        paddle_contrast_list=[params.paddle_contrast], pause_display=False, save_images=True,
        save_metadata=True, segmentation_task=False, segmentation_task_double_circle=False)


def batch_seed(seed: int, resolution: int, contour_length: int, batch: int) -> list[int]:
    """The seed of numpy's global RandomState for one batch of the original."""
    return [int(seed), int(resolution), int(contour_length), int(batch)]


_LOADED: dict[str, Original] = {}


def _in_workers(tasks: list, workers: int) -> list:
    """_original_batch over the tasks in worker processes (never in this one)."""
    with writer.mp_context().Pool(max(1, min(int(workers), len(tasks)))) as pool:
        return pool.map(_original_batch, tasks)


def _original_batch(task: tuple) -> tuple[int, list[int]]:
    """Worker: the original makes one batch in `out`; returns (batch, distractors per image)."""
    folder, out, resolution, contour_length, seed, batch, num_images = task
    if folder not in _LOADED:
        _LOADED[folder] = load_original(folder)
    original = _LOADED[folder]
    original.distractors.clear()
    np.random.seed(batch_seed(seed, resolution, contour_length, batch))
    original.run(original_args(generator.PARAMS[resolution], contour_length, out, batch,
                               num_images))
    return batch, list(original.distractors)


def build_reference(folder: str, out: str, resolution: int, level: str, num_images: int,
                    batch_size: int = writer.DEFAULT_BATCH_SIZE, seed: int = 0,
                    workers: int | None = None) -> dict[str, Any]:
    """The original generator (from `folder`) writes a level folder under `out` in its own
    release layout (imgs/<batch>/sample_<i>.png, metadata/<batch>.npy as NumPy arrays of
    strings), batch b from numpy's global RandomState seeded with batch_seed(...); beside it
    reference.json records the original, the stand-ins, the arguments and the distractor
    snakes drawn per image. Returns that record."""
    check_original(folder)
    contour_length = generator.LEVELS[level][1]
    root = os.path.join(out, generator.LEVEL_DIRS[level])
    if os.path.exists(os.path.join(root, "metadata")):
        raise DataError(f"{root}: exists; the reference is written into a new folder")
    os.makedirs(root)
    sizes = writer.batch_sizes(num_images, batch_size)
    tasks = [(folder, root, resolution, contour_length, seed, b, n) for b, n in enumerate(sizes)]
    results = _in_workers(tasks, workers or os.cpu_count() or 1)
    args = vars(original_args(generator.PARAMS[resolution], contour_length, root, 0, 0))
    args = {k: v for k, v in args.items() if k not in ("contour_path", "batch_id", "n_images")}
    record = {"original": ORIGINAL, "commit": ORIGINAL_COMMIT, "sha256": ORIGINAL_SHA256,
              "stand_ins": list(STAND_INS), "opencv": _opencv_version(), "args": args,
              "resolution": resolution, "level": level, "num_images": num_images,
              "batch_size": batch_size, "seed": seed,
              "numpy_global_seed": "batch_seed(seed, resolution, contour_length, batch)",
              "distractors": {str(b): counts for b, counts in results}}
    with open(os.path.join(root, REFERENCE_FILE), "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    return record


def _opencv_version() -> str:
    import cv2

    return cv2.__version__


def replay(folder: str, resolution: int, level: str, num_images: int,
           seed: int = 0) -> dict[str, Any]:
    """The original (from `folder`) and our generator on the same random draws: numpy's
    global RandomState seeded with batch_seed(seed, ..., 0) for the original, a RandomState
    seeded alike for ours. Returns the images compared and those that differ (pixels, label
    or distractor count)."""
    check_original(folder)
    contour_length = generator.LEVELS[level][1]
    params = generator.PARAMS[resolution]
    with tempfile.TemporaryDirectory() as tmp:
        [(_, counts)] = _in_workers([(folder, tmp, resolution, contour_length, seed, 0,
                                      num_images)], 1)
        theirs = load_images(tmp, num_images, resolution=resolution)
        labels = [label for _, label, _ in reader.level_entries(tmp)]
    rng = np.random.RandomState(batch_seed(seed, resolution, contour_length, 0))
    differ = []
    for i in range(num_images):
        img, label, _, trace = generator.generate_image(params, contour_length, rng,
                                                         return_trace=True)
        if not (np.array_equal(img, theirs[i]) and label == labels[i]
                and len(trace["distractors"]) == counts[i]):
            differ.append(i)
    return {"images": num_images, "differ": differ, "opencv": _opencv_version(),
            "distractors_per_image": float(np.mean(counts))}
