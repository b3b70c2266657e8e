"""What a user can get wrong, and a machine can do wrong (a full disk), ends in one line with the
documented exit status: the trainer's and the report's CLIs, driven as a user would."""

import contextlib
import os
import subprocess

import pytest

from conftest import cli, latest_checkpoint, one_line_error, run_train, train_args

pytestmark = pytest.mark.slow


def test_an_unknown_task_is_one_line(tmp_path, listops_dir):
    out = run_train(train_args(listops_dir, tmp_path / "w", **{"data.task": "foo"}), check=False)
    assert out.returncode == 2
    assert "config field data.task='foo': expected one of" in one_line_error(out)


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("x")
    out = run_train(train_args(str(path), tmp_path / "w"), check=False)
    assert out.returncode == 2
    assert f"config field data.data_dir='{path}': is a file" in one_line_error(out)


def test_an_error_naming_a_huge_token_stays_short(tmp_path):
    data = tmp_path / "listops"
    data.mkdir()
    bad = "Source\tTarget\n( [MAX " + "7" * 1_000_000 + " ] )\t7\n"
    for split in ("basic_train", "basic_val", "basic_test"):
        (data / f"{split}.tsv").write_text(bad)
    out = run_train(train_args(str(data), tmp_path / "w", **{"data.generate_if_missing": False}),
                    check=False)
    assert out.returncode == 2
    line = one_line_error(out)
    assert "unknown token" in line and "(1,000,002 characters)" in line and len(line) < 600


def test_the_report_refuses_an_out_that_is_a_file_and_a_fifo_result(tmp_path):
    (tmp_path / "out").write_text("")
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    out = cli("luna_lra.report", "--root", tmp_path / "runs", "--out", tmp_path / "out",
              check=False)
    assert out.returncode == 1 and "is a file; expected a folder" in one_line_error(out)
    os.mkfifo(tmp_path / "runs" / "r1" / "result.json")
    out = cli("luna_lra.report", "--root", tmp_path / "runs", "--out", tmp_path / "t",
              check=False, timeout=60)  # a FIFO opened for reading would block forever
    assert out.returncode == 1 and "result.json: not a regular file" in out.stderr


@contextlib.contextmanager
def small_disk(path, size):
    """A tmpfs of `size` mounted at path (root only; the test skips elsewhere)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("size", ["300k", "3m"])
def test_a_full_disk_is_one_line_and_leaves_no_temporary_files(listops_dir, tmp_path, size):
    """300k: no room from the start; 3m: full after a few checkpoints."""
    with small_disk(tmp_path / "disk", size) as disk:
        workdir = disk / "run"
        out = run_train(train_args(listops_dir, workdir, **{"train.keep_checkpoints": 100,
                                                            "train.checkpoint_every": 2}),
                        check=False)
        assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
        assert out.stderr.strip().count("\n") == 0, out.stderr[-3000:]  # one line, no warning
        line = one_line_error(out)
        assert "No space left on device" in line and str(workdir) in line, line
        left = [os.path.join(d, f) for d, dirs, files in os.walk(workdir) for f in dirs + files
                if f.endswith(".tmp") or "-tmp" in f]
        assert not left, left
        if size == "3m":
            assert latest_checkpoint(workdir) >= 6  # it trained until the disk was full
