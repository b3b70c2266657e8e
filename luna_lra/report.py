"""Accuracy tables: ours beside the published figures.

`write_run_table` writes the table of one run (train.py calls it at the end).

    python -m luna_lra.report --root DIR [--out results] [--skip-bad]

gathers every result.json under DIR (recursively) into OUT/lra_table.md, OUT/lra_table.json and
OUT/lra_curves.png: one row per model (Transformer, Luna-16, Luna-128, Luna-256; other variants
such as `tiny` get rows of their own), one column per task (ListOps, Text, Retrieval, Image,
Pathfinder, Path-X) and the average over the five standard tasks; each cell is the mean ± sample
std over seeds (n runs) beside the published figure, with where it came from (steps, devices,
commit, machine, config). A malformed result.json stops the report with an error naming the
file, unless --skip-bad (then it is skipped with a warning).

Reduced configurations are marked "†": a run is reduced when its variant is `tiny`, or its
train.num_steps or data.max_length is below the defaults of the variant it was started from
(the config file and variant in its command, e.g. configs/listops.py:luna256, loaded from the
repository; when that file cannot be found only the `tiny` rule applies). A cell is marked when
the runs it reports are reduced; an average when any of its five cells is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
import warnings
from typing import Any, Sequence

import numpy as np

from luna_lra import config as config_lib
from luna_lra.metrics_log import read_lines


def published_for(result: dict) -> dict[str, Any]:
    """{'paper_accuracy': the published test accuracy (fraction) for this result's model and
    task, or None; 'paper_source': where it is from}, from PUBLISHED."""
    row = PUBLISHED.get(model_label(result), {})
    figure = row.get(task_column(result)) if _variant(result) in STANDARD_VARIANTS else None
    return {"paper_accuracy": figure / 100.0 if _is_number(figure) else None,
            "paper_source": row.get("source", "") if figure is not None else ""}


def write_json_atomic(path: str, obj) -> None:
    """Writes JSON to a temporary name, then renames it: a kill never leaves half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def majority_baseline(train_targets, test_targets) -> float:
    """Test accuracy of always predicting the most frequent train label."""
    labels, counts = np.unique(np.asarray(train_targets), return_counts=True)
    majority = labels[np.argmax(counts)]
    return float(np.mean(np.asarray(test_targets) == majority))


def _pct(x) -> str:
    return "—" if x is None or x < 0 else f"{100 * x:.2f}"


def run_table(result: dict[str, Any]) -> str:
    """A Markdown table for one result.json, with how it was made."""
    reduced = result["variant"] == "tiny"
    lines = [
        f"# {result.get('name') or result['task']} — {result['model']} ({result['variant']})",
        "",
        "| Task | Model | Test acc. (%) | Val acc. (%) | Best step | Steps | Majority baseline (%) "
        "| Published (%) |",
        "|---|---|---|---|---|---|---|---|",
        f"| {result['task']} | {result['model']}:{result['variant']}{' (reduced)' if reduced else ''} "
        f"| {_pct(result['test_accuracy'])} | {_pct(result['val_accuracy'])} | {result['step']} "
        f"| {result['num_steps']} | {_pct(result['majority_baseline_test_accuracy'])} "
        f"| {_pct(result['paper_accuracy'])} |",
        "",
        f"- Published figure: {result['paper_source'] or 'none for this configuration'}",
        f"- Machine: {result['machine']}; jax {result['jax_version']}; commit {result['commit']}",
        f"- Command: `{result['command']}`",
        f"- Wall time: {result['wall_seconds']:.0f} s (first step incl. compilation: "
        f"{result['compile_seconds'] or 0:.1f} s); parameters: {result['num_params']:,}",
    ]
    if reduced:
        lines.append("- Reduced configuration: the `tiny` variant reduces the data (shorter "
                     "sequences or fewer examples) and the model so that it runs on a CPU in "
                     "minutes; it is not comparable to the published figure.")
    return "\n".join(lines) + "\n"


def write_run_table(result: dict[str, Any], results_dir: str) -> str:
    os.makedirs(results_dir, exist_ok=True)
    stem = os.path.join(results_dir, f"{result.get('name') or result['task']}_{result['variant']}")
    table = run_table(result)
    with open(stem + ".md", "w") as f:
        f.write(table)
    with open(stem + ".json", "w") as f:
        json.dump({k: v for k, v in result.items() if k != "config"} | {"config": result["config"]},
                  f, indent=2)
    return stem + ".md"


