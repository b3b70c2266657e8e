"""Runs that scale and survive: SIGKILL/SIGTERM and resume, 8 devices, 2 processes.

Each test drives the real CLI in subprocesses on a small generated ListOps set.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from luna_lra import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def small_run_args(data_dir, workdir, steps=24, extra=()):
    o = {
        "data.data_dir": data_dir, "data.generate_num_train": 256, "data.generate_num_val": 48,
        "data.generate_num_test": 48, "data.generate_min_length": 5,
        "data.generate_max_length": 32, "data.max_length": 32, "data.batch_size": 16,
        "data.eval_batch_size": 16, "model.emb_dim": 16, "model.mlp_dim": 32,
        "model.num_heads": 2, "model.num_layers": 1, "model.classifier_dim": 16,
        "model.proj_len": 4, "model.dropout_rate": 0.1, "model.attention_dropout_rate": 0.1,
        "train.num_steps": steps, "train.eval_every": 4, "train.log_every": 2,
        "train.checkpoint_every": 2, "train.keep_checkpoints": 2, "train.results_dir": "",
        "train.progress_bar": False, "optim.warmup_steps": 4,
    }
    return (["--config", "configs/listops.py:tiny", "--workdir", workdir]
            + [f"--config.{k}={v}" for k, v in o.items()] + list(extra))


def _env(devices=1):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _train(args, devices=1, check=True, **kw):
    out = subprocess.run([sys.executable, "-m", "luna_lra.train", *args], cwd=REPO,
                         env=_env(devices), capture_output=True, text=True, timeout=300, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"train failed ({out.returncode}):\n{out.stdout[-3000:]}\n"
                             f"{out.stderr[-3000:]}")
    return out


def _result(workdir):
    with open(os.path.join(workdir, "result.json")) as f:
        return json.load(f)


def _logged(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("listops"))
    _train(small_run_args(d, str(tmp_path_factory.mktemp("warmup")), steps=1))  # generates data
    return d


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    _train(small_run_args(data_dir, workdir))
    return workdir


def _latest_checkpoint(workdir):
    ckpts = os.path.join(workdir, "checkpoints")
    steps = [int(n) for n in os.listdir(ckpts) if n.isdigit()] if os.path.isdir(ckpts) else []
    return max(steps, default=0)


def test_sigkill_three_times_then_resume_matches_uninterrupted(data_dir, tmp_path):
    steps = 60
    reference = str(tmp_path / "uninterrupted")
    _train(small_run_args(data_dir, reference, steps))
    # Kill as soon as the run has checkpointed past each of three random steps: the kill lands
    # in the following step, an evaluation or an asynchronous save, wherever the run is.
    targets = sorted(random.Random(0).sample(range(2, steps - 6), 3))
    workdir = str(tmp_path / "killed")
    for target in targets:
        proc = subprocess.Popen([sys.executable, "-m", "luna_lra.train",
                                 *small_run_args(data_dir, workdir, steps)], cwd=REPO, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while _latest_checkpoint(workdir) < target:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no progress before the kill"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _latest_checkpoint(workdir) < steps
    _train(small_run_args(data_dir, workdir, steps))
    ours, ref = _result(workdir), _result(reference)
    for key in ("test_accuracy", "val_accuracy", "step", "params_sha256"):
        assert ours[key] == ref[key], key
    evals = lambda w: [r for r in _logged(w) if r["split"] in ("val", "test")]
    assert evals(workdir) == evals(reference)


def test_sigterm_saves_a_checkpoint_and_exits(data_dir, reference, tmp_path):
    workdir = str(tmp_path / "preempted")
    proc = subprocess.Popen([sys.executable, "-m", "luna_lra.train",
                             *small_run_args(data_dir, workdir, steps=2000)], cwd=REPO,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while _latest_checkpoint(workdir) < 4:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert "preempted: preemption notice at step" in err
    step = int(err.split("notice at step ")[1].split(":")[0])
    assert _latest_checkpoint(workdir) == step


def test_eight_devices_and_two_processes_match_one_device(data_dir, reference, tmp_path):
    ref_params = checkpoints.load_params(reference)
    eight = str(tmp_path / "eight")
    _train(small_run_args(data_dir, eight), devices=8)

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    two = str(tmp_path / "two")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "luna_lra.train", *small_run_args(data_dir, two), 
         f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=REPO, env=_env(devices=2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert _result(two)["devices"] == 4

    for workdir in (eight, two):
        params = checkpoints.load_params(workdir)
        flat_ref = jax_leaves(ref_params)
        for a, b in zip(jax_leaves(params), flat_ref):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
        res, ref = _result(workdir), _result(reference)
        assert res["val_accuracy"] == pytest.approx(ref["val_accuracy"], abs=1 / 48 + 1e-9)


def jax_leaves(tree):
    import jax
    return [np.asarray(x) for x in jax.tree.leaves(tree)]
