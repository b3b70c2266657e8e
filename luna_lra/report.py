"""The LRA table: ours beside the published figures.

    python -m luna_lra.report --root DIR [--out results] [--skip-bad]

gathers every result.json under DIR (recursively) into OUT/lra_table.md, OUT/lra_table.json and
OUT/lra_curves.png: one row per model (Transformer, Luna-16, Luna-128, Luna-256; other variants
such as `tiny` get rows of their own), one column per task (ListOps, Text, Retrieval, Image,
Pathfinder, Path-X) and the average over the five standard tasks; each cell is the mean ± sample
std over seeds (n runs) beside the published figure, with where it came from (steps, devices,
commit, machine, config). A malformed result.json stops the report with an error naming the
file, unless --skip-bad (then it is skipped with a warning).

Reduced configurations are marked "†": a run is reduced when its variant is `tiny`, or its
train.num_steps or data.max_length was set below its config file's value (recorded in its
result.json). A cell is marked when the runs it reports are reduced; an average when any of its
five cells is. The one-run table, result.json checks and the published figures are in
luna_lra/results.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import warnings
from typing import Any, Sequence

import numpy as np

from luna_lra import config as config_lib
from luna_lra.sweep import state as sweep_state
from luna_lra.metrics_log import read_lines
from luna_lra.results import (
    COLUMNS, PUBLISHED, REDUCED_MARK, ROW_ORDER, STANDARD_TASKS, BadResultError,
    collect_results, config_spec, is_number, reduced_reasons, row_key, task_column)


# Runs whose identity (luna_lra.config.identity) differs only in the seed are seeds of one
# configuration.
_NOT_SEED_IDENTITY = ("seed",)


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
        "attention": ", ".join(f"{k} {v}" for k, v in (result.get("attention_ran") or {}).items())
        or None,
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
        "attention": _distinct(r["attention"] for r in runs),
        "config_specs": _distinct(r["config_spec"] for r in runs),
        "duplicate_seeds": sorted({s for s in seeds if seeds.count(s) > 1}, key=str),
        "runs": runs,
    }


def _published(row: str, column: str):
    return PUBLISHED.get(row, {}).get(column)


def build_lra_table(results: Sequence[dict], root: str = ".",
                    unfinished: Sequence[dict] = ()) -> dict[str, Any]:
    """The table as a JSON-able dict (accuracies in percent). `results` carry '_path';
    `unfinished`: runs a sweep has not finished yet (sweep_state.unfinished_runs), counted in
    their cells' "unfinished"."""
    cells: dict[tuple[str, str], dict[str, list]] = {}
    configs: dict[str, dict] = {}
    for result in results:
        key = (row_key(result), task_column(result))
        ident = _identity(result)
        configs.setdefault(ident, result["config"])
        cells.setdefault(key, {}).setdefault(ident, []).append(_run_record(result, root))
    waiting: dict[tuple[str, str], int] = {}
    for run in unfinished:
        key = (row_key(run), task_column(run))
        waiting[key] = waiting.get(key, 0) + 1

    extra_columns = sorted({c for _, c in set(cells) | set(waiting)} - set(COLUMNS))
    columns = list(COLUMNS) + extra_columns
    present_rows = {r for r, _ in set(cells) | set(waiting)}
    rows_order = [r for r in ROW_ORDER if r in present_rows] + sorted(present_rows - set(ROW_ORDER))
    notes: list[str] = []
    rows = []
    for row in rows_order:
        row_cells = {column: _cell(row, column, cells.get((row, column)), configs,
                                   waiting.get((row, column), 0), notes)
                     for column in columns}
        rows.append({"model": row, "cells": row_cells, "average": _average(row, row_cells, notes),
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


def _cell(row: str, column: str, groups: dict | None, configs: dict, unfinished: int,
          notes: list[str]) -> dict[str, Any]:
    """One cell: its runs grouped by configuration; the one shown, the others listed."""
    published = _published(row, column)
    if not groups:
        return {"mean": None, "n": 0, "published": published, "unfinished": unfinished}
    summaries = {ident: _group_summary(sorted(runs, key=lambda r: (str(r["seed"]), r["path"])))
                 for ident, runs in groups.items()}
    # Several configurations in one cell (e.g. a learning-rate grid): report the full
    # (non-reduced) one with the best mean validation accuracy, list the others.
    ranked = sorted(summaries.items(), key=lambda kv: (
        kv[1]["reduced"], -(kv[1]["mean_val_accuracy"] if kv[1]["mean_val_accuracy"]
                            is not None else -1.0), -kv[1]["n"]))
    best_ident, cell = ranked[0]
    cell = dict(cell, published=published, unfinished=unfinished, config=configs[best_ident],
                changed_from_config_file=cell["runs"][0]["changed_from_config_file"])
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
                     f"validation accuracy ({len(ranked) - 1} other(s) in lra_table.json)")
    if cell["duplicate_seeds"]:
        notes.append(f"{row} / {column}: seed(s) {cell['duplicate_seeds']} appear in more "
                     "than one run; every run is counted")
    return cell


def _average(row: str, row_cells: dict, notes: list[str]) -> dict[str, Any]:
    """The mean of the five standard cells, given only when all five are there."""
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
    return average


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
    waiting = f" · {cell['unfinished']} unfinished" if cell.get("unfinished") else ""
    if cell.get("mean") is None:
        return "—" + waiting + _fmt_published(cell.get("published"))
    text = f"{cell['mean']:.2f}"
    if cell["std"] is not None:
        text += f" ± {cell['std']:.2f}"
    text += f" (n={cell['n']})"
    if cell["reduced"]:
        text += f" {REDUCED_MARK}"
    return text + waiting + _fmt_published(cell["published"])


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
        "number of runs (seeds). Each run's test accuracy is taken at its best validation step. "
        "`· k unfinished`: k more runs of a sweep under this root have no result yet (pending, "
        "running, stopped or failed; `python -m luna_lra.sweep --status` says which); the "
        "cell is over the finished ones.",
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
              "| Model | Task | n | Seeds | Steps | Best steps | Devices | Commit | Machine "
              "| Attention ran | Config | Reduced |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
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
                f"| {_join(cell['machines'])} | {_join(cell['attention'])} | {_config_text(cell)} "
                f"| {reduced} |")
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
                             if r.get("split") == split and is_number(r.get(key)))
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
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r}: is a file; expected a folder for the tables")
    results, skipped = collect_results(root, skip_bad)
    for s in skipped:
        warnings.warn(f"skipped malformed result.json: {s}", stacklevel=2)
    unfinished = sweep_state.unfinished_runs(root)  # a sweep under way: their cells say so
    if not results and not unfinished:
        raise ValueError(f"no valid result.json under {root}"
                         + (f" ({len(skipped)} malformed ones skipped)" if skipped else ""))
    table = build_lra_table(results, root, unfinished)
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
        except OSError as e:  # --out cannot be written
            print(f"error: {e.filename}: {e.strerror}", file=sys.stderr)
            return 1
    with open(paths["md"]) as f:
        print(f.read())
    print(f"wrote {paths['md']}, {paths['json']} and {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
