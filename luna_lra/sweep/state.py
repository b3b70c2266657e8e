"""Where each run of a sweep stands, kept in small files in the run's workdir so that
`python -m luna_lra.sweep --status`, the report and a restarted sweep all read the same thing,
whether the sweep is alive or was killed. No database: a file has one writer.

    WORKDIR/sweep/run.json          the sweep driver's: state, attempt, exit status, last error
    WORKDIR/sweep/process<i>.json   trainer process i of the latest attempt (its launcher's):
                                    host, devices, pid, start, end, exit status
    WORKDIR/status.json             the trainer's: step, speed, best validation accuracy
    WORKDIR/result.json             the trainer's: the run finished

Exit statuses (luna_lra.exits) decide retries: 2 (a config or data mistake) and 3 (diverged)
are final; 143 (preempted or stopped, checkpoint saved), 1 (a crash), a signal (-9: SIGKILL; 137 in a
shell) and a process or node that vanished without a status are retried.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from typing import Any, Mapping, Sequence

from luna_lra import models, workdir_lock
from luna_lra.results import write_json_atomic

STATE_DIR = "sweep"
# run.json states: pending (an attempt is queued or running), retrying, finished, failed.
ACTIVE = ("pending", "retrying")  # states that need a live sweep driver


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- the files


def _path(workdir: str, name: str) -> str:
    return os.path.join(workdir, STATE_DIR, name)


def _write(path: str, obj: Mapping[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json_atomic(path, dict(obj, updated_at=utc_now()))


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_run(workdir: str, run: Mapping[str, Any], config: Mapping[str, Any], state: str,
              **fields) -> None:
    """The driver's record of a run. `config`: the run's full config (for the report)."""
    _write(_path(workdir, "run.json"), {
        "name": run["name"], "state": state, "hosts": run.get("hosts", 1),
        "task": config.get("data", {}).get("task"), "variant": config.get("variant"),
        "model_label": models.label(config.get("model", {})),
        "config_file": config.get("config_file"), "config": dict(config),
        "driver": {"host": socket.gethostname(), "pid": os.getpid()}, **fields})


def read_run(workdir: str) -> dict[str, Any] | None:
    return _read(_path(workdir, "run.json"))


def write_process(workdir: str, process_id: int, **fields) -> None:
    _write(_path(workdir, f"process{process_id}.json"), {"process_id": process_id, **fields})


def read_processes(workdir: str, attempt: int | None = None) -> list[dict[str, Any]]:
    """The process records of `attempt` (any attempt when None), by process id."""
    folder = os.path.join(workdir, STATE_DIR)
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    procs = [_read(os.path.join(folder, n)) for n in names
             if n.startswith("process") and n.endswith(".json")]
    return [p for p in procs if p and (attempt is None or p.get("attempt") == attempt)]


def seconds_trained(workdir: str) -> float:
    """From a finished run's first start to its end (result.json; NaN if it does not say),
    time spent queued left out."""
    result = _read(os.path.join(workdir, "result.json")) or {}
    try:
        start, end = (datetime.datetime.fromisoformat(result[k]).timestamp()
                      for k in ("started_at", "finished_at"))
    except (KeyError, TypeError, ValueError):
        return float("nan")
    return end - start


def last_error_line(log_path: str) -> str:
    """The last 'error:' / 'preempted:' line of the log's latest attempt, else its last line."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(os.path.getsize(log_path) - 65536, 0))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [l.strip() for l in text.rsplit("\n=== ", 1)[-1].splitlines()[1:] if l.strip()]
    for line in reversed(lines):
        if line.startswith(("error:", "preempted:")):
            return line
    return lines[-1] if lines else ""


