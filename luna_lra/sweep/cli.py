"""Run a sweep of training runs, one after another or packed onto a Ray cluster, or print their
launch commands.

A sweep file (e.g. configs/sweeps/lra_table.py) defines `get_sweep()`, returning a list of runs:

    {"config": "configs/listops.py:luna256",            # config file:variant, as for train.py
     "overrides": {"optim.learning_rate": 1e-4, "seed": 1},   # config field -> value
     "name": "listops-luna256-lr0.0001-seed1",          # unique, filesystem-safe
     "hosts": 1}                                        # optional: trainer processes, one per host

`grid()` builds such lists as a product over any fields, so sweep files stay short.

    python -m luna_lra.sweep --sweep FILE --root DIR [--only SUBSTRING ...] [--dry-run]
        [--backend local|ray] [--address auto|HOST:PORT]
        [--gpus-per-run K | --tpu-chips-per-run K | --cpus-per-run K] [--max-retries N]
    python -m luna_lra.sweep --sweep FILE --root DIR --status
    python -m luna_lra.sweep --sweep FILE --root DIR --print-commands {tpu,gpu}

Each run is `python -m luna_lra.train --config ... --workdir ROOT/<name> --config.a.b=value ...`
started as a subprocess (a crash in one run does not stop the sweep), its output copied to
ROOT/<name>/train.log. `--backend local` (the default) runs them one after another here, with
their output streamed; `--backend ray` runs as many at once as the Ray cluster holds (see
luna_lra/sweep_ray.py). A run whose ROOT/<name>/result.json exists, is valid and was made with
the same config is skipped; any other run is (re)started, and the trainer resumes it from its
last checkpoint. A run that ends with an exit status a retry can fix (luna_lra/state.py)
is started again, up to --max-retries times. The exit status is non-zero if any run failed.

Config paths, and relative paths in the configs (data_dir, results_dir), are relative to the
directory the sweep is started from, as for train.py: start it from the repository root (on a
Ray cluster, the same path on every node, and ROOT on a file system every node shares).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import signal
import sys
from typing import Any, Mapping, Sequence

from luna_lra.sweep import local, state
from luna_lra.sweep.driver import Terminated, drive_run, plan, run_status, say, terminate
from luna_lra.sweep.runs import SweepError, check_runs, load_sweep, train_argv

TPU_NOTE = """\
# TPU pod slice: every worker runs the same command (--worker=all). --distributed=on makes
# each worker call jax.distributed.initialize(), which finds the other hosts of the slice by
# itself, so jax.devices() lists every chip and the trainer shards the global batch over all
# of them. Fill in TPU_NAME and ZONE (--tpu-name/--zone), clone the repo
# and prepare the data on every worker. The workdirs must be on a file system all workers share
# (checkpoints are written by every host; e.g. a gcsfuse or Filestore mount), given by --root.
# Runs go one after another: start the next when the previous has finished."""

GPU_NOTE = """\
# GPU machines: run from the repository root (all local devices are used;
# CUDA_VISIBLE_DEVICES=0 restricts a run to one). A run with hosts > 1 is one command per
# host, started together: process 0 listens at --coordinator (host:port, reachable from the
# others), and the workdir must be on a file system every host shares."""


def launch_command(run: Mapping[str, Any], workdir: str, kind: str, *, tpu_name: str = "TPU_NAME",
                   zone: str = "ZONE", repo_dir: str = "luna_lra",
                   coordinator: str = "HOST0:8476") -> str:
    """The shell command(s) that start `run`: one line, or for a GPU run with hosts > 1 one
    line per host (`# host i of N` above each)."""
    inner = shlex.join(train_argv(run, workdir))
    if kind == "gpu":
        hosts = run.get("hosts", 1)
        if hosts == 1:
            return inner
        return "\n".join(f"# host {i} of {hosts}\n{inner} --coordinator_address="
                         f"{shlex.quote(coordinator)} --num_processes={hosts} --process_id={i}"
                         for i in range(hosts))
    if kind == "tpu":
        remote = f"cd {shlex.quote(repo_dir)} && {inner} --distributed=on"
        return shlex.join(["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu_name, "--zone", zone,
                           "--worker=all", "--command", remote])
    raise SweepError(f"unknown launch kind {kind!r}; expected 'tpu' or 'gpu'")


