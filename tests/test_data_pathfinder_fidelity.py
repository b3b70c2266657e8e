"""The two-sample fidelity check (luna_lra.data.pathfinder.fidelity, data_prep.pathfinder
--compare): statistics, image loading, and classifiers that tell two obviously different sets
apart but not two halves of one set."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("sklearn")

from data_prep import pathfinder as cli  # noqa: E402
from luna_lra.data import DataError  # noqa: E402
from luna_lra.data.pathfinder import fidelity  # noqa: E402
from luna_lra.data.pathfinder import generator as gen  # noqa: E402
from luna_lra.data.pathfinder import writer  # noqa: E402


def strokes(count, brightness, seed, size=16, per_image=3):
    """Images of a few random horizontal or vertical strokes on black."""
    rng = np.random.default_rng(seed)
    out = np.zeros((count, size, size), np.uint8)
    for img in out:
        for _ in range(per_image):
            y, x, n = rng.integers(0, size), rng.integers(0, size - 6), rng.integers(3, 7)
            value = rng.integers(*brightness)
            if rng.random() < 0.5:
                img[y, x:x + n] = value
            else:
                img[x:x + n, y] = value
    return out


def test_statistics_of_known_images():
    a = np.zeros((2, 4, 4), np.uint8)
    a[0, 0, 0], a[0, 0, 1], a[0, 3, 3] = 255, 10, 100  # two components, one of them bright
    a[1, 2, 2] = 255
    s = fidelity.image_statistics(a)
    assert s["images"] == 2 and s["mean_pixel"] == pytest.approx((255 + 10 + 100 + 255) / 32)
    assert s["nonzero_share"] == pytest.approx(4 / 32)
    assert s["saturated_per_image"] == 1.0 and s["bright_per_image"] == 1.5
    assert s["grey_levels_per_image"] == pytest.approx((4 + 2) / 2)
    assert s["nonzero_mean"] == pytest.approx(620 / 4) and s["halo_share"] == pytest.approx(1 / 32)
    assert s["components_nonzero"] == 1.5 and s["components_bright"] == 1.5
    b = a.copy()
    b[1, 0, 0] = 7
    assert fidelity.missing_levels(a, b) == pytest.approx(1 / 4)  # 7 never occurs in a
    assert fidelity.missing_levels(b, a) == 0.0
    hist = fidelity.features(a, "histogram")
    assert hist.shape == (2, 12) and np.allclose(hist.sum(1), 1.0)
    assert hist[0, 0] == pytest.approx(14 / 16) and hist[0, 11] == pytest.approx(1 / 16)


def test_classifiers_tell_different_sets_apart_but_not_halves_of_one():
    dim = strokes(240, (40, 100), seed=0)
    bright = strokes(120, (200, 256), seed=1, per_image=6)  # more and brighter strokes
    for classifier in ("logistic_regression/pixels", "random_forest/histogram"):
        apart = fidelity.two_sample_accuracy(dim[:120], bright, classifier)["accuracy"]
        same = fidelity.two_sample_accuracy(dim[:120], dim[120:], classifier)["accuracy"]
        assert apart >= 0.9, (classifier, apart)
        assert same <= 0.65, (classifier, same)
    with pytest.raises(DataError, match="too few"):
        fidelity.two_sample_accuracy(dim[:3], bright[:3], "random_forest/histogram")


def test_load_images_from_a_level_folder_and_from_a_png_folder(tmp_path):
    writer.generate(str(tmp_path / "gen"), 32, "easy", 6, batch_size=4, workers=1,
                    show_progress=False)
    level = fidelity.load_images(str(tmp_path / "gen"), limit=5, level="easy")
    assert level.shape == (5, 32, 32) and level.dtype == np.uint8
    again = fidelity.load_images(str(tmp_path / "gen" / "curv_baseline"), limit=100)
    assert len(again) == 6 and np.array_equal(again[:5], level)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in (10, 2, 1):
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(flat / f"sample_{i}.png")
    (flat / "notes.txt").write_text("not an image")
    got = fidelity.load_images(str(flat))
    assert [int(img[0, 0]) for img in got] == [1, 2, 10]  # natural order
    with pytest.raises(DataError, match="not a folder"):
        fidelity.load_images(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no PNG images"):
        fidelity.load_images(str(tmp_path / "empty"))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(flat / "sample_11.png")  # another size
    with pytest.raises(DataError, match="sample_11.png: image is 4x4; expected 8x8"):
        fidelity.load_images(str(flat))


def save_pngs(folder, imgs):
    os.makedirs(folder, exist_ok=True)
    for i, img in enumerate(imgs):
        Image.fromarray(img).save(os.path.join(folder, f"sample_{i}.png"))


@pytest.mark.slow
def test_compare_command_writes_a_report_and_fails_a_missed_bar(tmp_path, capsys):
    """Marked slow: four cross-validated classifiers for each of two comparisons."""
    a = strokes(60, (60, 140), seed=2)
    save_pngs(tmp_path / "a", a)
    save_pngs(tmp_path / "b", strokes(60, (60, 140), seed=3))
    save_pngs(tmp_path / "c", strokes(60, (200, 256), seed=4, per_image=6))
    report = str(tmp_path / "out" / "fidelity")
    os.makedirs(tmp_path / "out")
    code = cli.main(["--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--report", report])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "| logistic_regression/pixels |" in out and "<= 60%: met" in out
    saved = json.loads(open(report + ".json").read())
    assert saved["commit"] and saved["machine"] and "--compare" in saved["command"]
    (only,) = saved["comparisons"]
    assert only["images_per_set"] == 60 and set(only["bars"]) == set(fidelity.BARS)
    assert only["statistics"]["a"] == fidelity.image_statistics(a)
    assert "## 16 px: a vs b" in open(report + ".md").read()
    assert cli.main(["--compare", str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    assert "NOT met" in capsys.readouterr().out
    assert cli.main(["--compare", str(tmp_path / "a"), str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_distractor_counts_come_from_the_set_or_its_generator(tmp_path):
    writer.generate(str(tmp_path / "gen"), 32, "easy", 5, batch_size=5, workers=1, seed=3,
                    show_progress=False)
    images = fidelity.load_images(str(tmp_path / "gen"), level="easy")
    counts = fidelity.distractor_counts(str(tmp_path / "gen"), images, "easy")
    p, contour = gen.PARAMS[32], gen.LEVELS["easy"][1]
    want = [len(gen.generate_image(p, contour, gen.image_rng(3, 32, contour, g),
                                   return_trace=True)[3]["distractors"]) for g in range(5)]
    assert counts.tolist() == want
    assert fidelity.image_statistics(images)["mean_top_left"] == images[:, :16, :16].mean()
    changed = images.copy()
    changed[2, 0, 0] ^= 1
    with pytest.raises(DataError, match="image 2 differs"):
        fidelity.distractor_counts(str(tmp_path / "gen"), changed, "easy")
    save_pngs(tmp_path / "flat", images)
    assert fidelity.distractor_counts(str(tmp_path / "flat"), images) is None
    level = tmp_path / "gen" / "curv_baseline"
    (level / fidelity.REFERENCE_FILE).write_text(json.dumps({"distractors": {"1": [7], "0": [
        1, 2, 3, 4]}}))
    assert fidelity.distractor_counts(str(level), images).tolist() == [1, 2, 3, 4, 7]


def test_the_original_must_be_commit_ab9c130(tmp_path, capsys):
    with pytest.raises(DataError, match="snakes.py: cannot read"):
        fidelity.check_original(str(tmp_path))
    (tmp_path / "snakes.py").write_text("# a later version\n")
    with pytest.raises(DataError, match="snakes.py: not the file of drewlinsley/pathfinder "
                                        "commit ab9c130"):
        fidelity.check_original(str(tmp_path))
    for args in (["--replay", str(tmp_path), "--resolution", "32", "--level", "hard",
                  "--num_images", "2"],
                 ["--out", str(tmp_path / "ref"), "--original", str(tmp_path), "--resolution",
                  "32", "--level", "hard", "--num_images", "2"]):
        assert cli.main(args) == 2
        assert "not the file of drewlinsley/pathfinder" in capsys.readouterr().err


def test_stand_ins_behave_as_scipy_1_0():
    """What the original's modules see for scipy.misc and the removed numpy names."""
    scale = fidelity._scipy10_bytescale
    assert scale(np.array([[0.0, 0.5], [1.0, 2.0]])).tolist() == [[0, 64], [128, 255]]
    assert scale(np.array([1.0, 2.0, 3.0])).tolist() == [0, 128, 255]  # min -> 0
    assert scale(np.full(3, 7.0)).tolist() == [0, 0, 0]
    raw = np.array([3, 200], np.uint8)
    assert scale(raw) is raw
    misc = fidelity._legacy_misc()
    drawing = np.zeros((9, 13), np.float32)
    drawing[4, 2:9] = 255.0
    small = misc.imresize(drawing, (5, 7), interp="lanczos")
    assert small.shape == (5, 7) and small.dtype == np.uint8 and small.max() > 0
    with pytest.raises(NotImplementedError):
        misc.imresize(drawing, (5, 7))  # bilinear: never used by the original
    legacy = fidelity._LegacyNumpy("numpy")
    assert legacy.float is float and legacy.round_(2.5) == 2.0 and legacy.pi == np.pi
    assert not hasattr(np, "float")  # numpy itself is untouched (np.float left in 1.24)
