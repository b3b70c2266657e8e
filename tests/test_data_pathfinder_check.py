"""`python -m data_prep.pathfinder --check DIR`: every listed image is decoded as training
decodes it, and any bad one makes the check fail with the first file of each kind named."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_prep import pathfinder as cli
from luna_lra.data.pathfinder import writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def level(tmp_path):
    """A generated hard level of 12 images in 3 batches; returns (data dir, level dir)."""
    writer.generate(str(tmp_path), 32, "hard", 12, batch_size=4, workers=1, seed=5,
                    show_progress=False)
    return tmp_path, tmp_path / "curv_contour_length_14"


def run_check(data_dir, capsys):
    code = cli.main(["--check", str(data_dir), "--resolution", "32"])
    return code, capsys.readouterr().out


def test_good_level_passes(level, capsys):
    data_dir, _ = level
    code, out = run_check(data_dir, capsys)
    assert code == 0, out
    assert "hard (" in out and "12 images" in out and "train/val/test 10/1/1" in out
    assert "all 12 images decode as 32x32 grey" in out
    assert "easy: no curv_baseline/" in out


@pytest.mark.parametrize("kind", ["empty", "unreadable", "wrong size", "missing"])
def test_each_kind_of_bad_image_fails_and_names_the_first(level, capsys, kind):
    data_dir, root = level
    first, second = root / "imgs" / "1" / "sample_2.png", root / "imgs" / "2" / "sample_0.png"
    for png in (first, second):
        if kind == "empty":
            png.write_bytes(b"")
        elif kind == "unreadable":  # a truncated PNG
            png.write_bytes(png.read_bytes()[:60])
        elif kind == "wrong size":
            Image.fromarray(np.zeros((16, 16), np.uint8)).save(png)
        else:
            png.unlink()
    code, out = run_check(data_dir, capsys)
    assert code == 1, out
    lines = [line for line in out.splitlines() if f" {kind} image" in line]
    assert len(lines) == 1, out  # one line per kind of problem ...
    assert lines[0].strip().startswith(f"2 {kind} images; first: {first}")  # ... naming the first
    assert "metadata/1.npy, line 3" in lines[0]


def test_several_kinds_give_one_line_each(level, capsys):
    data_dir, root = level
    (root / "imgs" / "0" / "sample_1.png").write_bytes(b"")
    (root / "imgs" / "2" / "sample_3.png").unlink()
    code, out = run_check(data_dir, capsys)
    assert code == 1
    assert "1 empty image; first: " in out and "1 missing image; first: " in out
    assert "all 12 images decode" not in out


def test_malformed_metadata_and_nothing_found(level, capsys, tmp_path):
    data_dir, root = level
    meta = root / "metadata" / "0.npy"
    lines = [line.split(" ") for line in meta.read_text().splitlines()]
    lines[0][3] = "7"  # the label field
    meta.write_text("\n".join(" ".join(f) for f in lines) + "\n")
    code, out = run_check(data_dir, capsys)
    assert code == 1 and f"{meta}, line 1: bad label '7'" in out
    code, out = run_check(tmp_path / "nothing_here", capsys)
    assert code == 1 and "no Pathfinder levels in" in out


def test_check_exit_status_from_the_command_line(level):
    data_dir, root = level
    (root / "imgs" / "0" / "sample_0.png").write_bytes(b"")
    cmd = [sys.executable, "-m", "data_prep.pathfinder", "--check", str(data_dir),
           "--resolution", "32"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "1 empty image; first: " in proc.stdout
    assert "Traceback" not in proc.stderr