def run_sweep(runs: Sequence[Mapping[str, Any]], root: str, *, dry_run: bool = False,
              python: str = sys.executable, max_retries: int = 3,
              ray_options: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """Runs the sweep here one run after another, or on Ray when `ray_options` is given
    (ray_backend.run_sweep's keywords); returns the names by outcome: {'finished', 'skipped'
    (finished before), 'failed', 'would_run' (dry run), 'stopped'}."""
    root = os.path.abspath(root)
    outcome: dict[str, list[str]] = {"finished": [], "skipped": [], "failed": [],
                                     "would_run": [], "stopped": []}
    todo = plan(runs, root, outcome, dry_run=dry_run, python=python)
    if ray_options is not None and todo:
        from luna_lra.sweep import ray_backend  # Ray: an optional dependency

        for planned, result in zip(todo, ray_backend.run_sweep(todo, max_retries=max_retries,
                                                               **ray_options)):
            outcome[result].append(planned.run["name"])
        return outcome
    for planned in todo:
        result = drive_run(planned, lambda k, p=planned: local.run_attempt(p, k),
                           max_retries=max_retries)
        outcome[result].append(planned.run["name"])
    return outcome


def print_status(runs: Sequence[Mapping[str, Any]], root: str) -> None:
    rows = []
    for run in runs:
        workdir = os.path.join(os.path.abspath(root), run["name"])
        try:
            finished = run_status(run, workdir)[0] == "finished"
        except SweepError:
            finished = False
        rows.append(state.run_state(run, workdir, finished))
    print(state.render_status(rows))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m luna_lra.sweep", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", required=True, help="sweep file defining get_sweep()")
    parser.add_argument("--root", required=True, help="runs go to ROOT/<name>")
    parser.add_argument("--only", action="append", default=[], metavar="SUBSTRING",
                        help="only runs whose name contains SUBSTRING (repeatable: any of them)")
    parser.add_argument("--dry-run", action="store_true",
                        help="say what would run or be skipped, run nothing")
    parser.add_argument("--status", action="store_true",
                        help="print where every run stands (works while the sweep runs, and "
                             "after it was killed) and exit")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local: one run after another here (default); ray: as many at once "
                             "as the Ray cluster holds")
    parser.add_argument("--max-retries", type=int, default=3, metavar="N",
                        help="start a run again up to N times after an exit a retry can fix "
                             "(preempted 143, killed, crashed 1, node lost); default 3")
    ray = parser.add_argument_group("--backend ray")
    ray.add_argument("--address", help="an existing Ray cluster ('auto' or HOST:PORT); "
                                       "default: start Ray on this machine")
    per_run = ray.add_mutually_exclusive_group()
    per_run.add_argument("--gpus-per-run", type=int, metavar="K",
                         help="GPUs per trainer process (default when the cluster has GPUs: 1)")
    per_run.add_argument("--tpu-chips-per-run", type=int, metavar="K",
                         help="TPU chips per trainer process (default on TPUs: one host's)")
    per_run.add_argument("--cpus-per-run", type=float, metavar="K",
                         help="CPUs per trainer process of a CPU-only run (default elsewhere: 1)")
    parser.add_argument("--print-commands", choices=("tpu", "gpu"),
                        help="print the launch command of each run (a TPU pod slice, or GPU "
                             "machines: one command per host) and exit")
    parser.add_argument("--tpu-name", default="TPU_NAME", help="for --print-commands tpu")
    parser.add_argument("--zone", default="ZONE", help="for --print-commands tpu")
    parser.add_argument("--repo-dir", default="luna_lra",
                        help="the repository's directory on the TPU workers (--print-commands tpu)")
    parser.add_argument("--coordinator", default="HOST0:8476",
                        help="host:port of process 0 of a multi-host GPU run (--print-commands "
                             "gpu)")
    return parser


def _check_args(args, runs) -> None:
    """SweepError (one line) for flags that do not fit together or with the runs."""
    if args.max_retries < 0:
        raise SweepError(f"--max-retries {args.max_retries}: expected an integer >= 0")
    for flag in ("gpus_per_run", "tpu_chips_per_run", "cpus_per_run"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise SweepError(f"--{flag.replace('_', '-')} {value:g}: expected a number > 0")
        if value is not None and args.backend != "ray":
            raise SweepError(f"--{flag.replace('_', '-')}: only with --backend ray")
    if args.address and args.backend != "ray":
        raise SweepError("--address: only with --backend ray")
    multi = [r for r in runs if r["hosts"] > 1]
    if multi and args.backend == "local" and not (args.print_commands or args.status
                                                  or args.dry_run):
        raise SweepError(f"run {multi[0]['name']!r} has hosts={multi[0]['hosts']}: runs that "
                         "span hosts need --backend ray")
    if args.backend == "ray" and not (args.status or args.print_commands or args.dry_run):
        if importlib.util.find_spec("ray") is None:
            raise SweepError("--backend ray needs Ray: pip install -e '.[ray]'")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        # Names and structure of every run; configs of the selected runs only.
        runs = load_sweep(args.sweep, check_configs=False)
        if args.only:
            runs = [r for r in runs if any(s in r["name"] for s in args.only)]
            if not runs:
                raise SweepError(f"no run of {args.sweep} has a name containing any of "
                                 f"{args.only}")
        runs = check_runs(runs, args.sweep)
        _check_args(args, runs)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if args.print_commands:
        print(TPU_NOTE if args.print_commands == "tpu" else GPU_NOTE)
        for run in runs:
            print(launch_command(run, os.path.join(args.root, run["name"]), args.print_commands,
                                 tpu_name=args.tpu_name, zone=args.zone, repo_dir=args.repo_dir,
                                 coordinator=args.coordinator))
        return 0
    if args.status:
        print_status(runs, args.root)
        return 0

    ray_options = None if args.backend == "local" else {
        "address": args.address, "gpus": args.gpus_per_run, "tpu_chips": args.tpu_chips_per_run,
        "cpus": args.cpus_per_run}
    say(f"{len(runs)} run(s) from {args.sweep} under {os.path.abspath(args.root)}"
        + (" (dry run)" if args.dry_run else f" ({args.backend} backend)"))
    previous = signal.signal(signal.SIGTERM, terminate)  # `kill`, scancel: stop as Ctrl-C
    try:
        outcome = run_sweep(runs, args.root, dry_run=args.dry_run, max_retries=args.max_retries,
                            ray_options=ray_options)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        say("stopped: each trainer was told to save a checkpoint of the step it reached and "
            "exit (--status shows the runs); the same command resumes them")
        return 143 if isinstance(e, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    say((f"would run {len(outcome['would_run'])}, " if args.dry_run else "")
         + f"finished {len(outcome['finished'])}, skipped (already finished) "
         f"{len(outcome['skipped'])}, failed {len(outcome['failed'])}"
         + (f": {', '.join(outcome['failed'])}" if outcome["failed"] else ""))
    return 1 if outcome["failed"] or outcome["stopped"] else 0

