"""Sweep bookkeeping without training: the retry policy by exit status, the per-run state
files and the --status table, the report's unfinished cells, the CLI's checks of the Ray
flags, and the Ray backend's choice and check of resources (no Ray started)."""

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from luna_lra import config as config_lib, exits, report
from luna_lra.sweep import cli, driver, ray_backend, state
from luna_lra.sweep import runs as sweep_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TWO = """
from luna_lra.sweep import grid
def get_sweep():
    return grid({"config": ["configs/listops.py:tiny"], "seed": [0, 1]},
                fixed={"train.num_steps": 8})
"""


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


@pytest.fixture
def runs(tmp_path):
    path = tmp_path / "sweep.py"
    path.write_text(textwrap.dedent(TWO))
    return sweep_runs.load_sweep(str(path)), str(path)


def write_result(run, workdir):
    os.makedirs(workdir, exist_ok=True)
    result = {"task": "listops", "variant": "tiny", "model": "luna", "test_accuracy": 0.5,
              "val_accuracy": 0.25, "step": 8, "num_steps": 8, "hosts": ["nodeA"],
              "config": config_lib.to_dict(sweep_runs.run_config(run))}
    with open(os.path.join(workdir, "result.json"), "w") as f:
        json.dump(result, f)
    open(os.path.join(workdir, "metrics.jsonl"), "w").close()  # (the report's curves)


@pytest.mark.parametrize("status, retry, words", [
    (0, False, "exit status 0: finished"), (1, True, "exit status 1: crashed"),
    (2, False, "a config, data or workdir mistake, not retried"), (3, False, "diverged, not retried"),
    (143, True, "preempted or stopped, checkpoint saved"), (-9, True, "killed (SIGKILL)"),
    (137, True, "killed (SIGKILL)"), (-6, True, "killed by signal 6"),
    (None, True, "no exit status: the process or its node died"),
])
def test_which_exit_statuses_are_retried(status, retry, words):
    assert exits.classify(status)[0] is retry
    assert words in exits.describe(status)


def attempts(statuses, run, workdir):
    """A fake launch: each attempt ends with the next status; 0 writes the result."""
    seen = []

    def launch(attempt):
        seen.append(attempt)
        status = statuses[len(seen) - 1]
        if status == 0:
            write_result(run, workdir)
        return driver.Attempt(status, f"error: attempt {attempt}" if status else "")
    return launch, seen


@pytest.mark.parametrize("statuses, max_retries, outcome, tries, final", [
    ([-9, 143, None, 0], 3, "finished", 4, "finished"),  # killed, preempted, node lost, done
    ([2], 3, "failed", 1, "failed"),                      # a mistake: never retried
    ([1, 3], 3, "failed", 2, "failed"),                   # crashed, then diverged
    ([1, 1], 1, "failed", 2, "failed"),                   # out of retries
])
def test_drive_run_retries_what_a_retry_can_fix(runs, tmp_path, capsys, statuses, max_retries,
                                                outcome, tries, final):
    run = runs[0][0]
    workdir = str(tmp_path / run["name"])
    launch, seen = attempts(statuses, run, workdir)
    planned = driver.Planned(run, workdir, "run 1/1 x", "starting", [])
    assert driver.drive_run(planned, launch, max_retries=max_retries) == outcome
    assert seen == list(range(1, tries + 1))
    record = state.read_run(workdir)
    assert record["state"] == final and record["attempt"] == tries
    out = capsys.readouterr().out
    assert out.count("retrying") == tries - 1
    if outcome == "failed":
        assert f"error: attempt {tries}" in record["error"] and "FAILED" in out


def test_a_stopping_sweep_does_not_retry(runs, tmp_path):
    run = runs[0][0]
    stopping = threading.Event()
    stopping.set()
    launch, seen = attempts([143, 0], run, str(tmp_path / "w"))
    planned = driver.Planned(run, str(tmp_path / "w"), "h", "starting", [])
    assert driver.drive_run(planned, launch, max_retries=3, stopping=stopping) == "stopped"
    assert seen == [1]


