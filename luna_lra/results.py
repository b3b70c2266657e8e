"""A run's result.json: what it must hold, reading and finding them, writing one safely,
the one-run table, which LRA cell a result belongs to, and the published figures (the one
table of them).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from typing import Any

import numpy as np

from luna_lra import models


def published_for(result: dict) -> dict[str, Any]:
    """{'paper_accuracy': the published test accuracy (a fraction) of this result's model and
    task, or None; 'paper_source': where it is from (with 'FAIL' where the paper says the model
    did not learn the task)}, from PUBLISHED; a reduced variant has none."""
    row = PUBLISHED.get(model_label(result), {})
    figure = row.get(task_column(result)) if variant_of(result) != REDUCED_VARIANT else None
    if figure is None:
        return {"paper_accuracy": None, "paper_source": ""}
    if isinstance(figure, str):
        return {"paper_accuracy": None, "paper_source": f"{row['source']}: {figure}"}
    return {"paper_accuracy": figure / 100.0, "paper_source": row["source"]}


def write_json_atomic(path: str, obj) -> None:
    """Writes JSON to a temporary name, then renames it: a kill never leaves half a file. A
    failed write (a full disk) leaves no temporary file and raises OSError naming `path`."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise OSError(e.errno, e.strerror, path) from None


def majority_baseline(train_targets, test_targets) -> float:
    """Test accuracy of always predicting the most frequent train label."""
    labels, counts = np.unique(np.asarray(train_targets), return_counts=True)
    majority = labels[np.argmax(counts)]
    return float(np.mean(np.asarray(test_targets) == majority))


def _pct(x) -> str:
    return "—" if x is None or x < 0 else f"{100 * x:.2f}"


def run_table(result: dict[str, Any]) -> str:
    """A Markdown table for one result.json, with how it was made."""
    reduced = result["variant"] == REDUCED_VARIANT
    label = model_label(result)
    lines = [
        f"# {result.get('name') or result['task']} — {label} ({result['variant']})",
        "",
        "| Task | Model | Test acc. (%) | Val acc. (%) | Best step | Steps | Majority baseline (%) "
        "| Published (%) |",
        "|---|---|---|---|---|---|---|---|",
        f"| {result['task']} | {label} ({result['variant']}){' (reduced)' if reduced else ''} "
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
REDUCED_VARIANT = "tiny"  # every config file's CPU demo: reduced data and model
ROW_ORDER = ("Transformer", "Luna-16", "Luna-128", "Luna-256")  # the LRA table's first rows
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


class BadResultError(ValueError):
    """A malformed result.json; the message names the file and what is wrong."""


def is_number(x) -> bool:
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
        if not is_number(v) or not 0.0 <= v <= 1.0:
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
    if not os.path.isfile(path):  # a FIFO or a device would block or never end
        raise BadResultError(f"{path}: not a regular file")
    try:
        with open(path) as f:
            result = json.load(f)
    except json.JSONDecodeError as e:
        raise BadResultError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column "
                             f"{e.colno})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise BadResultError(f"{path}: cannot be read ({e})") from e
    return validate_result(result, path)


def find_results(root: str, unreadable: list[str] | None = None) -> list[str]:
    """Every result.json under root. A directory holding one is a run's workdir: its
    subdirectories (checkpoints/, best/, tensorboard/) are not searched. Folders that cannot
    be read are added to `unreadable` ('path: why')."""
    paths = []
    on_error = None if unreadable is None else (
        lambda e: unreadable.append(f"{e.filename}: cannot be read ({e.strerror})"))
    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
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
    for path in find_results(root, bad):
        try:
            result = load_result(path)
        except BadResultError as e:
            bad.append(str(e))
            continue
        good.append({**result, "_path": path})
    if bad and not skip_bad:
        raise BadResultError(f"{len(bad)} malformed result.json file(s) or unreadable "
                             f"folder(s) under {root} (fix or remove them, or pass --skip-bad "
                             "to leave them out):\n  " + "\n  ".join(bad))
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
                128 if is_number(length) and length >= 128 * 128 else 32)
        if resolution == 128:
            return "Path-X"
        return "Pathfinder" if resolution == 32 else f"Pathfinder-{resolution}"
    return _TASK_COLUMNS.get(task, result["task"])


def model_label(result: dict) -> str:
    """The model's row label (Transformer, Luna-256, a user model's label), as the run recorded
    it, else as its model gives it from the config."""
    if result.get("model_label"):
        return result["model_label"]
    return models.label({**result["config"].get("model", {}), "name": result["model"]})


def variant_of(result: dict) -> str:
    return result.get("variant") or result["config"].get("variant") or ""


def row_key(result: dict) -> str:
    """The table row: the model label, plus the variant for a reduced one (tiny)."""
    label = model_label(result)
    return f"{label} · {REDUCED_VARIANT}" if variant_of(result) == REDUCED_VARIANT else label


def config_spec(result: dict) -> str:
    """`configs/<task>.py:<variant>`: the config file and variant the run was made from."""
    return f"{result.get('config_file') or '?'}:{variant_of(result)}"


def reduced_reasons(result: dict) -> list[str]:
    """Why this run is a reduced configuration (empty: it is not): the `tiny` variant, or
    train.num_steps / data.max_length set below its config file's value."""
    reasons = []
    if variant_of(result) == REDUCED_VARIANT:
        reasons.append("variant tiny (CPU demo: short sequences, small model)")
    changed = result.get("changed_from_config_file") or {}
    for field in ("train.num_steps", "data.max_length"):
        if field in changed:
            recipe, ran = changed[field]
            if is_number(recipe) and is_number(ran) and ran < recipe:
                reasons.append(f"{field} {ran} < {recipe} ({config_spec(result)} default)")
    return reasons
