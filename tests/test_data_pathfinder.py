"""Pathfinder / Path-X: the generator's geometry and labels (luna_lra.data.pathfinder.generator),
the data set writer (writer) and its command (data_prep.pathfinder), the reader (the package
luna_lra.data.pathfinder), the configs, and end-to-end runs through the training CLI. The
pixels are tested in test_data_pathfinder_render.py, --check in test_data_pathfinder_check.py, the
OpenCV border of the seed test in test_data_pathfinder_opencv.py."""

from __future__ import annotations

import collections
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from luna_lra.data import DataError, pipeline
from luna_lra.data import get_task_module
from luna_lra.data import pathfinder as task
from luna_lra.data.pathfinder import generator as gen
from luna_lra.data.pathfinder import writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARD = gen.LEVELS["hard"][1]


def cfg(**kw):
    """A data config as the trainer passes it (attribute access, missing fields = defaults)."""
    base = dict(data_dir="", resolution=32, level="hard", max_length=1024)
    base.update(kw)
    return collections.namedtuple("DataCfg", base)(**base)


def load_config(name, variant):
    spec = importlib.util.spec_from_file_location(f"_cfg_{name}", os.path.join(REPO, "configs",
                                                                               f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(variant)


# ---------------------------------------------------------------- independent helpers


def rasterise(polylines, n, scale):
    """Draws polylines (pixel coordinates) as 1-pixel lines on an (n*scale)^2 grid."""
    canvas = np.zeros((n * scale, n * scale), bool)
    for pts in polylines:
        for (y0, x0), (y1, x1) in zip(pts[:-1], pts[1:]):
            k = int(np.ceil(max(abs(y1 - y0), abs(x1 - x0)) * scale * 4)) + 2
            t = np.linspace(0.0, 1.0, k)
            ys = np.round((y0 + (y1 - y0) * t + 0.5) * scale - 0.5).astype(int)
            xs = np.round((x0 + (x1 - x0) * t + 0.5) * scale - 0.5).astype(int)
            ok = (ys >= 0) & (ys < n * scale) & (xs >= 0) & (xs < n * scale)
            canvas[ys[ok], xs[ok]] = True
    return canvas


def to_grid(point, scale):
    return tuple(int(round((c + 0.5) * scale - 0.5)) for c in point)


def component(canvas, start):
    """8-connected flood fill from `start` (a tiny BFS, no scipy)."""
    seen = np.zeros_like(canvas)
    if not canvas[start]:
        return seen
    queue = collections.deque([start])
    seen[start] = True
    h, w = canvas.shape
    while queue:
        y, x = queue.popleft()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and canvas[yy, xx] and not seen[yy, xx]:
                    seen[yy, xx] = True
                    queue.append((yy, xx))
    return seen


def sample_points(polylines, step=0.1):
    out = []
    for pts in polylines:
        for (y0, x0), (y1, x1) in zip(pts[:-1], pts[1:]):
            k = max(2, int(np.hypot(y1 - y0, x1 - x0) / step) + 1)
            t = np.linspace(0.0, 1.0, k)[:, None]
            out.append(np.array([y0, x0]) + (np.array([y1, x1]) - np.array([y0, x0])) * t)
    return np.concatenate(out)


def generate_small(out, n=8, batch_size=5, resolution=32, level="hard", seed=0, workers=1):
    return writer.generate(str(out), resolution, level, n, batch_size=batch_size, workers=workers,
                        seed=seed, show_progress=False)


def read_pngs(root):
    """{relative path: uint8 array} of every PNG under root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".png"):
                p = os.path.join(d, f)
                out[os.path.relpath(p, root)] = np.asarray(Image.open(p))
    return out


# ---------------------------------------------------------------- generator


def test_parameters_are_lras():
    p32, p64, p128, p256 = (gen.PARAMS[r] for r in (32, 64, 128, 256))
    assert (p32.padding, p32.paddle_length, p32.paddle_thickness,
            p32.paddle_margins) == (1, 2, 0.5, (1,))
    assert (p32.marker_radius, p32.seed_distance, p32.continuity) == (1.5, 7, 1.0)
    assert (p32.snake_contrast, p32.paddle_contrast, p32.distractor_budget) == (2.0, 0.75, 20)
    assert (p64.paddle_length, p64.paddle_thickness, p64.seed_distance,
            p64.marker_radius) == (5, 1, 12, 2.5)
    assert (p128.paddle_margins, p128.seed_distance, p128.marker_radius,
            p128.paddle_thickness) == ((2, 3), 20, 3, 1.5)
    assert (p128.continuity, p128.distractor_budget, p128.snake_contrast) == (1.8, 35, 0.9)
    assert (p256.padding, p256.seed_distance, p256.marker_radius,
            p256.paddle_margins) == (22, 27, 5, (3,))
    assert gen.LEVELS == {"easy": ("curv_baseline", 6),
                          "intermediate": ("curv_contour_length_9", 9),
                          "hard": ("curv_contour_length_14", 14)}
    assert task.LEVEL_DIRS == {k: v[0] for k, v in gen.LEVELS.items()}
    assert [gen.distractor_length(c) for c in (6, 9, 14)] == [2, 3, 4]
    assert [gen.num_distractors(p32, c) for c in (6, 9, 14)] == [10, 6, 5]


def test_same_seed_same_image_other_seed_differs():
    p = gen.PARAMS[32]
    a = gen.generate_image(p, HARD, gen.image_rng(3, 32, HARD, 7))
    b = gen.generate_image(p, HARD, gen.image_rng(3, 32, HARD, 7))
    c = gen.generate_image(p, HARD, gen.image_rng(4, 32, HARD, 7))
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
    assert not np.array_equal(a[0], c[0])
    assert a[0].dtype == np.uint8 and a[0].shape == (32, 32) and a[0].max() == 255


@pytest.mark.parametrize("resolution,scale", [(32, 4), (128, 2)])
def test_markers_on_the_ends_of_one_target_iff_positive(resolution, scale):
    """Independent check of the labels: one marker sits on the start of a traced target, the
    other on the far end of the same target (positive) or of the other one (negative), and in a
    positive image a flood fill over every traced path (targets and distractors alike, centre
    lines through paddles and gaps) joins the markers. Not asserted for negative images: the
    original lets a snake cross another in the gap between two paddles or over a target's
    newest, not yet committed paddle, so their centre lines may touch. The trace itself is
    checked against the rendered pixels."""
    p = gen.PARAMS[resolution]
    want = {0: 3, 1: 3}
    g = 0
    while any(want.values()):
        img, label, margin, trace = gen.generate_image(
            p, HARD, gen.image_rng(11, resolution, HARD, g), return_trace=True)
        g += 1
        if not want[label]:
            continue
        want[label] -= 1
        starts = [tuple(t[0]) for t in trace["targets"]]
        ends = [tuple(t[-1]) for t in trace["targets"]]
        m0, m1 = (tuple(map(float, m)) for m in trace["markers"])
        (on_start,) = [k for k in (0, 1) if starts[k] == m0]
        (on_end,) = [k for k in (0, 1) if ends[k] == m1]
        assert (on_start == on_end) == (label == 1), (resolution, g - 1, label)
        paths = trace["targets"] + trace["distractors"]
        canvas = rasterise(paths, resolution, scale)
        g0, g1 = (to_grid(m, scale) for m in trace["markers"])
        assert canvas[g0] and canvas[g1], "markers must sit on traced paths"
        if label == 1:
            assert component(canvas, g0)[g1], (resolution, g - 1)
        # each marker is bright in the image
        for y, x in trace["markers"]:
            assert img[y, x] >= 200
        # every lit pixel belongs to a traced path or a marker: the paddle bodies (>= 64) lie
        # within 1.5 px of the path's half-width (the published stamp rounds its far end up at
        # 2x), and the faint Lanczos ringing reaches 3 px further
        ys, xs = np.nonzero(img > 0)
        lit = np.stack([ys, xs], 1).astype(float)
        pts = sample_points(paths)
        d_path = np.sqrt(((lit[:, None, :] - pts[None]) ** 2).sum(-1)).min(1)
        d_mark = np.min([np.hypot(ys - my, xs - mx) for my, mx in trace["markers"]], 0)
        half = p.paddle_thickness / 2
        body = img[ys, xs] >= 64
        assert np.all((d_path <= half + 1.5) | (d_mark <= p.marker_radius + 1) | ~body)
        assert np.all((d_path <= half + 4.5) | (d_mark <= p.marker_radius + 4))
        # and every target has contour_length paddles: start and end of the seed, then a pivot,
        # a near end and a far end for each grown paddle
        for t in trace["targets"]:
            assert len(t) == 3 * HARD - 1


def test_label_balance_and_margins():
    labels, margins = [], []
    p = gen.PARAMS[128]
    for g in range(40):
        rng = gen.image_rng(0, 128, 6, g)
        img, label, margin = gen.generate_image(p, 6, rng)
        labels.append(label)
        margins.append(margin)
    assert 10 <= sum(labels) <= 30
    assert set(margins) == {2, 3}


LINE_RE = re.compile(r"^imgs/(\d+) sample_(\d+)\.png (\d+) ([01]) (\S+) (\d+) (\d+) (\d+) (\S+) "
                     r"(\d+) (\d+)$")


def test_layout_and_metadata_format(tmp_path):
    summary = generate_small(tmp_path, n=8, batch_size=5)
    root = tmp_path / "curv_contour_length_14"
    assert summary["generated_batches"] == [0, 1]
    assert sorted(os.listdir(root / "metadata")) == ["0.npy", "1.npy"]
    assert sorted(os.listdir(root / "imgs")) == ["0", "1"]
    assert sorted(os.listdir(root / "imgs" / "1")) == [f"sample_{i}.png" for i in range(3)]
    p = gen.PARAMS[32]
    for batch, count in ((0, 5), (1, 3)):
        lines = (root / "metadata" / f"{batch}.npy").read_text().split("\n")
        assert lines[-1] == "" and len(lines) == count + 1  # newline-terminated text
        for i, line in enumerate(lines[:-1]):
            m = LINE_RE.match(line)
            assert m, line
            assert (int(m[1]), int(m[2]), int(m[3])) == (batch, i, i)
            assert m.groups()[4:] == ("1.0", "14", "4", "2", "0.5", "1", "1")
            # the image and the label are what the seeded generator makes for image number g
            rng = gen.image_rng(0, 32, HARD, batch * 5 + i)
            img, label, margin = gen.generate_image(p, HARD, rng)
            assert int(m[4]) == label
            png = Image.open(root / "imgs" / str(batch) / f"sample_{i}.png")
            assert png.mode == "L" and png.size == (32, 32) and png.format == "PNG"
            assert np.array_equal(np.asarray(png), img)
    record = json.loads((root / "generator.json").read_text())
    assert (record["resolution"], record["level"], record["num_images"]) == (32, "hard", 8)


def test_same_seed_same_files_whatever_workers_and_batches(tmp_path):
    generate_small(tmp_path / "a", n=12, batch_size=12, workers=1)
    generate_small(tmp_path / "b", n=12, batch_size=12, workers=2)
    generate_small(tmp_path / "c", n=12, batch_size=12, workers=1, seed=1)
    a, b, c = (read_pngs(tmp_path / d) for d in "abc")
    assert a.keys() == b.keys() and len(a) == 12
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)
    meta = [(tmp_path / d / "curv_contour_length_14" / "metadata" / "0.npy").read_text()
            for d in "ab"]
    assert meta[0] == meta[1]
    # a different batch size splits the same images differently
    generate_small(tmp_path / "d", n=12, batch_size=5)
    d = read_pngs(tmp_path / "d")
    assert np.array_equal(d[os.path.join("curv_contour_length_14", "imgs", "2", "sample_1.png")],
                          a[os.path.join("curv_contour_length_14", "imgs", "0", "sample_11.png")])


def test_workers_are_spawned_once_jax_is_loaded(tmp_path):
    """prepare_if_missing runs the generator inside the trainer, where JAX's threads make a
    fork unsafe: the writer then spawns its workers, and they make the same files."""
    import jax  # noqa: F401 - loaded, as in the trainer

    assert writer.mp_context().get_start_method() == "spawn"
    generate_small(tmp_path / "spawned", n=4, batch_size=2, workers=2)
    generate_small(tmp_path / "inline", n=4, batch_size=2, workers=1)
    a, b = read_pngs(tmp_path / "spawned"), read_pngs(tmp_path / "inline")
    assert a.keys() == b.keys() and len(a) == 4 and all(np.array_equal(a[k], b[k]) for k in a)


def test_pathfinder_modules_never_import_data_prep():
    """Imports run one way (data_prep -> luna_lra; inside the package raster <- generator <-
    writer <- reader <- fidelity), no path editing, and the trainer's task module is the
    reader."""
    folder = os.path.join(REPO, "luna_lra", "data", "pathfinder")
    order = ["raster", "generator", "writer", "reader", "fidelity"]
    assert sorted(n for n in os.listdir(folder) if n.endswith(".py")) == sorted(
        [f"{m}.py" for m in order] + ["__init__.py"])
    assert not [n for n in os.listdir(os.path.dirname(folder)) if n.startswith("pathfinder_")]
    for i, name in enumerate(order):
        text = open(os.path.join(folder, f"{name}.py"), encoding="utf-8").read()
        assert not re.search(r"^\s*(from|import)\s+data_prep", text, re.M), name
        assert "PYTHONPATH" not in text and "sys.path" not in text, name
        used = set(re.findall(r"^\s*from luna_lra\.data\.pathfinder(?:\.(\w+))? import (.*)$",
                              text, re.M))
        below = {m for module, names in used
                 for m in ([module] if module else re.findall(r"\w+", names))}
        assert below <= set(order[:i]), (name, below)  # only modules before it: no circle
    module = get_task_module("pathfinder")
    assert module is task and module.load_splits is task.reader.load_splits
    assert callable(module.prepare_if_missing) and module.TASK.name == "pathfinder"


def test_resume_regenerates_only_incomplete_batches(tmp_path):
    generate_small(tmp_path, n=9, batch_size=3)
    root = tmp_path / "curv_contour_length_14"
    before = read_pngs(tmp_path)
    meta_before = {b: (root / "metadata" / f"{b}.npy").read_text() for b in range(3)}
    old = 1_000_000_000
    for d, _, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(d, f), (old, old))
    # a killed run: batch 1 lost its metadata, batch 2 lost an image
    (root / "metadata" / "1.npy").unlink()
    (root / "imgs" / "2" / "sample_1.png").unlink()
    summary = generate_small(tmp_path, n=9, batch_size=3)
    assert summary["generated_batches"] == [1, 2] and summary["skipped_batches"] == [0]
    for d, _, files in os.walk(root / "imgs"):
        for f in files:
            touched = os.stat(os.path.join(d, f)).st_mtime != old
            assert touched == (os.path.basename(d) in ("1", "2")), (d, f)
    assert os.stat(root / "metadata" / "0.npy").st_mtime == old
    assert {b: (root / "metadata" / f"{b}.npy").read_text() for b in range(3)} == meta_before
    after = read_pngs(tmp_path)
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in after)
    # nothing left to do; no temporary files left behind
    assert generate_small(tmp_path, n=9, batch_size=3)["generated_batches"] == []
    assert not [f for f in os.listdir(root / "metadata") if f.startswith(".tmp")]


def test_other_parameters_refused(tmp_path):
    generate_small(tmp_path, n=4, batch_size=2)
    with pytest.raises(ValueError, match="other parameters"):
        generate_small(tmp_path, n=4, batch_size=2, seed=5)


def test_cli(tmp_path):
    cmd = [sys.executable, "-m", "data_prep.pathfinder", "--out", str(tmp_path), "--resolution",
           "32", "--level", "easy", "--num_images", "6", "--batch_size", "4", "--workers", "1",
           "--seed", "2", "--no_progress"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "generated 6 images in 2 batches" in proc.stdout
    assert sorted(os.listdir(tmp_path / "curv_baseline" / "metadata")) == ["0.npy", "1.npy"]
    bad = subprocess.run(cmd[:6] + ["48"] + cmd[7:], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0 and "invalid choice" in bad.stderr


# ---------------------------------------------------------------- reader


def make_release(root, labels_per_batch, resolution=32, level_dir="curv_contour_length_14",
                 seed=0):
    """A hand-made directory in the LRA release layout (not written by our generator): random
    grey PNGs and release-format metadata lines. Returns (images in batch order, labels)."""
    rng = np.random.default_rng(seed)
    level = os.path.join(root, level_dir)
    os.makedirs(os.path.join(level, "metadata"), exist_ok=True)
    images, labels = [], []
    for batch, batch_labels in enumerate(labels_per_batch):
        os.makedirs(os.path.join(level, "imgs", str(batch)), exist_ok=True)
        lines = []
        for i, label in enumerate(batch_labels):
            img = rng.integers(0, 256, (resolution, resolution), dtype=np.uint8)
            Image.fromarray(img).save(os.path.join(level, "imgs", str(batch), f"sample_{i}.png"))
            lines.append(f"imgs/{batch} sample_{i}.png {i} {label} 1.0 14 4 2 0.5 1 1")
            images.append(img.reshape(-1))
            labels.append(label)
        with open(os.path.join(level, "metadata", f"{batch}.npy"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return np.stack(images), np.asarray(labels)


def test_reader_on_unseen_release_layout(tmp_path):
    rng = np.random.default_rng(1)
    per_batch = [rng.integers(0, 2, 4).tolist() for _ in range(12)]  # 12 batches: 10 after 9
    images, labels = make_release(tmp_path / "lra_release" / "pathfinder32", per_batch)
    for data_dir in (tmp_path / "lra_release" / "pathfinder32", tmp_path / "lra_release"):
        splits = task.load_splits(cfg(data_dir=str(data_dir)))
        got_labels = np.concatenate([splits[s]["targets"] for s in task.SPLITS])
        got_images = np.concatenate([splits[s]["inputs"] for s in task.SPLITS])
        assert len(got_labels) == 48 == sum(len(b) for b in per_batch)
        assert np.array_equal(got_labels, labels)  # numeric batch order: 0, 1, ..., 9, 10, 11
        assert np.array_equal(got_images, images)
        assert got_images.dtype == np.uint8 and got_labels.dtype == np.int32
        assert splits["train"]["inputs"].shape == (38, 1024)


def test_reader_matches_generator(tmp_path):
    generate_small(tmp_path, n=10, batch_size=4)
    splits = task.load_splits(cfg(data_dir=str(tmp_path)))
    labels = np.concatenate([splits[s]["targets"] for s in task.SPLITS])
    p = gen.PARAMS[32]
    for g in range(10):
        img, label, _ = gen.generate_image(p, HARD, gen.image_rng(0, 32, HARD, g))
        assert labels[g] == label
        split, row = ("train", g) if g < 8 else ("val", 0) if g == 8 else ("test", 0)
        assert np.array_equal(splits[split]["inputs"][row], img.reshape(-1))


@pytest.mark.parametrize("n,sizes", [(50, (40, 5, 5)), (23, (18, 3, 2)),
                                     (200_000, (160_000, 20_000, 20_000))])
def test_split_80_10_10(n, sizes):
    a, b = task.split_bounds(n)
    assert (a, b - a, n - b) == sizes


def test_split_in_order(tmp_path):
    per_batch = [[0, 1, 1, 0, 1], [1, 1, 0, 0, 0]]
    images, labels = make_release(tmp_path, per_batch)
    splits = task.load_splits(cfg(data_dir=str(tmp_path)))
    assert [len(splits[s]["targets"]) for s in task.SPLITS] == [8, 1, 1]
    assert np.array_equal(splits["train"]["inputs"], images[:8])
    assert np.array_equal(splits["val"]["inputs"], images[8:9])
    assert np.array_equal(splits["test"]["targets"], labels[9:])


def test_mask_and_zero_as_padding(tmp_path):
    make_release(tmp_path, [[0, 1] * 5])
    splits = task.load_splits(cfg(data_dir=str(tmp_path)))
    for s in task.SPLITS:
        mask = splits[s]["mask"]
        assert mask.shape == splits[s]["inputs"].shape and mask.dtype == bool and mask.all()
        assert not mask.flags.writeable  # a broadcast view, no memory
        batch = pipeline.with_masks(splits[s])
        assert batch["mask"].all()  # pixel 0 stays a real token
    quirk = task.load_splits(cfg(data_dir=str(tmp_path), zero_is_padding=True))
    assert "mask" not in quirk["train"]
    masked = pipeline.with_masks(quirk["train"])
    assert np.array_equal(masked["mask"], quirk["train"]["inputs"] != 0)
    # the pipeline's batches carry the all-True mask
    batch = pipeline.TrainBatches(splits["train"], 4, seed=0)(0)
    assert batch["mask"].shape == (4, 1024) and batch["mask"].all()


def test_numpy_metadata_accepted(tmp_path):
    images, labels = make_release(tmp_path, [[1, 0, 1, 1, 0, 0, 1, 0, 1, 0]])
    meta = tmp_path / "curv_contour_length_14" / "metadata" / "0.npy"
    rows = [line.split() for line in meta.read_text().splitlines()]
    meta.unlink()
    np.save(meta, np.array(rows))  # what the published generator's np.save writes
    splits = task.load_splits(cfg(data_dir=str(tmp_path)))
    assert np.array_equal(np.concatenate([splits[s]["targets"] for s in task.SPLITS]), labels)


def _release_for_errors(tmp_path):
    make_release(tmp_path, [[0, 1, 0, 1, 0], [1, 0, 1, 0, 1]])
    level = tmp_path / "curv_contour_length_14"
    return level, level / "metadata" / "1.npy"


def test_unreadable_png(tmp_path):
    level, meta = _release_for_errors(tmp_path)
    png = level / "imgs" / "1" / "sample_2.png"
    png.write_bytes(b"not a png at all")
    with pytest.raises(DataError) as e:
        task.load_splits(cfg(data_dir=str(tmp_path)))
    assert str(png) in str(e.value) and f"{meta}, line 3" in str(e.value)
    png.write_bytes(b"")  # the release has an empty PNG of this kind
    with pytest.raises(DataError, match="empty file") as e:
        task.load_splits(cfg(data_dir=str(tmp_path)))
    assert f"{meta}, line 3" in str(e.value)


def test_truncated_and_wrong_size_png(tmp_path):
    level, meta = _release_for_errors(tmp_path)
    png = level / "imgs" / "0" / "sample_4.png"
    png.write_bytes(png.read_bytes()[:60])
    with pytest.raises(DataError) as e:
        task.load_splits(cfg(data_dir=str(tmp_path)))
    assert str(png) in str(e.value) and "metadata/0.npy, line 5" in str(e.value)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(png)
    with pytest.raises(DataError, match="16x16; expected 32x32"):
        task.load_splits(cfg(data_dir=str(tmp_path)))


def test_metadata_pointing_at_missing_image(tmp_path):
    level, meta = _release_for_errors(tmp_path)
    (level / "imgs" / "1" / "sample_4.png").unlink()
    with pytest.raises(DataError) as e:
        task.load_splits(cfg(data_dir=str(tmp_path)))
    msg = str(e.value)
    assert "sample_4.png: image file not found" in msg and f"{meta}, line 5" in msg


@pytest.mark.parametrize("bad,what", [
    ("imgs/1 sample_1.png 1", "3 fields; expected at least 4"),
    ("imgs/1 sample_1.png 1 2 1.0 14 4 2 0.5 1 1", "bad label '2'"),
    ("imgs/1 sample_1.png one 1 1.0 14 4 2 0.5 1 1", "bad index 'one'"),
    ("../../x sample_1.png 1 1", "points outside"),
])
def test_malformed_metadata_line(tmp_path, bad, what):
    level, meta = _release_for_errors(tmp_path)
    lines = meta.read_text().splitlines()
    lines[1] = bad
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        task.load_splits(cfg(data_dir=str(tmp_path)))
    assert f"{meta}, line 2: " in str(e.value) and what in str(e.value)


def test_blank_lines(tmp_path):
    level, meta = _release_for_errors(tmp_path)
    meta.write_text(meta.read_text() + "\n\n")  # trailing blank lines are fine
    task.load_splits(cfg(data_dir=str(tmp_path)))
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{meta}, line 3: blank line")):
        task.load_splits(cfg(data_dir=str(tmp_path)))


def test_missing_level_and_metadata(tmp_path):
    make_release(tmp_path, [[0, 1] * 5], level_dir="curv_baseline")
    with pytest.raises(DataError) as e:
        task.load_splits(cfg(data_dir=str(tmp_path), level="hard"))
    assert str(tmp_path / "curv_contour_length_14") in str(e.value) and "not found" in str(e.value)
    assert len(task.load_splits(cfg(data_dir=str(tmp_path), level="easy"))["train"]["targets"]) == 8
    os.makedirs(tmp_path / "curv_contour_length_9")
    with pytest.raises(DataError, match="metadata folder not found"):
        task.load_splits(cfg(data_dir=str(tmp_path), level="intermediate"))
    with pytest.raises(DataError, match="data.level"):
        task.load_splits(cfg(data_dir=str(tmp_path), level="medium"))
    with pytest.raises(DataError, match="data.max_length"):
        task.load_splits(cfg(data_dir=str(tmp_path), level="easy", max_length=512))


def test_skip_bad_images_counts_and_logs(tmp_path, caplog):
    level, meta = _release_for_errors(tmp_path)
    (level / "imgs" / "0" / "sample_1.png").write_bytes(b"")
    (level / "imgs" / "1" / "sample_3.png").unlink()
    with caplog.at_level(logging.WARNING, logger="luna_lra.data.pathfinder"):
        splits = task.load_splits(cfg(data_dir=str(tmp_path), skip_bad_images=True))
    assert sum(len(splits[s]["targets"]) for s in task.SPLITS) == 8
    assert "skipped 2 bad images" in caplog.text and "sample_1.png" in caplog.text


def test_prepare_if_missing(tmp_path):
    data = tmp_path / "d"
    c = cfg(data_dir=str(data), generate_if_missing=False, generate_num_images=20,
            generate_seed=0, generate_batch_size=10, generate_workers=1,
            generate_show_progress=False)
    assert task.prepare_if_missing(c) is False and not data.exists()
    c = c._replace(generate_if_missing=True)
    assert task.prepare_if_missing(c) is True
    assert task.prepare_if_missing(c) is False  # complete: nothing to do
    splits = task.load_splits(c)
    assert [len(splits[s]["targets"]) for s in task.SPLITS] == [16, 2, 2]
    # a folder from elsewhere (no generator.json) is used as it is, never regenerated
    make_release(tmp_path / "rel", [[0, 1] * 5])
    assert task.prepare_if_missing(c._replace(data_dir=str(tmp_path / "rel"))) is False
    # a set written by an older renderer is refused, not silently used or mixed
    record = data / "curv_contour_length_14" / writer.PARAMS_FILE
    old = json.loads(record.read_text())
    record.write_text(json.dumps({**old, "format": 1}))
    with pytest.raises(DataError,
                       match=f"other parameters.*'format': \\(1, {writer.FORMAT_VERSION}\\)"):
        task.prepare_if_missing(c)


# ---------------------------------------------------------------- configs


def test_configs():
    for name in ("pathfinder32", "pathx"):
        for variant in ("luna16", "luna128", "luna256", "transformer", "tiny"):
            c = load_config(name, variant)
            assert c.data.task == "pathfinder" and c.data.level == "hard"
    c = load_config("pathfinder32", "luna256")
    assert (c.data.resolution, c.data.max_length, c.model.proj_len) == (32, 1024, 256)
    m, o = c.model, c.optim
    assert (m.num_layers, m.emb_dim, m.mlp_dim, m.num_heads) == (1, 128, 128, 4)
    assert (m.pooling, m.use_cls, m.classifier_dim, m.dropout_rate) == ("mean", True, 256, 0.2)
    assert m.append_eos and c.data.batch_size == 512 and c.train.eval_every == 313
    assert (o.learning_rate, o.schedule, o.warmup_steps, o.warmup_init_lr) == (
        1e-3, "inverse_sqrt", 4000, 1e-7)
    assert (o.b2, o.weight_decay, c.data.batch_size, c.train.num_steps) == (0.98, 0.0, 512, 62_500)
    assert c.model.init == "official"  # the published figures live in luna_lra/results.py
    x = load_config("pathx", "luna256")
    assert (x.data.resolution, x.data.max_length) == (128, 16_384)
    assert x.model.emb_dim == 128 and x.optim.warmup_steps == 4000
    t = load_config("pathfinder32", "transformer")
    assert (t.optim.schedule, t.optim.warmup_steps, t.optim.warmup_init_lr,
            t.train.num_steps) == ("cosine", 312, 0.0, 62_400)


# ---------------------------------------------------------------- end to end (CLI)


def _train(tmp_path, config, data_dir, *extra):
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "luna_lra.train", "--config", config, "--workdir", str(work),
           f"--config.data.data_dir={data_dir}", "--config.train.results_dir=",
           "--config.train.progress_bar=False", "--config.data.generate_if_missing=False", *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((work / "result.json").read_text())
    for key in ("test_accuracy", "val_accuracy", "step", "config"):
        assert key in result, key
    return result


@pytest.mark.slow
def test_end_to_end_pathfinder32_tiny(tmp_path):
    data = tmp_path / "pathfinder32"
    writer.generate(str(data), 32, "hard", 200, batch_size=100, workers=2, show_progress=False)
    result = _train(tmp_path, "configs/pathfinder32.py:tiny", data,
                    "--config.train.num_steps=4", "--config.train.eval_every=2",
                    "--config.train.checkpoint_every=4", "--config.data.batch_size=8",
                    "--config.data.eval_batch_size=20")
    assert result["config"]["data"]["resolution"] == 32 and 0 <= result["test_accuracy"] <= 1


@pytest.mark.slow
def test_end_to_end_pathx_tiny(tmp_path):
    data = tmp_path / "pathfinder128"
    writer.generate(str(data), 128, "hard", 30, batch_size=15, workers=2, show_progress=False)
    result = _train(tmp_path, "configs/pathx.py:tiny", data,
                    "--config.train.num_steps=2", "--config.train.eval_every=2",
                    "--config.train.checkpoint_every=2", "--config.data.batch_size=4",
                    "--config.data.eval_batch_size=3")
    assert result["config"]["data"]["max_length"] == 16_384 and result["step"] == 2