# ============================================================================ the LRA table

STANDARD_TASKS = ("ListOps", "Text", "Retrieval", "Image", "Pathfinder")
COLUMNS = STANDARD_TASKS + ("Path-X",)
STANDARD_VARIANTS = ("transformer", "luna16", "luna128", "luna256")
ROW_ORDER = ("Transformer", "Luna-16", "Luna-128", "Luna-256")
REDUCED_MARK = "†"

# Published LRA test accuracy (%). Only figures checked against the papers are listed: none for
# Luna-16 / Luna-128 here. "FAIL": the LRA paper's Transformer did not learn Path-X.
PUBLISHED: dict[str, dict[str, Any]] = {
    "Transformer": {
        "source": "LRA paper (Tay et al., ICLR 2021), Table 1, Transformer",
        "ListOps": 36.37, "Text": 64.27, "Retrieval": 57.46, "Image": 42.44, "Pathfinder": 71.40,
        "Path-X": "FAIL", "Average": 54.39,
    },
    "Luna-256": {
        "source": "Luna paper (Ma et al., NeurIPS 2021), LRA table, Luna-256",
        "ListOps": 37.98, "Text": 65.78, "Retrieval": 79.56, "Image": 47.86, "Pathfinder": 78.55,
        "Average": 61.95,
    },
}

_TASK_COLUMNS = {"listops": "ListOps", "text": "Text", "imdb": "Text", "retrieval": "Retrieval",
                 "aan": "Retrieval", "image": "Image", "cifar10": "Image",
                 "pathx": "Path-X", "path-x": "Path-X", "path_x": "Path-X"}
# Runs whose identity (luna_lra.config.identity) differs only in the seed are seeds of one
# configuration.
_NOT_SEED_IDENTITY = ("seed",)


class BadResultError(ValueError):
    """A malformed result.json; the message names the file and what is wrong."""


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_result(result: Any, path: str) -> dict[str, Any]:
    """Returns `result` if it has what the LRA table needs, else raises BadResultError."""
    if not isinstance(result, dict):
        raise BadResultError(f"{path}: expected a JSON object, got {type(result).__name__}")
    missing = [k for k in ("task", "model", "test_accuracy", "config") if k not in result]
    if missing:
        raise BadResultError(f"{path}: missing required key(s) {missing}")
    for key in ("task", "model"):
        if not isinstance(result[key], str) or not result[key]:
            raise BadResultError(f"{path}: {key!r} must be a non-empty string, got "
                                 f"{result[key]!r}")
    if not isinstance(result["config"], dict):
        raise BadResultError(f"{path}: 'config' must be an object, got "
                             f"{type(result['config']).__name__}")
    for key in ("test_accuracy", "val_accuracy"):
        if key not in result and key != "test_accuracy":
            continue
        v = result[key]
        if not _is_number(v) or not 0.0 <= v <= 1.0:
            raise BadResultError(f"{path}: {key!r} must be a number in [0, 1], got {v!r}")
    for key, kind in (("variant", str), ("commit", str), ("machine", str), ("command", str)):
        if result.get(key) is not None and not isinstance(result[key], kind):
            raise BadResultError(f"{path}: {key!r} must be a string, got {result[key]!r}")
    for key in ("step", "num_steps", "devices"):
        v = result.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise BadResultError(f"{path}: {key!r} must be an integer, got {v!r}")
    cfg = result["config"]
    for section in ("data", "model", "train"):
        if section in cfg and not isinstance(cfg[section], dict):
            raise BadResultError(f"{path}: config.{section} must be an object, got "
                                 f"{cfg[section]!r}")
    for section, key in (("train", "num_steps"), ("data", "max_length"), ("model", "proj_len"),
                         ("data", "resolution")):
        v = cfg.get(section, {}).get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise BadResultError(f"{path}: config.{section}.{key} must be an integer, got {v!r}")
    if "seed" in cfg and (not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool)):
        raise BadResultError(f"{path}: config.seed must be an integer, got {cfg['seed']!r}")
    return result


