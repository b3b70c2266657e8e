"""Sweeps (python -m luna_lra.sweep): grids and names, checking sweep files, skipping finished
runs, failures, launch commands, and one real end-to-end sweep of two tiny runs + the report."""

import json
import os
import shlex
import subprocess
import sys
import textwrap
import time

import pytest

from luna_lra import config as config_lib
from luna_lra.sweep import cli, driver, local
from luna_lra.sweep import runs as sweep_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # config paths are relative to where the sweep starts


def write_sweep(tmp_path, body, name="sweep.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


# ----------------------------------------------------------------------------- grids and names


def test_grid_is_a_product_with_names_from_the_grid_values():
    runs = sweep_runs.grid({"task": ["listops", "text"], "variant": ["luna16", "luna256"],
                       "optim.learning_rate": [1e-4, 5e-4], "seed": [0, 1]},
                      fixed={"train.num_steps": 100})
    assert len(runs) == 16
    assert runs[0] == {"config": "configs/listops.py:luna16",
                       "overrides": {"train.num_steps": 100, "optim.learning_rate": 1e-4,
                                     "seed": 0},
                       "name": "listops-luna16-lr0.0001-seed0"}
    assert runs[1]["name"] == "listops-luna16-lr0.0001-seed1"
    assert runs[2]["name"] == "listops-luna16-lr0.0005-seed0"
    assert runs[-1]["config"] == "configs/text.py:luna256"
    assert runs[-1]["name"] == "text-luna256-lr0.0005-seed1"
    assert len({r["name"] for r in runs}) == 16
    assert all(sweep_runs.SAFE_NAME.match(r["name"]) for r in runs)


def test_grid_with_config_axis_prefix_and_odd_values():
    runs = sweep_runs.grid({"optim.warmup_steps": [10], "model.attention_impl": ["pallas/gpu x"]},
                      fixed={"config": "configs/listops.py:tiny"}, prefix="demo")
    assert runs == [{"config": "configs/listops.py:tiny",
                     "overrides": {"optim.warmup_steps": 10, "model.attention_impl": "pallas/gpu x"},
                     "name": "demo-listops-tiny-warmup10-attention_implpallas_gpu_x"}]
    runs = sweep_runs.grid({"config": ["configs/listops.py:tiny", "configs/listops.py:luna16"]})
    assert [r["name"] for r in runs] == ["listops-tiny", "listops-luna16"]
    with pytest.raises(sweep_runs.SweepError, match="give `config`, or both `task` and `variant`"):
        sweep_runs.grid({"seed": [0]})
    with pytest.raises(sweep_runs.SweepError, match="expected a list of values"):
        sweep_runs.grid({"task": "listops", "variant": ["tiny"]})


def test_shipped_sweep_files():
    tiny = sweep_runs.load_sweep("configs/sweeps/tiny.py")  # every config and field checked
    assert [r["name"] for r in tiny] == ["listops-tiny-lr0.001-seed0", "listops-tiny-lr0.001-seed1",
                                         "listops-tiny-lr0.003-seed0", "listops-tiny-lr0.003-seed1"]
    table = sweep_runs.load_sweep("configs/sweeps/lra_table.py", check_configs=False)
    names = [r["name"] for r in table]
    assert len(names) == 5 * 4 * 3 + 3 * 3 and len(set(names)) == len(names)
    assert "listops-luna256-seed0" in names and "pathx-luna16-seed2" in names
    assert "pathx-transformer-seed0" not in names  # the LRA Transformer failed Path-X
    # the runs whose config files exist so far pass the full check
    present = [r for r in table if os.path.isfile(r["config"].split(":")[0])]
    assert present and sweep_runs.check_runs(present) == present


# ----------------------------------------------------------------------------- bad sweep files


@pytest.mark.parametrize("runs, message", [
    ('[{"config": "configs/nope.py:tiny", "name": "a"}]',
     "run #0 'a': config 'configs/nope.py:tiny': no file 'configs/nope.py'"),
    ('[{"config": "configs/listops.py:tiny", "name": "a"},'
     ' {"config": "configs/listops.py:luna16", "name": "a"}]',
     r"run #1 'a': duplicate name 'a' \(also run #0\)"),
    ('[{"config": "configs/listops.py:luna512", "name": "big"}]',
     "run #0 'big': .*unknown variant 'luna512'"),
    ('[{"config": "configs/listops.py:tiny", "name": "../up"}]', "name '../up' is not filesystem"),
    ('[{"config": "configs/listops.py:tiny", "name": "a b"}]', "name 'a b' is not filesystem"),
    ('[{"config": "configs/listops.py:tiny", "name": "x", "overrides": {"optim.lr": 1}}]',
     "run #0 'x': config field optim.lr: no field 'lr' under optim"),
    ('[{"config": "configs/listops.py:tiny", "name": "x", "overrides": {"train.num_steps": "a"}}]',
     "run #0 'x': config field train.num_steps='a'"),
    ('[{"config": "configs/listops.py:tiny", "name": "x", "extra": 1}]',
     "run #0 'x': unknown keys \\['extra'\\]"),
    ('[{"config": "configs/listops.py:tiny"}]', "run #0: 'name' must be a non-empty string"),
    ('[]', "returned no runs"),
    ('{"config": "configs/listops.py:tiny"}', "must return a list of runs"),
])
def test_bad_sweep_files_are_refused_naming_the_run(tmp_path, capsys, runs, message):
    path = write_sweep(tmp_path, f"def get_sweep():\n    return {runs}\n")
    with pytest.raises(sweep_runs.SweepError, match=message):
        sweep_runs.load_sweep(path)
    assert cli.main(["--sweep", path, "--root", str(tmp_path / "r"), "--dry-run"]) == 2
    assert path in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_sweep_file_without_get_sweep_or_that_fails(tmp_path):
    with pytest.raises(sweep_runs.SweepError, match="sweep.py: defines no get_sweep"):
        sweep_runs.load_sweep(write_sweep(tmp_path, "RUNS = []\n"))
    body = "from luna_lra.sweep import grid\ndef get_sweep():\n    return grid({'seed': [0]})\n"
    with pytest.raises(sweep_runs.SweepError, match="bad.py: grid: give `config`"):
        sweep_runs.load_sweep(write_sweep(tmp_path, body, "bad.py"))
    broken = tmp_path / "broken_cfg.py"
    broken.write_text("def get_config(variant):\n    raise KeyError('oops')\n")
    runs = f"[{{'config': {str(broken) + ':x'!r}, 'name': 'r1'}}]"
    with pytest.raises(sweep_runs.SweepError, match="run #0 'r1': config .* could not be loaded: "
                                               "KeyError"):
        sweep_runs.load_sweep(write_sweep(tmp_path, f"def get_sweep():\n    return {runs}\n"))
    with pytest.raises(sweep_runs.SweepError, match="no sweep file"):
        sweep_runs.load_sweep(str(tmp_path / "missing.py"))


# ----------------------------------------------------------------------------- running (faked)

THREE = """
from luna_lra.sweep import grid
def get_sweep():
    return grid({"config": ["configs/listops.py:tiny"], "seed": [0, 1, 2]},
                fixed={"train.num_steps": 8})
"""


def fake_result(run, workdir):
    os.makedirs(workdir, exist_ok=True)
    result = {"task": "listops", "variant": "tiny", "model": "luna", "test_accuracy": 0.5,
              "val_accuracy": 0.5, "step": 8, "num_steps": 8,
              "config": config_lib.to_dict(sweep_runs.run_config(run))}
    with open(os.path.join(workdir, "result.json"), "w") as f:
        json.dump(result, f)


@pytest.fixture
def fake_train(monkeypatch):
    """Replaces the training subprocess: records the commands; seed 1 crashes."""
    calls = []

    def stream(cmd, log_path):
        calls.append(cmd)
        workdir = cmd[cmd.index("--workdir") + 1]
        if "--config.seed=1" in cmd:
            return 3
        run = {"config": cmd[cmd.index("--config") + 1], "name": os.path.basename(workdir),
               "overrides": dict(a[len("--config."):].split("=", 1) for a in cmd
                                 if a.startswith("--config."))}
        run["overrides"] = {"train.num_steps": 8, "seed": int(run["overrides"]["seed"])}
        fake_result(run, workdir)
        return 0

    monkeypatch.setattr(local, "_stream", stream)
    return calls


def test_finished_runs_are_skipped_failures_logged_and_the_sweep_goes_on(tmp_path, capsys,
                                                                        fake_train):
    path = write_sweep(tmp_path, THREE)
    runs = sweep_runs.load_sweep(path)
    root = tmp_path / "runs"
    fake_result(runs[0], str(root / runs[0]["name"]))  # seed 0 finished before
    assert cli.main(["--sweep", path, "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert [c[c.index("--workdir") + 1] for c in fake_train] == [
        str(root / "listops-tiny-seed1"), str(root / "listops-tiny-seed2")]
    assert "run 1/3 listops-tiny-seed0: finished, skipped" in out
    assert "run 2/3 listops-tiny-seed1: FAILED" in out and "exit status 3" in out
    assert "run 3/3 listops-tiny-seed2: done" in out
    assert "failed 1: listops-tiny-seed1" in out
    cmd = fake_train[0]
    assert cmd[:3] == [sys.executable, "-m", "luna_lra.train"]
    assert cmd[3:7] == ["--config", "configs/listops.py:tiny", "--workdir",
                        str(root / "listops-tiny-seed1")]
    assert cmd[7:] == ["--config.train.num_steps=8", "--config.seed=1"]

    # Again: only the failed run is started; --only filters; --dry-run runs nothing.
    fake_train.clear()
    assert cli.main(["--sweep", path, "--root", str(root), "--only", "seed2"]) == 0
    assert fake_train == [] and "finished, skipped" in capsys.readouterr().out
    assert cli.main(["--sweep", path, "--root", str(root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert fake_train == [] and "listops-tiny-seed1: would run (starting)" in out


def test_invalid_or_stale_results_are_not_counted_as_finished(tmp_path):
    runs = sweep_runs.load_sweep(write_sweep(tmp_path, THREE))
    workdir = tmp_path / runs[0]["name"]
    workdir.mkdir()
    (workdir / "result.json").write_text("{broken")
    status, why = driver.run_status(runs[0], str(workdir))
    assert status == "resume" and "not valid" in why
    (workdir / "result.json").unlink()
    (workdir / "checkpoints" / "2").mkdir(parents=True)  # interrupted after step 2
    assert driver.run_status(runs[0], str(workdir)) == (
        "resume", "resuming from the checkpoint at step 2")
    assert driver.run_status(runs[0], str(tmp_path / "nothing")) == ("new", "starting")
    fake_result(runs[1], str(workdir))  # the result of another seed in this workdir
    status, why = driver.run_status(runs[0], str(workdir))
    assert status == "stale" and "seed: 1 vs 0 (result vs sweep)" in why
    longer = dict(runs[0], overrides={**runs[0]["overrides"], "train.num_steps": 16})
    fake_result(runs[0], str(workdir))
    assert driver.run_status(longer, str(workdir))[0] == "resume"  # more steps: continue
    assert driver.run_status(runs[0], str(workdir))[0] == "finished"
    other_dir = dict(runs[0], overrides={**runs[0]["overrides"], "data.data_dir": "/elsewhere"})
    assert driver.run_status(other_dir, str(workdir))[0] == "finished"  # bookkeeping only


# ----------------------------------------------------------------------------- launch commands

QUOTED = """
from luna_lra.sweep import grid
def get_sweep():
    return grid({"config": ["configs/listops.py:tiny"], "seed": [0, 1]},
                fixed={"data.data_dir": "/data/my lra/it's here", "optim.learning_rate": 3e-4,
                       "train.results_dir": ""})
"""


def _commands(out):
    return [shlex.split(l) for l in out.splitlines() if l.strip() and not l.startswith("#")]


def _check_train_argv(argv, root, seed):
    assert argv[:3] == ["python", "-m", "luna_lra.train"]
    assert argv[3:7] == ["--config", "configs/listops.py:tiny", "--workdir",
                         f"{root}/listops-tiny-seed{seed}"]
    assert argv[7:] == ["--config.data.data_dir=/data/my lra/it's here",
                        "--config.optim.learning_rate=0.0003", "--config.train.results_dir=",
                        f"--config.seed={seed}"]


def test_print_commands_gpu(tmp_path, capsys):
    path = write_sweep(tmp_path, QUOTED)
    assert cli.main(["--sweep", path, "--root", "/runs/lra", "--print-commands", "gpu"]) == 0
    out = capsys.readouterr().out
    commands = _commands(out)
    assert len(commands) == 2
    for seed, argv in enumerate(commands):
        _check_train_argv(argv, "/runs/lra", seed)
    assert not (tmp_path / "runs").exists()


def test_print_commands_tpu(tmp_path, capsys):
    path = write_sweep(tmp_path, QUOTED)
    assert cli.main(["--sweep", path, "--root", "/mnt/shared/lra", "--print-commands", "tpu",
                       "--only", "seed1", "--zone", "us-central2-b"]) == 0
    out = capsys.readouterr().out
    assert "jax.distributed" in out and "every worker runs the same command" in out
    (argv,) = _commands(out)
    assert argv[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "TPU_NAME", "--zone",
                        "us-central2-b", "--worker=all"]
    assert argv[9] == "--command" and len(argv) == 11
    cd, train = argv[10].split(" && ", 1)
    assert shlex.split(cd) == ["cd", "luna_lra"]
    train = shlex.split(train)
    assert train[-1] == "--distributed=on"  # every worker joins the slice's jax.distributed
    _check_train_argv(train[:-1], "/mnt/shared/lra", 1)



def test_print_commands_gpu_multi_host_is_one_command_per_host(tmp_path, capsys):
    three_hosts = QUOTED.replace('"train.results_dir": ""}', '"train.results_dir": ""}, hosts=3')
    path = write_sweep(tmp_path, three_hosts)
    assert cli.main(["--sweep", path, "--root", "/shared/lra", "--print-commands", "gpu",
                       "--only", "seed1", "--coordinator", "node-a:1234"]) == 0
    out = capsys.readouterr().out
    assert "# host 2 of 3" in out and "shared" in out
    commands = _commands(out)
    assert len(commands) == 3
    for i, argv in enumerate(commands):
        _check_train_argv(argv[:-3], "/shared/lra", 1)
        assert argv[-3:] == ["--coordinator_address=node-a:1234", "--num_processes=3",
                             f"--process_id={i}"]


# ----------------------------------------------------------------------------- end to end

TINY_E2E = """
from luna_lra.sweep import grid
def get_sweep():
    return grid({{"config": ["configs/listops.py:tiny"], "seed": [0, 1]}}, fixed={{
        "train.num_steps": 4, "train.eval_every": 2, "train.log_every": 2,
        "train.checkpoint_every": 2, "train.progress_bar": False, "train.results_dir": "",
        "data.generate_num_train": 200, "data.generate_num_val": 50, "data.generate_num_test": 50,
        "data.max_length": 64, "data.generate_max_length": 64, "data.generate_min_length": 10,
        "data.data_dir": {data_dir!r}, "model.num_layers": 1}})
"""


@pytest.mark.slow
def test_end_to_end_sweep_then_report(tmp_path):
    path = write_sweep(tmp_path, TINY_E2E.format(data_dir=str(tmp_path / "data")))
    root, out = tmp_path / "runs", tmp_path / "results"

    def cli(module, *args):
        return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                              capture_output=True, text=True, timeout=240)

    t0 = time.time()
    run = cli("luna_lra.sweep", "--sweep", path, "--root", str(root))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for seed in (0, 1):
        workdir = root / f"listops-tiny-seed{seed}"
        result = json.loads((workdir / "result.json").read_text())
        assert result["num_steps"] == 4 and result["config"]["seed"] == seed
        assert "step 4: val accuracy" in (workdir / "train.log").read_text()  # output was logged
    assert "step 4: val accuracy" in run.stdout  # ... and streamed
    assert "finished 2, skipped (already finished) 0, failed 0" in run.stdout
    first = time.time() - t0

    again = cli("luna_lra.sweep", "--sweep", path, "--root", str(root))
    assert again.returncode == 0
    assert again.stdout.count("finished, skipped") == 2 and "luna_lra.train" not in again.stdout
    assert "finished 0, skipped (already finished) 2, failed 0" in again.stdout

    rep = cli("luna_lra.report", "--root", str(root), "--out", str(out))
    assert rep.returncode == 0, rep.stderr
    table = json.loads((out / "lra_table.json").read_text())
    (row,) = table["rows"]
    assert row["model"] == "Luna-16 · tiny" and row["reduced"]
    cell = row["cells"]["ListOps"]
    assert cell["n"] == 2 and cell["seeds"] == [0, 1] and cell["reduced"]
    assert "| Luna-16 · tiny (reduced) |" in (out / "lra_table.md").read_text()
    assert (out / "lra_curves.png").stat().st_size > 0
    print(f"two tiny runs: {first:.1f} s")