def test_last_error_line_of_the_latest_attempt(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("\n=== t1 cmd\nerror: first attempt\n\n=== t2 cmd\nstep 4: val\n"
                   "Traceback (most recent call last):\nValueError: boom\n")
    assert state.last_error_line(str(log)) == "ValueError: boom"
    with open(log, "a") as f:
        f.write("\n=== t3 cmd\nW0 warning\nerror: config field x: bad\nsome tail\n")
    assert state.last_error_line(str(log)) == "error: config field x: bad"
    assert state.last_error_line(str(tmp_path / "missing.log")) == ""


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.filterwarnings("ignore:No artists with labels")  # the report's empty curves
def test_status_table_and_report_from_the_files_alone(runs, tmp_path, capsys):
    (first, second), path = runs
    root = tmp_path / "root"
    done, going = str(root / first["name"]), str(root / second["name"])
    write_result(first, done)
    config = config_lib.to_dict(sweep_runs.run_config(second))
    state.write_run(going, second, config, "pending", attempt=2)
    state.write_process(going, 0, attempt=2, state="running", host="nodeB",
                              devices="GPU 3")
    with open(os.path.join(going, "status.json"), "w") as f:
        json.dump({"step": 4, "num_steps": 8, "steps_per_second": 2.0,
                   "best_val_accuracy": 0.125, "best_step": 4}, f)
    assert cli.main(["--sweep", path, "--root", str(root), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "state", "where", "(host", "devices)", "step",
                                "best", "val", "steps/s", "left", "last", "error"]
    assert lines[1].split()[:5] == [first["name"], "finished", "nodeA", "8/8", "25.00%"]
    assert lines[2].split() == [second["name"], "running", "(attempt", "2)", "nodeB", "GPU",
                                "3", "4/8", "12.50%", "2.00", "0m02s"]
    assert lines[3] == "finished 1, running 1"

    # The report during the sweep: the cell counts the finished run and marks the other.
    out = report.write_lra_table(str(root), str(tmp_path / "results"))
    (row,) = json.loads(open(out["json"]).read())["rows"]
    assert row["cells"]["ListOps"]["n"] == 1 and row["cells"]["ListOps"]["unfinished"] == 1
    assert "(n=1) † · 1 unfinished" in open(out["md"]).read()

    # The sweep that wrote 'pending' died: its run is 'stopped', and failed runs say why.
    state.write_run(going, second, config, "pending", attempt=2)
    record = json.load(open(os.path.join(going, "sweep", "run.json")))
    record["driver"]["pid"] = dead_pid()
    with open(os.path.join(going, "sweep", "run.json"), "w") as f:
        json.dump(record, f)
    assert state.run_state(second, going, False)["state"] == "stopped"
    state.write_run(going, second, config, "failed", attempt=1, exit_status=2,
                          error="exit status 2: a config, data or workdir mistake, not retried; x")
    row = state.run_state(second, going, False)
    assert row["state"] == "failed" and row["error"].endswith("not retried; x")


@pytest.mark.parametrize("args, message", [
    (["--gpus-per-run", "1"], "--gpus-per-run: only with --backend ray"),
    (["--address", "auto"], "--address: only with --backend ray"),
    (["--max-retries", "-1"], "--max-retries -1: expected an integer >= 0"),
    (["--backend", "ray", "--cpus-per-run", "0"], "--cpus-per-run 0: expected a number > 0"),
])
def test_bad_flags_are_one_line_errors(runs, tmp_path, capsys, args, message):
    assert cli.main(["--sweep", runs[1], "--root", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {message}"


def test_hosts_in_a_run_spec(tmp_path, capsys):
    multi = sweep_runs.grid({"config": ["configs/listops.py:tiny"]}, hosts=2)
    assert multi[0]["hosts"] == 2 and sweep_runs.check_runs(multi)[0]["hosts"] == 2
    assert sweep_runs.check_runs(sweep_runs.grid({"config": ["configs/listops.py:tiny"]}))[0]["hosts"] == 1
    with pytest.raises(sweep_runs.SweepError, match=r"run #0 'x': 'hosts' must be an integer >= 1 "
                                               r"\(trainer processes, one per host\), got 0"):
        sweep_runs.check_runs([{"config": "configs/listops.py:tiny", "name": "x", "hosts": 0}])
    path = tmp_path / "multi.py"
    path.write_text("from luna_lra.sweep import grid\ndef get_sweep():\n    return grid("
                    "{'config': ['configs/listops.py:tiny']}, hosts=2)\n")
    assert cli.main(["--sweep", str(path), "--root", str(tmp_path / "r")]) == 2
    assert "run 'listops-tiny' has hosts=2: runs that span hosts need --backend ray" in \
        capsys.readouterr().err


def test_resources_chosen_and_checked_against_the_nodes():
    choose = ray_backend.choose_resources
    node = lambda cpus, gpus, **more: {"Alive": True, "NodeManagerAddress": f"n{gpus}",
                                       "Resources": {"CPU": cpus, "GPU": gpus, **more}}
    assert choose(None, None, None, [node(8, 8)]) == ray_backend.Resources(gpus=1)
    assert choose(None, None, None, [node(2, 0)]) == ray_backend.Resources(cpus=1)
    tpu_hosts = [node(240, 0, TPU=4), node(240, 0, TPU=4)]
    assert choose(None, None, None, tpu_hosts) == ray_backend.Resources(tpu_chips=4)
    assert choose(2, None, None, []).bundle() == {"CPU": 1, "GPU": 2}
    assert choose(None, 4, None, []).task_options() == {"num_cpus": 1, "num_gpus": 0,
                                                        "resources": {"TPU": 4}}
    runs = [{"name": "a", "hosts": 1}, {"name": "pathx", "hosts": 2}]
    ray_backend.check_fits(runs, ray_backend.Resources(gpus=4), [node(16, 8), node(16, 4)])
    with pytest.raises(sweep_runs.SweepError, match=r"run 'pathx': needs 2 node\(s\) with 4 "
                                               r"GPU\(s\) each; the Ray cluster has 1 "
                                               r"\(n8: CPU 16, GPU 8; n2: CPU 16, GPU 2\)"):
        ray_backend.check_fits(runs, ray_backend.Resources(gpus=4), [node(16, 8), node(16, 2)])
    labels = {"ray.io/tpu-topology": "2x2x4", "ray.io/tpu-pod-type": "v4-32"}
    assert ray_backend.tpu_slice_shape([{"Alive": True, "Labels": labels}]) == ("2x2x4", "v4")
