"""Runs that scale and survive: SIGKILL three times and resume, 8 devices, 2 processes (SIGTERM
and Ctrl-C: test_records.py, test_ownership.py).

Each test drives the real CLI in subprocesses on the small generated ListOps set.
"""

import os
import random
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import (LISTOPS, REPO, env, latest_checkpoint, metrics, result, run_train, start,
                      train_args, wait_for)
from luna_lra import checkpoints

pytestmark = pytest.mark.slow


def small_run_args(data_dir, workdir, steps=24, extra=()):
    return train_args(data_dir, workdir, steps, **{
        "model.proj_len": 4, "data.eval_batch_size": 16, "train.eval_every": 4,
        "train.log_every": 2, "train.checkpoint_every": 2, "train.keep_checkpoints": 2,
        "optim.warmup_steps": 4}) + list(extra)


@pytest.fixture(scope="module")
def reference(listops_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    run_train(small_run_args(listops_dir, workdir))
    return workdir


def test_sigkill_three_times_then_resume_matches_uninterrupted(listops_dir, tmp_path):
    steps = 60
    reference = str(tmp_path / "uninterrupted")
    run_train(small_run_args(listops_dir, reference, steps))
    # Kill as soon as the run has checkpointed past each of three random steps: the kill lands
    # in the following step, an evaluation or an asynchronous save, wherever the run is.
    targets = sorted(random.Random(0).sample(range(2, steps - 6), 3))
    workdir = str(tmp_path / "killed")
    for target in targets:
        proc = start("luna_lra.train", *small_run_args(listops_dir, workdir, steps))
        wait_for(lambda: latest_checkpoint(workdir) >= target, proc, f"step {target}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert latest_checkpoint(workdir) < steps
    run_train(small_run_args(listops_dir, workdir, steps))
    ours, ref = result(workdir), result(reference)
    for key in ("test_accuracy", "val_accuracy", "step", "params_sha256"):
        assert ours[key] == ref[key], key
    assert metrics(workdir) == metrics(reference)  # every row, train and evaluation


def test_eight_devices_and_two_processes_match_one_device(listops_dir, reference, tmp_path):
    ref_params = checkpoints.load_params(reference)
    eight = str(tmp_path / "eight")
    run_train(small_run_args(listops_dir, eight), devices=8)

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    two = str(tmp_path / "two")
    procs = [start("luna_lra.train", *small_run_args(listops_dir, two),
                   f"--coordinator_address=localhost:{port}", "--num_processes=2",
                   f"--process_id={i}", env_extra={"XLA_FLAGS": "--xla_force_host_platform_"
                                                                "device_count=2"})
             for i in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err[-3000:]
    assert result(two)["devices"] == 4

    for workdir in (eight, two):
        params = checkpoints.load_params(workdir)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)
        res, ref = result(workdir), result(reference)
        assert res["val_accuracy"] == pytest.approx(ref["val_accuracy"],
                                                    abs=1 / LISTOPS["num_val"] + 1e-9)


# Two processes as the trainer starts them (train.init_distributed), then a few collectives.
COLLECTIVES = r"""
import argparse, sys
import numpy as np
from jax.experimental import multihost_utils
from luna_lra import train
train.init_distributed(argparse.Namespace(distributed="auto", num_processes=2,
    coordinator_address=sys.argv[1], process_id=int(sys.argv[2])))
for value in (np.int32(7), np.full(3, 7, np.float32), np.full((2, 2), 7, np.int32)):
    multihost_utils.broadcast_one_to_all(value)
"""


def test_two_processes_neither_read_nor_write_the_compilation_cache(tmp_path):
    """On JAX 0.12 a multi-process CPU program loaded from the persistent compilation cache
    can hang in its collective (CI's multi-process runs did) or give another process's share,
    so train.init_distributed turns the cache off for such runs: pairs of processes started
    one after the other with one cache directory all finish, and it stays empty."""
    cache = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache"),
             "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
             "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    for attempt in range(2):
        with socket.socket() as s:
            s.bind(("localhost", 0))
            port = s.getsockname()[1]
        procs = [subprocess.Popen([sys.executable, "-c", COLLECTIVES, f"localhost:{port}",
                                   str(i)], cwd=REPO, env=env(2, **cache),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
        try:
            errs = [p.communicate(timeout=120)[1] for p in procs]
        finally:
            for p in procs:
                p.kill()
        assert [p.returncode for p in procs] == [0, 0], (attempt, errs[0][-2000:])
        assert not any(files for _, _, files in os.walk(tmp_path / "cache")), attempt
