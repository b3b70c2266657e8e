"""Bring your own model: examples/linear_attention.py, copied to a folder outside the repository
and named only from configs, trains, resumes after a kill, runs in a two-run sweep, and shows up
in the report and in the efficiency benchmark, with no change to luna_lra."""

import importlib
import json
import os
import shutil
import signal
import sys
import textwrap

import pytest

from conftest import (REPO, cli, latest_checkpoint, result, run_train, start, train_args,
                      wait_for)
from luna_lra import config as config_lib
from luna_lra import models
from luna_lra.models import registry

pytestmark = pytest.mark.slow
NAME, LABEL = "linear_attention", "Linear attention (elu)"


@pytest.fixture(scope="module")
def user_code(tmp_path_factory):
    """A folder of the user's, outside the repository, holding the model file."""
    folder = tmp_path_factory.mktemp("my_models")
    shutil.copy(os.path.join(REPO, "examples", "linear_attention.py"), folder / f"{NAME}.py")
    return {"PYTHONPATH": str(folder)}


def args(data_dir, workdir, steps=40, **extra):
    return train_args(data_dir, workdir, steps, **{"model.name": NAME, "train.eval_every": 20,
                                                   **extra})


def test_it_trains_resumes_and_is_recorded_under_its_label(listops_dir, user_code, tmp_path):
    reference = tmp_path / "uninterrupted"
    out = run_train(args(listops_dir, reference), env_extra=user_code)
    ran = result(reference)
    assert ran["model"] == NAME and ran["model_label"] == LABEL
    assert ran["config"]["model"]["feature_map"] == "elu" and "proj_len" not in \
        ran["config"]["model"]
    assert f"model {LABEL} (tiny)" in out.stdout
    killed = tmp_path / "killed"
    proc = start("luna_lra.train", *args(listops_dir, killed), env_extra=user_code)
    wait_for(lambda: latest_checkpoint(killed) >= 10, proc, "a checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = run_train(args(listops_dir, killed), env_extra=user_code)
    assert "resumed from" in out.stdout
    assert result(killed)["params_sha256"] == ran["params_sha256"]


def test_a_two_run_sweep_and_the_report(listops_dir, user_code, tmp_path):
    fixed = {a.split("=", 1)[0][len("--config."):]: a.split("=", 1)[1]
             for a in args(listops_dir, "x", steps=20)[4:]}
    sweep = tmp_path / "sweep.py"
    sweep.write_text(textwrap.dedent(f"""
        from luna_lra.sweep import grid
        def get_sweep():
            return grid({{"config": ["configs/listops.py:tiny"], "seed": [0, 1]}},
                        fixed={fixed!r})
        """))
    root = tmp_path / "runs"
    out = cli("luna_lra.sweep", "--sweep", sweep, "--root", root, env_extra=user_code)
    assert "finished 2" in out.stdout
    out = cli("luna_lra.report", "--root", root, "--out", tmp_path / "table",
              env_extra=user_code)
    rows = [line for line in out.stdout.splitlines()
            if line.startswith(f"| {LABEL} · tiny (reduced) |")]
    assert rows and "(n=2)" in rows[0]  # the LRA table's row (then where its cell came from)


def test_the_efficiency_benchmark_runs_it_beside_the_transformer(user_code, tmp_path):
    cli("luna_lra.benchmark", "model", "--quick", "--models", NAME, "--out", tmp_path,
        env_extra=user_code)
    rows = json.load(open(tmp_path / "efficiency.json"))["rows"]
    ours = [r for r in rows if r["model"] == NAME]
    assert {r["model"] for r in rows} == {"transformer", NAME} and len(ours) == 2
    assert all(r["status"] == "ok" and r["step_s"] > 0 for r in ours), ours
    assert f"| {LABEL} | " in (tmp_path / "efficiency.md").read_text()


def test_an_entry_point_names_it_too(tmp_path, monkeypatch):
    """An installed distribution's `luna_lra.models` entry point finds the model by its name."""
    monkeypatch.chdir(REPO)
    shutil.copy(os.path.join(REPO, "examples", "linear_attention.py"), tmp_path / "lin_attn.py")
    info = tmp_path / "my_models-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-models\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[luna_lra.models]\nlinear = lin_attn\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    registry.get.cache_clear()
    registry._entry_points.cache_clear()
    try:
        c = config_lib.load("configs/listops.py:tiny", {"model.name": "linear",
                                                        "model.feature_map": "relu"})
        assert models.label(c.model) == "Linear attention (relu)"
        config_lib.check(c)
    finally:
        registry.get.cache_clear()
        registry._entry_points.cache_clear()
        sys.modules.pop("lin_attn", None)
