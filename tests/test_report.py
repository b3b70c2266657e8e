"""The LRA table (python -m luna_lra.report): cells, seed statistics, averages, published figures,
reduced marks, provenance, malformed files and the curves PNG. Results are written by hand."""

import json
import os

import numpy as np
import pytest

from luna_lra import report, results

# What the runs' config files set (the reduced rule compares each run with its file).
RECIPE = {"train.num_steps": 5000, "data.max_length": 2000, "optim.learning_rate": 1e-4}
TINY_RECIPE = {**RECIPE, "train.num_steps": 3000, "data.max_length": 128}


def make_run(root, name, *, task="listops", model="luna", variant="luna256", seed=0,
             test=0.38, val=0.40, num_steps=5000, max_length=2000, proj_len=None,
             resolution=None, lr=1e-4, metrics=True, **extra):
    workdir = root / name
    workdir.mkdir(parents=True)
    if proj_len is None:
        proj_len = int(variant[4:]) if variant.startswith("luna") else (16 if variant == "tiny"
                                                                          else 256)
    data = {"task": task, "max_length": max_length, "data_dir": f"/data/{name}"}
    if resolution is not None:
        data["resolution"] = resolution
    config = {"seed": seed, "variant": variant, "data": data,
              "model": {"name": model, "proj_len": proj_len},
              "optim": {"learning_rate": lr}, "train": {"num_steps": num_steps}}
    ran = {"train.num_steps": num_steps, "data.max_length": max_length,
           "optim.learning_rate": lr}
    recipe = TINY_RECIPE if variant == "tiny" else RECIPE
    result = {
        "config_file": f"configs/{task}.py",
        "changed_from_config_file": {k: [recipe[k], v] for k, v in ran.items()
                                     if v != recipe[k]},
        "task": task, "variant": variant, "model": model, "test_accuracy": test,
        "val_accuracy": val, "step": num_steps // 2, "num_steps": num_steps,
        "devices": 8, "commit": "abc1234", "machine": "8 x TPU v4 (tpu)",
        "attention_ran": {"pack": "pallas_tpu", "unpack": "pallas_tpu"},
        "command": f"python -m luna_lra.train --config configs/{task}.py:{variant} --workdir {workdir}",
        "config": config, **extra,
    }
    (workdir / "result.json").write_text(json.dumps(result))
    if metrics:
        lines = []
        for step in (10, 20, 30):
            lines.append({"step": step, "split": "train", "loss": 2.0 / step, "accuracy": 0.1})
            lines.append({"step": step, "split": "val", "loss": 2.0 / step, "accuracy": step / 100})
        (workdir / "metrics.jsonl").write_text("\n".join(json.dumps(l) for l in lines) + "\n")
    return workdir


def _table(root):
    found, skipped = results.collect_results(str(root))
    assert not skipped
    table = report.build_lra_table(found, str(root))
    return table, {row["model"]: row for row in table["rows"]}


TASKS = [("listops", None), ("text", None), ("retrieval", None), ("image", None),
         ("pathfinder", 32)]


def full_grid(root):
    """Luna-256 (3 seeds of ListOps, one of the rest, plus Path-X) and the Transformer."""
    for seed, acc in zip((0, 1, 2), (0.37, 0.38, 0.40)):
        make_run(root, f"listops-luna256-s{seed}", seed=seed, test=acc)
    for i, (task, res) in enumerate(TASKS[1:]):
        make_run(root, f"{task}-luna256", task=task, resolution=res,
                 test=0.60 + i / 100)
    make_run(root, "pathx-luna256", task="pathfinder", resolution=128, test=0.5)
    for i, (task, res) in enumerate(TASKS):
        make_run(root, f"{task}-transformer", task=task, resolution=res,
                 model="transformer", variant="transformer", test=0.50 + i / 100)


