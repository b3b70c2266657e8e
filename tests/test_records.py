"""Records that do not lie: a finished run is left as it was, a record finished after a kill has
the true totals, the rows logged after a resume are an uninterrupted run's, and a resume with
other data is refused. Real CLI runs on the small generated ListOps set."""

import json
import os
import shutil
import signal

import pytest

from conftest import (LISTOPS, latest_checkpoint, metrics, one_line_error, result, run_train,
                      start, train_args, wait_for)
from luna_lra.data import listops_generator

pytestmark = pytest.mark.slow
STEPS = 60
# checkpoints every 5 steps, one row logged at the end: every checkpoint is mid-window
CADENCE = {"train.checkpoint_every": 5, "train.log_every": STEPS, "train.eval_every": 30,
           "train.keep_checkpoints": 20}


def args(data_dir, workdir, **extra):
    return train_args(data_dir, workdir, STEPS, **{**CADENCE, **extra})


@pytest.fixture(scope="module")
def reference(listops_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    run_train(args(listops_dir, workdir))
    return str(workdir)


def test_a_finished_run_is_left_as_it_was(listops_dir, reference, tmp_path):
    workdir = tmp_path / "again"
    shutil.copytree(reference, workdir)
    before = {name: (workdir / name).read_bytes() for name in ("result.json", "metrics.jsonl",
                                                               "status.json")}
    out = run_train(args(listops_dir, workdir))
    assert "holds this run, finished" in out.stdout and "result.json is left as it was" in \
        out.stdout
    assert {name: (workdir / name).read_bytes() for name in before} == before
    assert latest_checkpoint(workdir) == STEPS


def test_a_record_finished_after_a_kill_has_the_totals_of_every_attempt(listops_dir, reference,
                                                                       tmp_path):
    """The state a SIGKILL between the last checkpoint and result.json leaves, made exactly:
    the finished run without its result.json."""
    workdir = tmp_path / "unrecorded"
    shutil.copytree(reference, workdir)
    os.remove(workdir / "result.json")
    run_train(args(listops_dir, workdir))
    ref, ours = result(reference), result(workdir)
    assert ours["params_sha256"] == ref["params_sha256"]
    assert ours["attention_ran"] == ref["attention_ran"] == {"pack": "xla", "unpack": "xla"}
    assert ours["compile_seconds"] == ref["compile_seconds"] > 0  # the first attempt compiled
    status = json.load(open(os.path.join(reference, "status.json")))  # its last logged step
    assert ours["wall_seconds"] >= status["wall_seconds"] > 0.5 * ref["wall_seconds"]
    assert ours["attempts"] == 2


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_rows_logged_after_a_resume_are_an_uninterrupted_runs(listops_dir, reference, tmp_path,
                                                              how):
    workdir = tmp_path / "stopped"
    proc = start("luna_lra.train", *args(listops_dir, workdir))
    wait_for(lambda: latest_checkpoint(workdir) >= 15, proc, "the checkpoint at step 15")
    proc.send_signal(how)  # mid-window: the row of steps 1..60 is logged at step 60
    proc.wait(timeout=120)
    stopped_at = latest_checkpoint(workdir)
    assert 15 <= stopped_at < STEPS and proc.returncode == (-9 if how == signal.SIGKILL else 143)
    out = run_train(args(listops_dir, workdir))
    assert f"at step {stopped_at}" in out.stdout
    assert metrics(workdir) == metrics(reference)
    assert result(workdir)["params_sha256"] == result(reference)["params_sha256"]


def test_a_resume_with_other_data_is_refused(listops_dir, reference, tmp_path):
    other = tmp_path / "other_data"
    listops_generator.generate(str(other), show_progress=False, **{**LISTOPS, "seed": 1})
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    os.remove(workdir / "result.json")  # an unfinished run, to be resumed
    out = run_train(args(str(other), workdir), check=False)
    assert out.returncode == 2
    line = one_line_error(out)
    assert "config field data.data_dir: the test split is not the data" in line, line
    have = json.load(open(os.path.join(reference, "result.json")))["data"]["test"]["sha256"]
    assert have[:12] in line  # both fingerprints are named
