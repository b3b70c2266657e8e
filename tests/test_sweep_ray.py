"""The Ray backend of the sweep, end to end on the CPU: runs packed two at a time, a trainer
SIGKILLed and retried, a mistake not retried, one run as two processes on a two-node cluster,
and a sweep interrupted and started again. Every result is checked against the same run made
by `--backend local` (params_sha256, bitwise; float32 rounding for the two-process run).
"""

import datetime
import json
import os
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from ray.cluster_utils import Cluster

from conftest import REPO, latest_checkpoint, wait_for
from luna_lra import checkpoints, report
from luna_lra.sweep import cli

pytestmark = pytest.mark.slow
SEEDS = (0, 1)

SWEEP = """
from luna_lra.sweep import grid
FIXED = {{
    "data.data_dir": {data_dir!r}, "data.max_length": 48, "data.batch_size": 16,
    "data.eval_batch_size": 50, "model.emb_dim": 16, "model.mlp_dim": 32, "model.num_heads": 2,
    "model.num_layers": 1, "model.classifier_dim": 16, "train.num_steps": {steps},
    "train.eval_every": 100, "train.log_every": 10, "train.checkpoint_every": 10,
    "train.results_dir": "", "train.progress_bar": False}}
def get_sweep():
    return (grid({{"config": ["configs/listops.py:tiny"], "seed": {seeds!r}}}, fixed=FIXED,
                 hosts={hosts})
            + grid({{"config": ["configs/listops.py:tiny"], "model.num_heads": [3]}},
                   fixed=FIXED, prefix="bad")[:{bad}])
"""


def write_sweep(tmp_path, data_dir, seeds=SEEDS, hosts=1, bad=False, steps=300,
                name="sweep.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(SWEEP.format(data_dir=data_dir, seeds=list(seeds),
                                                 hosts=hosts, bad=int(bad), steps=steps)))
    return str(path)


def sweep_cmd(path, root, *args):
    return [sys.executable, "-m", "luna_lra.sweep", "--sweep", path, "--root", str(root), *args]


def run_sweep(path, root, *args, check=True):
    out = subprocess.run(sweep_cmd(path, root, *args), cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}:\n{out.stdout[-4000:]}\n{out.stderr[-3000:]}")
    return out


def start_sweep(path, root, log, *args):
    return subprocess.Popen(sweep_cmd(path, root, *args), cwd=REPO, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, text=True)


def result(root, name):
    with open(os.path.join(root, name, "result.json")) as f:
        return json.load(f)


def record(root, name, what="run"):
    with open(os.path.join(root, name, "sweep", f"{what}.json")) as f:
        return json.load(f)


def seconds(iso):
    return datetime.datetime.fromisoformat(iso).timestamp()


@pytest.fixture(scope="module")
def data_dir(listops_dir):
    return listops_dir


@pytest.fixture(scope="module")
def local(data_dir, tmp_path_factory):
    """The sweep's runs under --backend local: {seed: result.json}, and their root."""
    tmp = tmp_path_factory.mktemp("local")
    root = tmp / "runs"
    run_sweep(write_sweep(tmp, data_dir), root)
    return {seed: result(root, f"listops-tiny-seed{seed}") for seed in SEEDS}, root


def test_two_runs_at_a_time_equal_the_local_backend(data_dir, local, tmp_path):
    root = tmp_path / "runs"
    out = run_sweep(write_sweep(tmp_path, data_dir), root, "--backend", "ray",
                    "--cpus-per-run", "1")
    assert "Ray: 1 node(s) with CPU " in out.stdout
    assert "each trainer process holds 1 CPU(s)" in out.stdout
    assert "finished 2, skipped (already finished) 0, failed 0" in out.stdout
    spans = []
    for seed in SEEDS:
        name = f"listops-tiny-seed{seed}"
        ours = result(root, name)
        assert ours["params_sha256"] == local[0][seed]["params_sha256"], name
        assert ours["test_accuracy"] == local[0][seed]["test_accuracy"]
        proc = record(root, name, "process0")
        assert proc["state"] == "exited" and proc["exit_status"] == 0 and proc["attempt"] == 1
        assert f"{name}: running on {proc['host']} (cpu)" in out.stdout
        spans.append((seconds(ours["started_at"]), seconds(ours["finished_at"])))
    overlap = min(e for _, e in spans) - max(s for s, _ in spans)
    assert overlap > 0, spans  # both trained at the same time
    print(f"time spans {spans}, overlap {overlap:.0f} s")


