"""Exit statuses of `python -m luna_lra.train` and what they mean to whoever starts it again
(the sweep retries by them; the README's table is this one)."""

from __future__ import annotations

EXIT = {"finished": 0, "crash": 1, "mistake": 2, "diverged": 3, "interrupted": 130,
        "preempted": 143}
# Statuses no retry can help: the same command would fail the same way.
FINAL = {EXIT["mistake"]: "a config, data or workdir mistake", EXIT["diverged"]: "diverged"}
MEANINGS = {EXIT["finished"]: "finished", EXIT["crash"]: "crashed",
            EXIT["interrupted"]: "interrupted (a second Ctrl-C), stopped without saving",
            EXIT["preempted"]: "preempted or stopped, checkpoint saved",
            137: "killed (SIGKILL)", -9: "killed (SIGKILL)", -15: "terminated (SIGTERM)",
            **FINAL}


def classify(status: int | None) -> tuple[bool, str]:
    """(whether a retry may help, what the status means). None: the process, its Ray worker
    or its node died and left no exit status."""
    if status is None:
        return True, "the process or its node died"
    meaning = MEANINGS.get(status, f"killed by signal {-status}" if status < 0 else "failed")
    return status not in FINAL and status != 0, meaning


def describe(status: int | None) -> str:
    retry, meaning = classify(status)
    head = "no exit status" if status is None else f"exit status {status}"
    return f"{head}: {meaning}" + ("" if retry or status == 0 else ", not retried")