def load_result(path: str) -> dict[str, Any]:
    """Reads and validates one result.json (BadResultError naming the file if malformed)."""
    try:
        with open(path) as f:
            result = json.load(f)
    except json.JSONDecodeError as e:
        raise BadResultError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column "
                             f"{e.colno})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise BadResultError(f"{path}: cannot be read ({e})") from e
    return validate_result(result, path)


def find_results(root: str) -> list[str]:
    """Every result.json under root. A directory holding one is a run's workdir: its
    subdirectories (checkpoints/, best/, tensorboard/) are not searched."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        if "result.json" in filenames:
            paths.append(os.path.join(dirpath, "result.json"))
            dirnames[:] = []
        else:
            dirnames.sort()
    return paths


def collect_results(root: str, skip_bad: bool = False) -> tuple[list[dict], list[str]]:
    """([result + '_path'], [skipped: 'path: why']). A malformed file raises BadResultError
    listing every malformed file, unless skip_bad."""
    good, bad = [], []
    for path in find_results(root):
        try:
            result = load_result(path)
        except BadResultError as e:
            bad.append(str(e))
            continue
        good.append({**result, "_path": path})
    if bad and not skip_bad:
        raise BadResultError(f"{len(bad)} malformed result.json file(s) under {root} (fix or "
                             "remove them, or pass --skip-bad to leave them out):\n  " +
                             "\n  ".join(bad))
    return good, bad


# ----------------------------------------------------------------------------- classifying runs


def task_column(result: dict) -> str:
    """ListOps | Text | Retrieval | Image | Pathfinder | Path-X (or the task's own name).

    Pathfinder: config data.resolution 128 is Path-X, 32 Pathfinder; without that field a
    max_length of 128 * 128 tokens or more is Path-X."""
    task = result["task"].lower()
    data = result["config"].get("data", {})
    resolution = data.get("resolution")
    if task.startswith("pathfinder"):
        if resolution is None:  # no data.resolution: from the task name or the length
            m = re.match(r"pathfinder(\d+)$", task)
            length = data.get("max_length")
            resolution = int(m.group(1)) if m else (
                128 if _is_number(length) and length >= 128 * 128 else 32)
        if resolution == 128:
            return "Path-X"
        return "Pathfinder" if resolution == 32 else f"Pathfinder-{resolution}"
    return _TASK_COLUMNS.get(task, result["task"])


def model_label(result: dict) -> str:
    """Transformer | Luna-<proj_len> | the model's name."""
    if result["model"] == "transformer":
        return "Transformer"
    if result["model"] == "luna":
        proj_len = result["config"].get("model", {}).get("proj_len")
        if proj_len is None:
            m = re.match(r"luna(\d+)$", result.get("variant") or "")
            proj_len = int(m.group(1)) if m else None
        return f"Luna-{proj_len}" if proj_len is not None else "Luna"
    return result["model"]


def _variant(result: dict) -> str:
    return result.get("variant") or result["config"].get("variant") or ""


def row_key(result: dict) -> str:
    """The table row: the model label, plus the variant for non-standard variants (tiny ...)."""
    variant = _variant(result)
    label = model_label(result)
    return label if not variant or variant in STANDARD_VARIANTS else f"{label} · {variant}"


def config_spec(result: dict) -> str:
    """`configs/<task>.py:<variant>`: the config file and variant the run was made from."""
    return f"{result.get('config_file') or '?'}:{_variant(result)}"


def reduced_reasons(result: dict) -> list[str]:
    """Why this run is a reduced configuration (empty: it is not): the `tiny` variant, or
    train.num_steps / data.max_length set below its config file's value."""
    reasons = []
    if _variant(result) == "tiny":
        reasons.append("variant tiny (CPU demo: short sequences, small model)")
    changed = result.get("changed_from_config_file") or {}
    for field in ("train.num_steps", "data.max_length"):
        if field in changed:
            recipe, ran = changed[field]
            if _is_number(recipe) and _is_number(ran) and ran < recipe:
                reasons.append(f"{field} {ran} < {recipe} ({config_spec(result)} default)")
    return reasons


def _identity(result: dict) -> str:
    """Runs with the same identity are seeds of one configuration."""
    ident = config_lib.identity(result["config"])
    return json.dumps({k: v for k, v in sorted(ident.items()) if k not in _NOT_SEED_IDENTITY},
                      sort_keys=True, default=str)


def _changed_from_recipe(result: dict) -> list[str]:
    """`field=value` for each identity field the run set away from its config file's value
    (the seed aside)."""
    changed = result.get("changed_from_config_file") or {}
    keep = config_lib.identity({k: v for k, v in changed.items()})
    return [f"{k}={changed[k][1]!r}" for k in sorted(keep) if k not in _NOT_SEED_IDENTITY]


def _differences(a: dict, b: dict) -> list[str]:
    return config_lib.differences(a, b, ignore=_NOT_SEED_IDENTITY)


# ----------------------------------------------------------------------------- the table


def _run_record(result: dict, root: str) -> dict[str, Any]:
    reasons = reduced_reasons(result)
    cfg = result["config"]
    return {
        "path": os.path.relpath(result["_path"], root),
        "seed": cfg.get("seed"),
        "test_accuracy": 100 * result["test_accuracy"],
        "val_accuracy": 100 * result["val_accuracy"] if "val_accuracy" in result else None,
        "best_step": result.get("step"),
        "num_steps": cfg.get("train", {}).get("num_steps", result.get("num_steps")),
        "max_length": cfg.get("data", {}).get("max_length"),
        "devices": result.get("devices"),
        "commit": result.get("commit"),
        "machine": result.get("machine"),
        "config_spec": config_spec(result),
        "command": result.get("command"),
        "reduced": bool(reasons),
        "reduced_reasons": reasons,
        "changed_from_config_file": _changed_from_recipe(result),
    }


def _distinct(values) -> list:
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _group_summary(runs: list[dict]) -> dict[str, Any]:
    accs = np.array([r["test_accuracy"] for r in runs], dtype=float)
    vals = [r["val_accuracy"] for r in runs if r["val_accuracy"] is not None]
    seeds = [r["seed"] for r in runs]
    return {
        "mean": float(np.mean(accs)),
        "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
        "n": len(runs),
        "seeds": seeds,
        "test_accuracies": [float(a) for a in accs],
        "mean_val_accuracy": float(np.mean(vals)) if vals else None,
        "reduced": any(r["reduced"] for r in runs),
        "reduced_reasons": _distinct(x for r in runs for x in r["reduced_reasons"]),
        "steps": _distinct(r["num_steps"] for r in runs),
        "best_steps": [r["best_step"] for r in runs],
        "devices": _distinct(r["devices"] for r in runs),
        "commits": _distinct(r["commit"] for r in runs),
        "machines": _distinct(r["machine"] for r in runs),
        "config_specs": _distinct(r["config_spec"] for r in runs),
        "duplicate_seeds": sorted({s for s in seeds if seeds.count(s) > 1}, key=str),
        "runs": runs,
    }


def _published(row: str, column: str):
    return PUBLISHED.get(row, {}).get(column)


def build_lra_table(results: Sequence[dict], root: str = ".") -> dict[str, Any]:
    """The table as a JSON-able dict (accuracies in percent). `results` carry '_path'."""
    cells: dict[tuple[str, str], dict[str, list]] = {}
    configs: dict[str, dict] = {}
    for result in results:
        key = (row_key(result), task_column(result))
        ident = _identity(result)
        configs.setdefault(ident, result["config"])
        cells.setdefault(key, {}).setdefault(ident, []).append(_run_record(result, root))

    extra_columns = sorted({c for _, c in cells} - set(COLUMNS))
    columns = list(COLUMNS) + extra_columns
    present_rows = {r for r, _ in cells}
    rows_order = [r for r in ROW_ORDER if r in present_rows] + sorted(present_rows - set(ROW_ORDER))
    notes: list[str] = []
    rows = []
    for row in rows_order:
        row_cells: dict[str, Any] = {}
        for column in columns:
            groups = cells.get((row, column))
            published = _published(row, column)
            if not groups:
                row_cells[column] = {"mean": None, "n": 0, "published": published}
                continue
            summaries = {ident: _group_summary(sorted(runs, key=lambda r: (str(r["seed"]),
                                                                            r["path"])))
                         for ident, runs in groups.items()}
            # Several configurations in one cell (e.g. a learning-rate grid): report the full
            # (non-reduced) one with the best mean validation accuracy, list the others.
            ranked = sorted(summaries.items(), key=lambda kv: (
                kv[1]["reduced"], -(kv[1]["mean_val_accuracy"] if kv[1]["mean_val_accuracy"]
                                    is not None else -1.0), -kv[1]["n"]))
            best_ident, cell = ranked[0]
            cell = dict(cell)
            cell["published"] = published
            cell["config"] = configs[best_ident]
            cell["changed_from_config_file"] = ranked[0][1]["runs"][0]["changed_from_config_file"]
            cell["other_configs"] = [
                {"mean": s["mean"], "std": s["std"], "n": s["n"],
                 "mean_val_accuracy": s["mean_val_accuracy"], "reduced": s["reduced"],
                 "differences": _differences(configs[ident], configs[best_ident]),
                 "runs": [r["path"] for r in s["runs"]]}
                for ident, s in ranked[1:]]
            if cell["other_configs"]:
                full = not cell["reduced"] and any(s["reduced"] for _, s in ranked)
                notes.append(f"{row} / {column}: {len(groups)} configurations; shown: the "
                             + ("non-reduced one " if full else "one ") + "with the best mean "
                             f"validation accuracy ({len(ranked) - 1} other(s) in "
                             "lra_table.json)")
            if cell["duplicate_seeds"]:
                notes.append(f"{row} / {column}: seed(s) {cell['duplicate_seeds']} appear in more "
                             "than one run; every run is counted")
            row_cells[column] = cell
        present = [c for c in STANDARD_TASKS if row_cells[c]["mean"] is not None]
        if len(present) == len(STANDARD_TASKS):
            average = {"mean": float(np.mean([row_cells[c]["mean"] for c in STANDARD_TASKS])),
                       "tasks": len(present), "complete": True,
                       "reduced": any(row_cells[c]["reduced"] for c in STANDARD_TASKS)}
        else:
            missing = [c for c in STANDARD_TASKS if c not in present]
            average = {"mean": None, "tasks": len(present), "complete": False,
                       "missing": missing, "reduced": False}
            notes.append(f"{row}: no average ({len(present)}/5 standard tasks; missing "
                         f"{', '.join(missing)})")
        average["published"] = _published(row, "Average")
        rows.append({"model": row, "cells": row_cells, "average": average,
                     "reduced": any(c.get("reduced") for c in row_cells.values()),
                     "published_source": PUBLISHED.get(row, {}).get("source")})
    return {
        "units": "test accuracy, percent (at each run's best validation step)",
        "root": os.path.abspath(root),
        "columns": columns,
        "standard_tasks": list(STANDARD_TASKS),
        "rows": rows,
        "published": PUBLISHED,
        "reduced_rule": REDUCED_RULE,
        "notes": notes,
        "num_results": len(results),
    }


REDUCED_RULE = (
    f"{REDUCED_MARK} marks a reduced configuration: a run is reduced when its variant is 'tiny', "
    "or its train.num_steps or data.max_length was set below the value of the config file and "
    "variant it was started from (recorded in its result.json, changed_from_config_file, e.g. "
    "configs/listops.py:luna256). A cell is marked when the "
    "runs it reports are reduced, an average when any of its five cells is. Reduced results are "
    "not comparable to the published figures.")


def _fmt_pct(x) -> str:
    return "—" if x is None else f"{x:.2f}"


def _fmt_published(p) -> str:
    if p is None:
        return ""
    return f" · paper {p}" if isinstance(p, str) else f" · paper {p:.2f}"


def _cell_text(cell: dict) -> str:
    if cell.get("mean") is None:
        return "—" + _fmt_published(cell.get("published"))
    text = f"{cell['mean']:.2f}"
    if cell["std"] is not None:
        text += f" ± {cell['std']:.2f}"
    text += f" (n={cell['n']})"
    if cell["reduced"]:
        text += f" {REDUCED_MARK}"
    return text + _fmt_published(cell["published"])


def _config_text(cell: dict) -> str:
    text = _join(f"`{s}`" for s in cell["config_specs"])
    changed = cell.get("changed_from_config_file")
    if changed:
        text += " with " + ", ".join(f"`{c}`" for c in changed)
    return text


def _join(values) -> str:
    return ", ".join("—" if v is None else str(v) for v in values)


def render_lra_table(table: dict, command: str = "", skipped: Sequence[str] = ()) -> str:
    columns = table["columns"]
    lines = ["# Long Range Arena: test accuracy (%)", ""]
    lines.append(f"From {table['num_results']} result.json file(s) under `{table['root']}`"
                 + (f", made by `{command}`" if command else "") + ".")
    lines += ["", "| Model | " + " | ".join(columns) + " | Average |",
              "|---|" + "---|" * (len(columns) + 1)]
    for row in table["rows"]:
        label = row["model"] + (" (reduced)" if row["model"] not in ROW_ORDER and row["reduced"]
                                else "")
        cells = [_cell_text(row["cells"][c]) for c in columns]
        avg = row["average"]
        if avg["complete"]:
            avg_text = f"{avg['mean']:.2f}" + (f" {REDUCED_MARK}" if avg["reduced"] else "")
        else:
            avg_text = f"— ({avg['tasks']}/5 tasks)"
        avg_text += _fmt_published(avg["published"])
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {avg_text} |")
    lines += [
        "",
        "- Cells: mean ± sample standard deviation (ddof=1) of the test accuracy over seeds; n = "
        "number of runs (seeds). Each run's test accuracy is taken at its best validation step.",
        "- Published figures (`paper`): " + "; ".join(
            f"{name}: {p['source']}" for name, p in PUBLISHED.items()) + ". Path-X: the LRA "
        "paper's Transformer failed (FAIL, no number). No published figure is shown for other "
        "models (none for Luna-16 / Luna-128 here).",
        "- Average: over the five standard tasks (ListOps, Text, Retrieval, Image, Pathfinder; "
        "not Path-X), the mean of the cell means; given only when all five are present.",
        f"- {REDUCED_RULE}",
    ]
    lines += [f"- {note}" for note in table["notes"]]
    if skipped:
        lines.append(f"- Skipped {len(skipped)} malformed result.json file(s) (--skip-bad): "
                     + "; ".join(f"`{s}`" for s in skipped))
    lines += ["", "## Where each cell came from", "",
              "| Model | Task | n | Seeds | Steps | Best steps | Devices | Commit | Machine | Config "
              "| Reduced |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in table["rows"]:
        for column in columns:
            cell = row["cells"][column]
            if cell.get("mean") is None:
                continue
            reduced = f"{REDUCED_MARK} " + "; ".join(cell["reduced_reasons"]) \
                if cell["reduced"] else "no"
            lines.append(
                f"| {row['model']} | {column} | {cell['n']} | {_join(cell['seeds'])} "
                f"| {_join(cell['steps'])} | {_join(cell['best_steps'])} "
                f"| {_join(cell['devices'])} | {_join(cell['commits'])} "
                f"| {_join(cell['machines'])} | {_config_text(cell)} | {reduced} |")
    lines += ["", "Config: the config file and variant the runs were started from, with the fields "
              "that differ from its defaults (seed and bookkeeping fields such as data_dir "
              "aside). The full config of each cell, every run (path, seed, accuracies, "
              "command) and any other configurations found for a cell are in "
              "`lra_table.json`."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- curves


def plot_curves(results: Sequence[dict], path: str, root: str = ".") -> list[str]:
    """Writes a PNG: per task a column with validation accuracy (top) and training loss (bottom)
    against step, one line per run (its own colour; the line style tells the model row).
    Returns warnings (missing metrics.jsonl, unreadable lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    warns = []
    by_column: dict[str, list[tuple[dict, list[dict]]]] = {}
    for result in results:
        mpath = os.path.join(os.path.dirname(result["_path"]), "metrics.jsonl")
        if not os.path.isfile(mpath):
            warns.append(f"{mpath}: missing; no curve for {result['_path']}")
            continue
        rows, bad = read_lines(mpath)
        if bad:
            warns.append(f"{mpath}: skipped {bad} unreadable line(s)")
        by_column.setdefault(task_column(result), []).append((result, rows))
    order = [c for c in COLUMNS if c in by_column] + sorted(set(by_column) - set(COLUMNS))
    ncols = max(len(order), 1)
    fig, axes = plt.subplots(2, ncols, figsize=(4.2 * ncols, 6.5), squeeze=False)
    row_names = sorted({row_key(r) for r, _ in (x for v in by_column.values() for x in v)},
                       key=lambda r: (ROW_ORDER.index(r) if r in ROW_ORDER else len(ROW_ORDER), r))
    styles = {r: ("-", "--", "-.", ":")[i % 4] for i, r in enumerate(row_names)}
    cmap = plt.get_cmap("tab20")
    for j, column in enumerate(order):
        runs = by_column[column]
        ax_val, ax_loss = axes[0][j], axes[1][j]
        for k, (result, rows) in enumerate(runs):
            name = os.path.relpath(os.path.dirname(result["_path"]), root)
            colour, style = cmap(k % 20), styles[row_key(result)]
            for ax, split, key in ((ax_val, "val", "accuracy"), (ax_loss, "train", "loss")):
                pts = sorted((r["step"], r[key]) for r in rows
                             if r.get("split") == split and _is_number(r.get(key)))
                if pts:
                    scale = 100.0 if key == "accuracy" else 1.0
                    ax.plot([p[0] for p in pts], [scale * p[1] for p in pts], color=colour,
                            linestyle=style, label=name, linewidth=1.2,
                            marker="." if len(pts) < 20 else None)
        ax_val.set_title(column)
        ax_val.set_ylabel("validation accuracy (%)")
        ax_loss.set_ylabel("training loss")
        ax_loss.set_xlabel("step")
        for ax in (ax_val, ax_loss):
            ax.grid(alpha=0.3)
        if len(runs) <= 12:
            ax_val.legend(fontsize=6)
    if not order:
        axes[0][0].text(0.5, 0.5, "no metrics.jsonl found", ha="center", va="center")
    handles = [matplotlib.lines.Line2D([], [], color="black", linestyle=styles[r], label=r)
               for r in row_names]
    if handles:
        fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return warns


# ----------------------------------------------------------------------------- the CLI


def write_lra_table(root: str, out: str = "results", skip_bad: bool = False,
                    command: str = "") -> dict[str, str]:
    """Gathers root's result.json files into out/lra_table.md, .json and lra_curves.png.
    Raises BadResultError (every malformed file named) unless skip_bad; ValueError if none."""
    if not os.path.isdir(root):
        raise ValueError(f"--root {root!r}: no such directory")
    results, skipped = collect_results(root, skip_bad)
    for s in skipped:
        warnings.warn(f"skipped malformed result.json: {s}", stacklevel=2)
    if not results:
        raise ValueError(f"no valid result.json under {root}"
                         + (f" ({len(skipped)} malformed ones skipped)" if skipped else ""))
    table = build_lra_table(results, root)
    table["skipped_files"] = list(skipped)
    table["command"] = command
    os.makedirs(out, exist_ok=True)
    paths = {"md": os.path.join(out, "lra_table.md"), "json": os.path.join(out, "lra_table.json"),
             "png": os.path.join(out, "lra_curves.png")}
    with open(paths["md"], "w") as f:
        f.write(render_lra_table(table, command, skipped))
    with open(paths["json"], "w") as f:
        json.dump(table, f, indent=2)
    for w in plot_curves(results, paths["png"], root):
        warnings.warn(w, stacklevel=2)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m luna_lra.report",
        description="Gather every result.json under --root into the LRA table (Markdown + "
                    "JSON) and a PNG of the training curves.")
    parser.add_argument("--root", required=True, help="directory searched for result.json")
    parser.add_argument("--out", default="results", help="output directory (default: results)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip malformed result.json files with a warning instead of stopping")
    args = parser.parse_args(argv)
    command = "python -m luna_lra.report " + shlex.join(
        sys.argv[1:] if argv is None else list(argv))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda msg, *a, **k: print(f"warning: {msg}", file=sys.stderr)
        try:
            paths = write_lra_table(args.root, args.out, args.skip_bad, command)
        except (BadResultError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    with open(paths["md"]) as f:
        print(f.read())
    print(f"wrote {paths['md']}, {paths['json']} and {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
