"""Are two sets of Pathfinder images drawn from the same distribution? A two-sample check.

Used to hold our generator against the published one (or the LRA release): if a classifier
can tell images of set A from images of set B better than chance, a model trained on one set
meets a distribution shift on the other.

* Statistics per set (`image_statistics`): mean pixel, share of non-zero pixels, saturated
  (255) pixels per image, distinct grey levels per image, mean of the non-zero pixels, share
  of faint halo pixels (levels 1..15), bright pixels (>= 64) per image, and 8-connected
  components per image of the non-zero and of the bright pixels; and the share of one set's
  non-zero grey levels that never occur in the other (`missing_levels`).
* Two-sample classifiers (`two_sample_accuracy`): label A's images 0 and B's 1 (the same
  number of each) and report the stratified k-fold cross-validated accuracy of a logistic
  regression and a random forest, on raw pixels and on a 12-bin intensity histogram. 50% is
  chance; the bars (`BARS`) are a logistic regression on pixels and a random forest on the
  histogram at no more than 65%.

Images are read from a level folder of the release layout (<dir>/metadata/*.npy, or a folder
holding one: <dir>/<level_dir>, <dir>/pathfinder<R>/<level_dir>), decoded by the task reader,
or else from every *.png under the folder in natural order. Needs scikit-learn (and the SciPy
it brings): `pip install -e '.[fidelity]'`.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from luna_lra.data import DataError
from luna_lra.data import pathfinder as reader

HISTOGRAM_BINS = 12
HALO_BELOW = 16  # grey levels 1..15: the faint ringing of the Lanczos resampling
BRIGHT_FROM = 64
BARS = {"logistic_regression/pixels": 0.65, "random_forest/histogram": 0.65}
CLASSIFIERS = ("logistic_regression/pixels", "random_forest/histogram",
               "logistic_regression/histogram", "random_forest/pixels")


def _natural_key(path: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def image_paths(path: str, level: str = "hard", resolution: int | None = None) -> list[str]:
    """The images of a level folder in metadata order, else every PNG under `path`."""
    if not os.path.isdir(path):
        raise DataError(f"{path}: not a folder; expected a folder of Pathfinder PNG images or "
                        f"a level folder of the release layout")
    level_dir = None
    if os.path.isdir(os.path.join(path, "metadata")):
        level_dir = path
    else:
        for res in ([resolution] if resolution else list(reader.RESOLUTIONS)):
            try:
                level_dir = reader.find_level_dir(path, res, level)
                break
            except DataError:
                continue
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
    from PIL import Image

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


def _components(masks: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    eight = np.ones((3, 3), bool)
    return np.array([ndimage.label(m, structure=eight)[1] for m in masks], np.float64)


def image_statistics(images: np.ndarray) -> dict[str, float]:
    """Per-set statistics of uint8 images [N, R, R] (pixel values of 0..255)."""
    x = images.reshape(len(images), -1)
    nonzero = x > 0
    levels = [len(np.unique(row)) for row in x]
    stats = {
        "images": len(x),
        "mean_pixel": x.mean(),
        "nonzero_share": nonzero.mean(),
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
            classifiers: tuple[str, ...] = CLASSIFIERS) -> dict[str, Any]:
    """Statistics of both sets and the two-sample classifiers' accuracies."""
    n = min(len(a), len(b))
    result = {
        "images_per_set": n,
        "folds": folds,
        "chance_std": float(np.sqrt(0.25 / (2 * n))),  # accuracy's spread at chance
        "statistics": {"a": image_statistics(a), "b": image_statistics(b)},
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
        lines.append(f"| {label} | {sa[key]:.4g} | {sb[key]:.4g} |")
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