def test_a_killed_trainer_is_retried_and_a_mistake_is_not(data_dir, local, tmp_path, capsys):
    path = write_sweep(tmp_path, data_dir, bad=True)
    root = tmp_path / "runs"
    victim = root / "listops-tiny-seed0"
    proc = start_sweep(path, root, tmp_path / "sweep.log", "--backend", "ray",
                       "--cpus-per-run", "1", "--max-retries", "2")
    wait_for(lambda: latest_checkpoint(victim) >= 10, proc, "a checkpoint of seed0")
    pid = record(root, victim.name, "process0")["pid"]
    assert cli.main(["--sweep", path, "--root", str(root), "--status"]) == 0
    table = capsys.readouterr().out
    assert any(line.startswith("listops-tiny-seed0") and " running " in line
               for line in table.splitlines()), table
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=240) == 1  # the bad run failed
    out = (tmp_path / "sweep.log").read_text()

    assert "listops-tiny-seed0: attempt 1 ended (exit status -9: killed (SIGKILL)" in out
    assert "retrying (1 of 2 retries)" in out
    assert record(root, victim.name)["attempt"] == 2
    assert "resumed from" in (victim / "train.log").read_text()
    for seed in SEEDS:  # the killed run, resumed, is bitwise the uninterrupted one
        name = f"listops-tiny-seed{seed}"
        assert result(root, name)["params_sha256"] == local[0][seed]["params_sha256"], name

    bad = record(root, "bad-listops-tiny-num_heads3")
    assert bad["state"] == "failed" and bad["attempt"] == 1 and bad["exit_status"] == 2
    assert "a config, data or workdir mistake, not retried" in bad["error"]
    assert "model.emb_dim=16: must be a multiple of model.num_heads=3" in bad["error"]
    assert out.count("bad-listops-tiny-num_heads3: FAILED") == 1
    assert "failed 1: bad-listops-tiny-num_heads3" in out
    assert cli.main(["--sweep", path, "--root", str(root), "--status"]) == 0
    table = capsys.readouterr().out
    (line,) = [l for l in table.splitlines() if l.startswith("bad-")]
    assert " failed " in line and "must be a multiple of model.num_heads=3" in line
    assert table.splitlines()[-1] == "failed 1, finished 2"


def test_one_run_as_two_processes_on_a_two_node_cluster(data_dir, tmp_path):
    # 30 steps: long enough to train, short enough that the two runs' float32 rounding
    # differences have not grown past rounding (as in test_resilience).
    one_root, root, name = tmp_path / "one", tmp_path / "two", "listops-tiny-seed0"
    run_sweep(write_sweep(tmp_path, data_dir, seeds=[0], steps=30, name="one.py"), one_root)
    path = write_sweep(tmp_path, data_dir, seeds=[0], hosts=2, steps=30)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                            "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        out = run_sweep(path, root, "--backend", "ray", "--address", cluster.address,
                        "--cpus-per-run", "1")
    finally:
        cluster.shutdown()
    assert "Ray: 2 node(s) with CPU 2" in out.stdout
    procs = [record(root, name, f"process{i}") for i in range(2)]
    assert len({p["ray_node"] for p in procs}) == 2  # one process on each node
    assert [p["exit_status"] for p in procs] == [0, 0]
    assert "--num_processes=2" in procs[1]["command"] and "--process_id=1" in procs[1]["command"]
    ours = result(root, name)
    assert ours["devices"] == 2 and len(ours["hosts"]) == 2 and ours["num_steps"] == 30
    two = jax.tree.leaves(checkpoints.load_params(str(root / name)))
    one = jax.tree.leaves(checkpoints.load_params(str(one_root / name)))
    assert len(two) == len(one)
    for a, b in zip(two, one):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)


def test_an_interrupted_sweep_skips_what_finished_and_resumes_the_rest(data_dir, local,
                                                                      tmp_path):
    path = write_sweep(tmp_path, data_dir)
    root = tmp_path / "runs"
    workdirs = [root / f"listops-tiny-seed{seed}" for seed in SEEDS]
    proc = start_sweep(path, root, tmp_path / "first.log", "--backend", "ray",
                       "--cpus-per-run", "2")  # one run at a time
    done = lambda: [w for w in workdirs if (w / "result.json").exists()]
    wait_for(lambda: len(done()) == 1 and latest_checkpoint(
        next(w for w in workdirs if w not in done())) >= 10, proc, "one run done, one begun")
    (finished,), (unfinished,) = done(), [w for w in workdirs if w not in done()]
    proc.send_signal(signal.SIGTERM)  # as Ctrl-C: the trainer saves and exits
    assert proc.wait(timeout=120) == 143
    first = (tmp_path / "first.log").read_text()
    assert "stopping: each trainer saves a checkpoint" in first
    assert "preempted: stopped at step" in (unfinished / "train.log").read_text()
    assert not (unfinished / "result.json").exists()
    stopped_at = latest_checkpoint(unfinished)

    # The report, between the two: one cell with one result and one unfinished run.
    paths = report.write_lra_table(str(root), str(tmp_path / "results"))
    (row,) = json.loads(open(paths["json"]).read())["rows"]
    assert row["cells"]["ListOps"]["n"] == 1 and row["cells"]["ListOps"]["unfinished"] == 1
    assert "1 unfinished" in open(paths["md"]).read()

    again = run_sweep(path, root, "--backend", "ray", "--cpus-per-run", "2")
    assert f"{finished.name}: finished, skipped" in again.stdout
    assert f"{unfinished.name}: queued (resuming from the checkpoint at step {stopped_at})" \
        in again.stdout
    assert "finished 1, skipped (already finished) 1, failed 0" in again.stdout
    for seed, workdir in zip(SEEDS, workdirs):
        assert result(root, workdir.name)["params_sha256"] == local[0][seed]["params_sha256"]