def test_cells_seed_statistics_averages_and_published_figures(tmp_path):
    full_grid(tmp_path / "runs")
    table, rows = _table(tmp_path / "runs")
    assert [r["model"] for r in table["rows"]] == ["Transformer", "Luna-256"]
    assert table["columns"][:6] == ["ListOps", "Text", "Retrieval", "Image", "Pathfinder",
                                    "Path-X"]
    cell = rows["Luna-256"]["cells"]["ListOps"]
    assert cell["n"] == 3 and cell["seeds"] == [0, 1, 2]
    assert cell["mean"] == pytest.approx(np.mean([37, 38, 40]))
    assert cell["std"] == pytest.approx(np.std([37, 38, 40], ddof=1))
    assert cell["published"] == 37.98 and not cell["reduced"]
    # provenance of the cell
    assert cell["steps"] == [5000] and cell["devices"] == [8] and cell["commits"] == ["abc1234"]
    assert cell["machines"] == ["8 x TPU v4 (tpu)"] and cell["config"]["seed"] == 0
    assert len(cell["runs"]) == 3 and cell["runs"][0]["path"].endswith("result.json")
    # one seed: no std
    assert rows["Luna-256"]["cells"]["Text"]["n"] == 1
    assert rows["Luna-256"]["cells"]["Text"]["std"] is None
    # Path-X from data.resolution = 128; Pathfinder from 32
    assert rows["Luna-256"]["cells"]["Path-X"]["mean"] == pytest.approx(50.0)
    assert rows["Luna-256"]["cells"]["Pathfinder"]["mean"] == pytest.approx(63.0)
    # averages: the mean of the five standard cells (Path-X excluded), published beside
    luna_means = [np.mean([37, 38, 40]), 60, 61, 62, 63]
    assert rows["Luna-256"]["average"]["mean"] == pytest.approx(np.mean(luna_means))
    assert rows["Luna-256"]["average"]["published"] == 61.95
    assert rows["Transformer"]["average"]["mean"] == pytest.approx(52.0)
    assert rows["Transformer"]["average"]["published"] == 54.39
    assert rows["Transformer"]["cells"]["Path-X"] == {"mean": None, "n": 0, "published": "FAIL",
                                                      "unfinished": 0}
    published_t = {c: rows["Transformer"]["cells"][c]["published"] for c in results.STANDARD_TASKS}
    assert published_t == {"ListOps": 36.37, "Text": 64.27, "Retrieval": 57.46, "Image": 42.44,
                           "Pathfinder": 71.40}

    md = report.render_lra_table(table)
    assert "| Luna-256 | 38.33 ± 1.53 (n=3) · paper 37.98 | 60.00 (n=1) · paper 65.78 |" in md
    assert "— · paper FAIL" in md
    assert f"{np.mean(luna_means):.2f} · paper 61.95 |" in md
    assert "52.00 · paper 54.39 |" in md
    assert "†" not in md.split("## Where")[0].split("- Cells")[0]  # nothing reduced
    assert "| Luna-256 | ListOps | 3 | 0, 1, 2 | 5000 | 2500, 2500, 2500 | 8 | abc1234 |" in md
    assert "| 8 x TPU v4 (tpu) | pack pallas_tpu, unpack pallas_tpu |" in md


def test_average_only_with_all_five_tasks_and_no_invented_figures(tmp_path):
    root = tmp_path / "runs"
    for task, res in TASKS[:4]:
        make_run(root, f"{task}-luna128", task=task, variant="luna128")
    make_run(root, "listops-luna16", variant="luna16", test=0.3)
    table, rows = _table(root)
    assert [r["model"] for r in table["rows"]] == ["Luna-16", "Luna-128"]
    avg = rows["Luna-128"]["average"]
    assert avg["mean"] is None and not avg["complete"] and avg["missing"] == ["Pathfinder"]
    assert any("Luna-128: no average (4/5" in n for n in table["notes"])
    for row in rows.values():
        assert all(c["published"] is None for c in row["cells"].values())
        assert row["average"]["published"] is None
    md = report.render_lra_table(table)
    luna128 = next(l for l in md.splitlines() if l.startswith("| Luna-128 |"))
    assert "— (4/5 tasks)" in luna128 and "paper" not in luna128


def test_reduced_runs_are_marked(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "tiny-s0", variant="tiny", seed=0, num_steps=3000,
             max_length=128, test=0.3)
    make_run(root, "tiny-s1", variant="tiny", seed=1, num_steps=3000,
             max_length=128, test=0.5)
    make_run(root, "short-luna256", task="text", num_steps=1000, test=0.55)
    make_run(root, "full-luna256", test=0.38)
    make_run(root, "short-len", task="image", max_length=512, test=0.4)
    table, rows = _table(root)
    tiny = rows["Luna-16 · tiny"]
    assert tiny["reduced"] and tiny["cells"]["ListOps"]["reduced"]
    assert tiny["cells"]["ListOps"]["mean"] == pytest.approx(40.0)
    assert any("variant tiny" in r for r in tiny["cells"]["ListOps"]["reduced_reasons"])
    luna = rows["Luna-256"]["cells"]
    assert not luna["ListOps"]["reduced"]
    assert luna["Text"]["reduced"]
    assert luna["Text"]["reduced_reasons"] == [
        "train.num_steps 1000 < 5000 (configs/text.py:luna256 default)"]
    assert luna["Image"]["reduced"] and "data.max_length 512 < 2000" in \
        luna["Image"]["reduced_reasons"][0]
    md = report.render_lra_table(table)
    assert "| Luna-16 · tiny (reduced) | 40.00 ± 14.14 (n=2) † |" in md
    assert "| Luna-256 | 38.00 (n=1) · paper 37.98 | 55.00 (n=1) † · paper 65.78 |" in md
    assert "† marks a reduced configuration" in md