def _alive(driver: Mapping[str, Any] | None) -> bool | None:
    """Whether the sweep driver that wrote a record still runs (None: another host)."""
    if not driver or driver.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(driver["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return None
    return True


def _effective_state(record: Mapping[str, Any], workdir: str) -> str:
    """The driver's recorded state, made 'running' while a process of the current attempt
    runs, 'stopping' while its trainer still holds the workdir under a dead sweep (it saves a
    checkpoint, then exits), and 'stopped' when the sweep that recorded an active state is
    dead (killed: starting the sweep again resumes the run)."""
    state = record.get("state", "not started")
    if state in ACTIVE and _alive(record.get("driver")) is False:
        return "stopping" if workdir_lock.holder(workdir) else "stopped"
    if state == "pending" and any(p.get("state") == "running" for p in
                                  read_processes(workdir, record.get("attempt"))):
        return "running"
    return state


# ----------------------------------------------------------------------------- one run's state


def run_state(run: Mapping[str, Any], workdir: str, finished: bool) -> dict[str, Any]:
    """A row of the status table. `finished`: the sweep's verdict on result.json."""
    record = read_run(workdir) or {}
    state = "finished" if finished else _effective_state(record, workdir)
    if state == "finished" and not finished:
        state = "not started"  # a record of a result that is no longer there (or stale)
    row = {"name": run["name"], "state": state, "attempt": record.get("attempt"),
           "error": record.get("error", "") if state in ("failed", "retrying") else "",
           "where": "", "step": None, "num_steps": None, "best_val_accuracy": None,
           "steps_per_second": None, "seconds_left": None}
    procs = read_processes(workdir, record.get("attempt"))
    if procs:
        row["where"] = "; ".join(f"{p.get('host', '?')} {p.get('devices', '')}".strip()
                                 for p in procs)
    progress = _read(os.path.join(workdir, "status.json")) or {}
    if finished:
        result = _read(os.path.join(workdir, "result.json")) or {}
        progress = {"step": result.get("num_steps"), "num_steps": result.get("num_steps"),
                    "best_val_accuracy": result.get("val_accuracy")}
        row["where"] = ", ".join(result.get("hosts") or []) or row["where"]
    for key in ("step", "num_steps", "best_val_accuracy", "steps_per_second"):
        row[key] = progress.get(key)
    speed, step, total = row["steps_per_second"], row["step"], row["num_steps"]
    if state == "running" and speed and step is not None and total:
        row["seconds_left"] = (total - step) / speed
    return row


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return ""
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def render_status(rows: Sequence[Mapping[str, Any]]) -> str:
    """The `--status` table: one line per run, then the counts per state."""
    header = ("run", "state", "where (host devices)", "step", "best val", "steps/s", "left",
              "last error")
    lines = []
    for r in rows:
        step = f"{r['step']}/{r['num_steps']}" if r["step"] is not None else ""
        best = r["best_val_accuracy"]
        state = r["state"] + (f" (attempt {r['attempt']})" if r["state"] in (
            "pending", "running", "retrying") and (r["attempt"] or 1) > 1 else "")
        lines.append((r["name"], state, r["where"], step,
                      f"{100 * best:.2f}%" if best is not None and best >= 0 else "",
                      f"{r['steps_per_second']:.2f}" if r["steps_per_second"] else "",
                      _fmt_seconds(r["seconds_left"]), r["error"]))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    text = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()
            for row in [header] + lines]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    text.append(", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return "\n".join(text)


def unfinished_runs(root: str) -> list[dict[str, Any]]:
    """Runs a sweep under `root` planned or started that have no result.json yet, as
    {'task', 'variant', 'model', 'config_file', 'config', 'state', '_path'} (what
    luna_lra.results needs
    to place a run in the LRA table), for the report to mark their cells."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if not ({"checkpoints", STATE_DIR} & set(dirnames) or "result.json" in filenames):
            continue  # not a workdir: look further down
        dirnames[:] = []  # a workdir: its subfolders are the trainer's
        record = None if "result.json" in filenames else read_run(dirpath)
        if record and record.get("task") and isinstance(record.get("config"), dict):
            out.append({"task": record["task"], "variant": record.get("variant"),
                        "model": record["config"].get("model", {}).get("name"),
                        "model_label": record.get("model_label"),
                        "config_file": record.get("config_file"), "config": record["config"],
                        "state": _effective_state(record, dirpath),
                        "_path": os.path.join(dirpath, STATE_DIR, "run.json")})
    return out
