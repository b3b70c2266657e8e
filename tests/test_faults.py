"""Trust under faults: kills at the worst moments, damaged checkpoints and metrics, divergence,
moved data, and a preemption seen by one of two processes. Each test drives the real CLI on a
small generated ListOps set (the tiny config: 200 steps, eval every 50, checkpoint every 10).
"""

import json
import os
import shutil
import signal
import socket

import jax
import numpy as np
import pytest

from conftest import one_line_error, result, run_train, start, train_args, wait_for
from luna_lra import checkpoints

pytestmark = pytest.mark.slow
STEPS = 200


def args(data_dir, workdir, steps=STEPS, **extra):
    return train_args(data_dir, workdir, steps, **extra)


def train(argv, check=True, devices=1):
    return run_train(argv, check=check, devices=devices)


def checkpoint_names(workdir):
    path = os.path.join(workdir, "checkpoints")
    return os.listdir(path) if os.path.isdir(path) else []


@pytest.fixture(scope="module")
def data_dir(listops_dir):
    return listops_dir


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted run."""
    workdir = tmp_path_factory.mktemp("reference")
    train(args(data_dir, workdir))
    return result(workdir)


@pytest.fixture(scope="module")
def half_run(data_dir, tmp_path_factory):
    """The same run stopped at step 100 (checkpoints at 90 and 100 kept)."""
    workdir = tmp_path_factory.mktemp("half")
    train(args(data_dir, workdir, steps=100))
    return str(workdir)


def array_files(checkpoint):
    """The array data files of a checkpoint's state (every OCDBT data file, whichever the
    restore reads)."""
    files = [p for p in (checkpoint / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, list((checkpoint / "state").rglob("*"))
    return files


def resume_matches(reference, data_dir, workdir, **extra):
    out = train(args(data_dir, workdir, **extra))
    ours = result(workdir)
    for key in ("params_sha256", "test_accuracy", "val_accuracy", "step"):
        assert ours[key] == reference[key], key
    return out


def test_sigkill_while_the_best_parameters_are_saved(data_dir, reference, tmp_path):
    workdir = tmp_path / "killed"
    proc = start("luna_lra.train", *args(data_dir, workdir))
    # Step 50 is an evaluation that improves (the first), so its save holds the best params.
    wait_for(lambda: any(n.startswith("50") for n in checkpoint_names(workdir)), proc,
             "the save of step 50")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resume_matches(reference, data_dir, workdir)


def test_a_damaged_newest_checkpoint_is_skipped(data_dir, reference, half_run, tmp_path):
    workdir = tmp_path / "damaged"
    shutil.copytree(half_run, workdir)
    for victim in array_files(workdir / "checkpoints" / "100"):
        with open(victim, "r+b") as f:
            f.truncate(victim.stat().st_size // 2)
    out = resume_matches(reference, data_dir, workdir)
    assert "checkpoints/100 is damaged" in out.stdout + out.stderr
    assert (workdir / "checkpoints_damaged" / "100").is_dir()


def test_flipped_bytes_fail_the_checksum(data_dir, reference, half_run, tmp_path):
    workdir = tmp_path / "flipped"
    shutil.copytree(half_run, workdir)
    for victim in array_files(workdir / "checkpoints" / "100"):
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    out = resume_matches(reference, data_dir, workdir)
    assert "checkpoints/100 is damaged" in out.stdout + out.stderr


def test_a_torn_metrics_line_is_dropped(data_dir, reference, half_run, tmp_path):
    workdir = tmp_path / "torn"
    shutil.copytree(half_run, workdir)
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 110, "split": "tra')
    resume_matches(reference, data_dir, workdir)
    rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
    assert [r["step"] for r in rows if r["split"] == "val"] == [50, 100, 150, 200]


def test_moved_data_and_another_eval_batch_size_resume(data_dir, reference, half_run,
                                                        tmp_path):
    workdir = tmp_path / "moved"
    shutil.copytree(half_run, workdir)
    moved = tmp_path / "elsewhere"
    shutil.copytree(data_dir, moved)
    out = train(args(str(moved), workdir, **{"data.eval_batch_size": 20}))
    assert "resumed from" in out.stdout
    assert result(workdir)["params_sha256"] == reference["params_sha256"]


def test_a_shorter_run_than_its_checkpoint_is_refused(data_dir, half_run, tmp_path):
    workdir = tmp_path / "shorter"
    shutil.copytree(half_run, workdir)
    out = train(args(data_dir, workdir, steps=60), check=False)
    assert out.returncode == 2
    assert "train.num_steps" in one_line_error(out)


def test_divergence_stops_at_a_finite_checkpoint(data_dir, tmp_path):
    workdir = tmp_path / "diverged"
    out = train(args(data_dir, workdir, **{"optim.learning_rate": 1e6, "optim.warmup_steps": 40,
                                            "train.log_every": 5, "train.checkpoint_every": 2}),
                check=False)
    assert out.returncode == 3, out.stderr[-2000:]
    line = one_line_error(out)
    assert "non-finite loss or weights at step" in line
    named = line.split("last good checkpoint: ")[1].split(";")[0]
    assert named != "none", line
    step = int(named.rsplit("/", 1)[1])
    params = checkpoints.load_params(str(workdir), step=step)
    leaves = [np.asarray(x) for x in jax.tree.leaves(params)]
    assert all(np.isfinite(x).all() for x in leaves)
    for name in checkpoint_names(workdir):  # no checkpoint holds non-finite weights
        if name.isdigit():
            for x in jax.tree.leaves(
                    checkpoints.load_params(str(workdir), step=int(name))):
                assert np.isfinite(np.asarray(x)).all(), name


def test_one_process_preempted_stops_both_at_one_step(data_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    workdir = tmp_path / "two"
    procs = [start("luna_lra.train", *args(data_dir, workdir, steps=2000), *[
        f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"])
        for i in range(2)]
    wait_for(lambda: "20" in checkpoint_names(workdir), procs[0], "a checkpoint")
    procs[1].send_signal(signal.SIGTERM)  # only one of the two gets the notice
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], errs[0][-2000:] + errs[1][-2000:]
    steps = {int(e.split("stopped at step ")[1].split(" ")[0]) for e in errs}
    assert len(steps) == 1, steps  # both saved and stopped at the same step
    assert str(steps.pop()) in checkpoint_names(workdir)