def test_a_full_run_beats_a_reduced_one_and_val_picks_among_configs(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "reduced", num_steps=100, test=0.9, val=0.9)
    make_run(root, "lr1e-4", lr=1e-4, test=0.30, val=0.31)
    make_run(root, "lr5e-4-s0", lr=5e-4, test=0.36, val=0.40, seed=0)
    make_run(root, "lr5e-4-s1", lr=5e-4, test=0.38, val=0.42, seed=1)
    table, rows = _table(root)
    cell = rows["Luna-256"]["cells"]["ListOps"]
    assert cell["n"] == 2 and cell["mean"] == pytest.approx(37.0) and not cell["reduced"]
    assert cell["config"]["optim"]["learning_rate"] == 5e-4
    assert "optim.learning_rate=0.0005" in cell["changed_from_config_file"]
    assert "`optim.learning_rate=0.0005`" in report.render_lra_table(table)
    assert len(cell["other_configs"]) == 2
    assert any("optim.learning_rate" in d for o in cell["other_configs"]
               for d in o["differences"])
    assert any("3 configurations" in n for n in table["notes"])


def test_cli_writes_markdown_json_and_png(tmp_path, capsys):
    full_grid(tmp_path / "runs")
    make_run(tmp_path / "runs", "nested/deeper/tiny", variant="tiny",
             num_steps=3000, max_length=128)
    out = tmp_path / "results"
    assert report.main(["--root", str(tmp_path / "runs"), "--out", str(out)]) == 0
    md = (out / "lra_table.md").read_text()
    assert "| Luna-16 · tiny (reduced) |" in md  # found recursively
    data = json.loads((out / "lra_table.json").read_text())
    assert data["num_results"] == 14 and "reduced_rule" in data
    assert [r["model"] for r in data["rows"]] == ["Transformer", "Luna-256", "Luna-16 · tiny"]
    png = (out / "lra_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("content, what", [
    ("{not json", "not valid JSON"),
    (json.dumps({"task": "listops", "model": "luna", "config": {}}),
     "missing required key(s) ['test_accuracy']"),
    (json.dumps({"task": "listops", "model": "luna", "test_accuracy": "0.5", "config": {}}),
     "'test_accuracy' must be a number in [0, 1]"),
    (json.dumps({"task": "listops", "model": "luna", "test_accuracy": 0.5, "config": []}),
     "'config' must be an object"),
    (json.dumps([1, 2]), "expected a JSON object"),
])
def test_malformed_result_is_refused_naming_the_file(tmp_path, capsys, content, what):
    make_run(tmp_path / "runs", "good")
    bad = tmp_path / "runs" / "bad" / "result.json"
    bad.parent.mkdir()
    bad.write_text(content)
    out = tmp_path / "results"
    assert report.main(["--root", str(tmp_path / "runs"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: " in err and what in err and "--skip-bad" in err
    assert not (out / "lra_table.md").exists()

    assert report.main(["--root", str(tmp_path / "runs"), "--out", str(out), "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert "warning: skipped malformed result.json" in err and str(bad) in err
    md = (out / "lra_table.md").read_text()
    assert "Skipped 1 malformed result.json" in md and str(bad) in md
    assert json.loads((out / "lra_table.json").read_text())["num_results"] == 1


def test_every_malformed_file_is_listed_and_no_results_is_an_error(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text("[]")
    with pytest.raises(results.BadResultError) as e:
        results.collect_results(str(tmp_path))
    assert str(tmp_path / "a" / "result.json") in str(e.value)
    assert str(tmp_path / "b" / "result.json") in str(e.value)
    assert report.main(["--root", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report.main(["--root", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    assert "no valid result.json" in capsys.readouterr().err


def test_curves_survive_missing_and_broken_metrics(tmp_path):
    make_run(tmp_path / "runs", "a", metrics=False)
    b = make_run(tmp_path / "runs", "b", task="text")
    with open(b / "metrics.jsonl", "a") as f:
        f.write("{broken\n")
    found, _ = results.collect_results(str(tmp_path / "runs"))
    warns = report.plot_curves(found, str(tmp_path / "c.png"), str(tmp_path / "runs"))
    assert any("metrics.jsonl: missing" in w for w in warns)
    assert any("skipped 1 unreadable line" in w for w in warns)
    assert (tmp_path / "c.png").stat().st_size > 0


def test_rows_and_columns_from_result_fields():
    def res(task, model_name, variant, **cfg):
        return {"task": task, "model": model_name, "variant": variant, "config": cfg}

    assert results.task_column(res("pathfinder", "luna", "luna16", data={"resolution": 128})) \
        == "Path-X"
    assert results.task_column(res("pathfinder", "luna", "luna16", data={})) == "Pathfinder"
    assert results.task_column(res("pathfinder", "luna", "luna16", data={"max_length": 16384})) \
        == "Path-X"
    assert results.task_column(res("pathfinder", "luna", "luna16", data={"resolution": 32})) \
        == "Pathfinder"
    assert results.task_column(res("retrieval", "luna", "luna16")) == "Retrieval"
    assert results.row_key(res("text", "luna", "luna128", model={"proj_len": 128})) == "Luna-128"
    assert results.row_key(res("text", "luna", "luna256", model={"proj_len": 64})) == "Luna-64"
    assert results.row_key(res("text", "transformer", "transformer")) == "Transformer"
    assert results.row_key(res("text", "luna", "tiny", model={"proj_len": 16})) == "Luna-16 · tiny"


def test_per_run_table_functions_still_work(tmp_path):
    result = {"task": "listops", "variant": "tiny", "model": "luna", "test_accuracy": 0.5,
              "val_accuracy": 0.6, "step": 10, "num_steps": 20,
              "majority_baseline_test_accuracy": 0.17, "paper_accuracy": None,
              "paper_source": "", "machine": "cpu", "jax_version": "x", "commit": "c",
              "command": "cmd", "wall_seconds": 1.0, "compile_seconds": 0.5, "num_params": 10,
              "config": {}}
    assert "(reduced)" in results.run_table(result)
    path = results.write_run_table(result, str(tmp_path))
    assert os.path.exists(path) and os.path.exists(tmp_path / "listops_tiny.json")
    assert results.majority_baseline([1, 1, 2], [1, 2]) == 0.5


def test_published_figures_come_from_the_one_table():
    def res(task, name, variant, **cfg):
        return {"task": task, "model": name, "variant": variant, "config": cfg}

    luna = results.published_for(res("listops", "luna", "luna256", model={"proj_len": 256}))
    assert luna["paper_accuracy"] == pytest.approx(0.3798)
    assert luna["paper_source"] == results.PUBLISHED["Luna-256"]["source"]
    assert results.published_for(res("text", "transformer", "transformer"))["paper_accuracy"] \
        == pytest.approx(0.6427)
    for none in (res("listops", "luna", "luna16", model={"proj_len": 16}),  # none checked
                 res("listops", "luna", "tiny", model={"proj_len": 256})):  # not the recipe
        assert results.published_for(none) == {"paper_accuracy": None, "paper_source": ""}
    failed = results.published_for(res("pathfinder", "transformer", "transformer",
                                       data={"resolution": 128}))
    assert failed["paper_accuracy"] is None and failed["paper_source"].endswith(": FAIL")


def test_an_unreadable_folder_is_named_not_skipped(tmp_path, monkeypatch):
    make_run(tmp_path / "runs", "a")
    (tmp_path / "runs" / "locked").mkdir()
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(results.BadResultError, match=r"locked: cannot be read \(Permission"):
        results.collect_results(str(tmp_path / "runs"))
    found, bad = results.collect_results(str(tmp_path / "runs"), skip_bad=True)
    assert len(found) == 1 and "locked: cannot be read" in bad[0]


def test_a_model_of_a_users_is_its_recorded_label():
    result = {"task": "text", "model": "my_pkg.gone", "variant": "mine",
              "model_label": "My attention (k=3)", "config": {"model": {"name": "my_pkg.gone"}}}
    assert results.row_key(result) == "My attention (k=3)"
    del result["model_label"]  # an older record, its model not importable here: its name
    assert results.row_key(result) == "my_pkg.gone"
