"""The run driver both backends share: where each run stands, what to start, and the retry
loop of one run (`drive_run`), which records every state in WORKDIR/sweep/run.json."""

from __future__ import annotations

import dataclasses
import os
import shlex
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from luna_lra import config as config_lib
from luna_lra import exits, results
from luna_lra import workdir_lock
from luna_lra.sweep import state
from luna_lra.sweep.runs import SweepError, run_config, train_argv


def run_status(run: Mapping[str, Any], workdir: str) -> tuple[str, str]:
    """('finished' | 'resume' | 'new' | 'stale', why), by luna_lra.config's definition of
    the same run.

    finished: result.json is valid and its config is the run's (bookkeeping fields such as
    data.data_dir aside). resume: no valid result.json yet, or one the trainer can continue
    (a longer train.num_steps). stale: a valid result.json of another run: refused (running
    it would not give this run's result).
    """
    path = os.path.join(workdir, "result.json")
    if os.path.isfile(path):
        try:
            result = results.load_result(path)
        except results.BadResultError as e:
            return "resume", f"result.json is not valid ({e}); running it again"
        want = config_lib.to_dict(run_config(run))
        if not config_lib.differences(result["config"], want):
            return "finished", f"{path}: test accuracy {100 * result['test_accuracy']:.2f}%"
        blockers = config_lib.extension_blockers(result["config"], want)
        if not blockers:
            return "resume", "continuing to more steps"
        return "stale", (f"{path} was made with another config: " + "; ".join(blockers) +
                         " (result vs sweep). Use another --root, or remove that workdir to "
                         "run it again.")
    ckpt = os.path.join(workdir, "checkpoints")
    if os.path.isdir(ckpt) and any(n.isdigit() for n in os.listdir(ckpt)):
        steps = sorted(int(n) for n in os.listdir(ckpt) if n.isdigit())
        return "resume", f"resuming from the checkpoint at step {steps[-1]}"
    return "new", "starting"


# ----------------------------------------------------------------------------- running


_PRINT_LOCK = threading.Lock()


def say(msg: str) -> None:
    with _PRINT_LOCK:  # Ray runs are driven from threads: whole lines only
        print(f"[sweep] {msg}", flush=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM to the sweep (`kill`, scancel): it stops as for Ctrl-C, and exits 143."""


def terminate(signum, frame):
    """The sweep's SIGTERM handler."""
    raise Terminated()


@dataclasses.dataclass
class Attempt:
    """How one attempt of a run ended: the trainer's exit status (None: its process, worker
    or node died without one) and its last error line."""

    exit_status: int | None
    error: str = ""


@dataclasses.dataclass
class Planned:
    """A run the sweep will start: where, why ('starting' / 'resuming ...'), and its command."""

    run: Mapping[str, Any]
    workdir: str
    head: str
    why: str
    argv: list[str]


def drive_run(planned: Planned, launch: Callable[[int], Attempt], *, max_retries: int,
              stopping: threading.Event | None = None) -> str:
    """Attempts one run until it finishes, fails in a way no retry fixes, or has been retried
    max_retries times; records each state in WORKDIR/sweep/run.json and says each change.
    `launch(attempt)` runs one attempt to its end. Returns 'finished', 'failed' or 'stopped'."""
    run, workdir, head = planned.run, planned.workdir, planned.head
    config = config_lib.to_dict(run_config(run))
    stopped = lambda: stopping is not None and stopping.is_set()  # noqa: E731
    t0 = time.time()
    for attempt in range(1, max_retries + 2):
        state.write_run(workdir, run, config, "pending", attempt=attempt)
        # A trainer of this run may still be saving (its sweep was killed): never two at once
        if not workdir_lock.wait_free(workdir, stopped, lambda holder: say(
                f"{head}: waiting for the trainer still on it ({holder}) to exit")):
            return "stopped"
        end = launch(attempt)
        if stopped():
            return "stopped"  # the run stays 'pending' under a dead driver: 'stopped'
        if end.exit_status == 0:
            status, why = run_status(run, workdir)
            if status == "finished":
                state.write_run(workdir, run, config, "finished", attempt=attempt)
                took = state.seconds_trained(workdir)
                say(f"{head}: done" + (f" in {took:.0f} s" if took == took else "") + f" ({why})")
                return "finished"
            end = Attempt(0, f"exit status 0 but {why}")
        retry, _ = exits.classify(end.exit_status)
        detail = end.error if end.exit_status == 0 else exits.describe(
            end.exit_status) + (f"; {end.error}" if end.error else "")
        now = "retrying" if retry and attempt <= max_retries else "failed"
        state.write_run(workdir, run, config, now, attempt=attempt,
                        exit_status=end.exit_status, error=detail)
        if now == "failed":
            say(f"{head}: FAILED after {time.time() - t0:.0f} s ({detail}); log: "
                 f"{os.path.join(workdir, 'train.log')}; continuing")
            return "failed"
        say(f"{head}: attempt {attempt} ended ({detail}); retrying ({attempt} of "
             f"{max_retries} retries)")
    raise AssertionError("unreachable")


def plan(runs: Sequence[Mapping[str, Any]], root: str, outcome: dict[str, list[str]], *,
         dry_run: bool, python: str) -> list[Planned]:
    """The runs to start; finished runs go to outcome['skipped'], stale ones to 'failed'."""
    todo = []
    for i, run in enumerate(runs, 1):
        workdir = os.path.join(root, run["name"])
        head = f"run {i}/{len(runs)} {run['name']}"
        try:
            status, why = run_status(run, workdir)
        except SweepError as e:
            status, why = "stale", str(e)
        argv = train_argv(run, workdir, python)
        if status == "finished":
            say(f"{head}: finished, skipped ({why})")
            outcome["skipped"].append(run["name"])
        elif status == "stale":
            say(f"{head}: FAILED: {why}")
            outcome["failed"].append(run["name"])
        elif dry_run:
            say(f"{head}: would run ({why}): {shlex.join(argv)}")
            outcome["would_run"].append(run["name"])
        else:
            todo.append(Planned(run, workdir, head, why, argv))
    return todo
