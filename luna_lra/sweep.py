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
last checkpoint. A run that ends with an exit status a retry can fix (luna_lra/sweep_state.py)
is started again, up to --max-retries times. The exit status is non-zero if any run failed.

Config paths, and relative paths in the configs (data_dir, results_dir), are relative to the
directory the sweep is started from, as for train.py: start it from the repository root (on a
Ray cluster, the same path on every node, and ROOT on a file system every node shares).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import os
import re
import shlex
import sys
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from luna_lra import config as config_lib
from luna_lra import sweep_state

RUN_KEYS = ("config", "overrides", "name", "hosts")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")

# Short names of fields in run names; any other field uses its last dotted component.
SHORT_NAMES = {
    "optim.learning_rate": "lr",
    "optim.weight_decay": "wd",
    "optim.warmup_steps": "warmup",
    "train.num_steps": "steps",
    "model.proj_len": "l",
    "model.num_layers": "layers",
    "model.dropout_rate": "drop",
    "data.batch_size": "bs",
    "data.max_length": "len",
}

class SweepError(ValueError):
    """A bad sweep file or run; the message names the run."""


# ----------------------------------------------------------------------------- building sweeps


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _name_part(field: str, value: Any, short_names: Mapping[str, str]) -> str:
    if field in ("task", "variant", "config"):
        if field == "config":  # "configs/listops.py:luna256" -> "listops-luna256"
            path, _, variant = str(value).partition(":")
            stem = os.path.splitext(os.path.basename(path))[0]
            return f"{stem}-{variant}" if variant else stem
        return str(value)
    short = short_names.get(field, SHORT_NAMES.get(field, field.rsplit(".", 1)[-1]))
    return f"{short}{_format_value(value)}"


def safe_name(text: str) -> str:
    """`text` with every character outside [A-Za-z0-9._+=-] replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", text).lstrip("._-") or "run"


def grid(axes: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any] | None = None, *,
         prefix: str = "", config_dir: str = "configs",
         short_names: Mapping[str, str] | None = None, hosts: int = 1) -> list[dict[str, Any]]:
    """One run per point of the product of `axes` (field -> list of values), in order.

    Besides config fields ("optim.learning_rate", "seed", ...), an axis or a fixed value may be
    `config` ("configs/listops.py:luna256"), or `task` and `variant`, which make the config
    f"{config_dir}/{task}.py:{variant}". `fixed` overrides go into every run but not into the
    name. The name joins the grid values in the order of `axes`, e.g.
    grid({"task": ["listops"], "variant": ["luna16"], "optim.learning_rate": [1e-4],
    "seed": [0, 1]}) -> names "listops-luna16-lr0.0001-seed0", "listops-luna16-lr0.0001-seed1".
    `hosts` > 1: each run is that many trainer processes on distinct hosts (--backend ray).
    """
    fixed = dict(fixed or {})
    short_names = dict(short_names or {})
    for field, values in axes.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise SweepError(f"grid axis {field!r}: expected a list of values, got {values!r}")
    fields = list(axes)
    runs = []
    for point in itertools.product(*(list(axes[f]) for f in fields)):
        values = {**fixed, **dict(zip(fields, point))}
        config = values.pop("config", None)
        task, variant = values.pop("task", None), values.pop("variant", None)
        if config is None:
            if task is None or variant is None:
                raise SweepError("grid: give `config`, or both `task` and `variant`, as an axis "
                                 "or a fixed value")
            config = f"{config_dir}/{task}.py:{variant}"
        elif task is not None or variant is not None:
            raise SweepError("grid: give either `config` or `task`/`variant`, not both")
        parts = [_name_part(f, v, short_names) for f, v in zip(fields, point)]
        if not any(f in ("config", "task", "variant") for f in fields):
            parts.insert(0, _name_part("config", config, short_names))
        name = safe_name("-".join(([prefix] if prefix else []) + parts))
        runs.append({"config": config, "overrides": values, "name": name,
                     **({"hosts": hosts} if hosts != 1 else {})})
    return runs


# ----------------------------------------------------------------------------- loading, checking


def _load_module(path: str, what: str):
    spec = importlib.util.spec_from_file_location(f"_luna_lra_{what}_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise SweepError(f"cannot load {what} file {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_config(run: Mapping[str, Any]):
    """The config a run trains with (its config file and variant, then its overrides)."""
    try:
        return config_lib.load(run["config"], run["overrides"])
    except config_lib.ConfigError as e:
        raise SweepError(f"run {run['name']!r}: {e}") from e


def check_runs(runs: Any, source: str = "the sweep", *, check_configs: bool = True) -> list[dict]:
    """Validates a list of runs and returns it normalised (`overrides` defaults to {}, `hosts`
    to 1).

    Refused, naming the run: a run that is not a dict, unknown or missing keys, a config path
    that does not exist (or a variant it refuses), an override of a field the config lacks or of
    the wrong type, a name that is not filesystem-safe, and a name used twice.
    `check_configs=False` skips loading the config files.
    """
    if not isinstance(runs, (list, tuple)):
        raise SweepError(f"{source}: get_sweep() must return a list of runs, got "
                         f"{type(runs).__name__}")
    if not runs:
        raise SweepError(f"{source}: get_sweep() returned no runs")
    out, seen = [], {}
    for i, run in enumerate(runs):
        label = f"run #{i}"
        if not isinstance(run, Mapping):
            raise SweepError(f"{source}: {label} is a {type(run).__name__}, expected a dict with "
                             f"keys {list(RUN_KEYS)}")
        if isinstance(run.get("name"), str):
            label = f"run #{i} {run['name']!r}"
        unknown = sorted(set(run) - set(RUN_KEYS))
        if unknown:
            raise SweepError(f"{source}: {label}: unknown keys {unknown}; expected {list(RUN_KEYS)}")
        for key in ("config", "name"):
            if not isinstance(run.get(key), str) or not run.get(key):
                raise SweepError(f"{source}: {label}: {key!r} must be a non-empty string, got "
                                 f"{run.get(key)!r}")
        name = run["name"]
        if not SAFE_NAME.match(name) or name in (".", ".."):
            raise SweepError(f"{source}: {label}: name {name!r} is not filesystem-safe (letters, "
                             "digits and . _ + = -, not starting with . _ + = or -)")
        if name in seen:
            raise SweepError(f"{source}: {label}: duplicate name {name!r} (also run #{seen[name]})")
        seen[name] = i
        overrides = run.get("overrides") or {}
        if not isinstance(overrides, Mapping) or not all(isinstance(k, str) for k in overrides):
            raise SweepError(f"{source}: {label}: 'overrides' must be a dict of field -> value, "
                             f"got {overrides!r}")
        hosts = run.get("hosts", 1)
        if not isinstance(hosts, int) or isinstance(hosts, bool) or hosts < 1:
            raise SweepError(f"{source}: {label}: 'hosts' must be an integer >= 1 (trainer "
                             f"processes, one per host), got {hosts!r}")
        run = {"config": run["config"], "overrides": dict(overrides), "name": name,
               "hosts": hosts}
        for field, value in run["overrides"].items():
            if isinstance(value, (dict, list, tuple)) or value is None:
                raise SweepError(f"{source}: {label}: override {field}={value!r}: give a str, "
                                 "int, float or bool")
        if check_configs:
            try:
                config_lib.load(run["config"], run["overrides"])
            except config_lib.ConfigError as e:
                raise SweepError(f"{source}: {label}: {e}") from e
        out.append(run)
    return out


def load_sweep(path: str, *, check_configs: bool = True) -> list[dict]:
    """The checked runs of a sweep file (see check_runs)."""
    if not os.path.isfile(path):
        raise SweepError(f"no sweep file {path!r}")
    try:
        module = _load_module(path, "sweep")
        if not hasattr(module, "get_sweep"):
            raise SweepError("defines no get_sweep()")
        runs = module.get_sweep()
    except Exception as e:  # noqa: BLE001 - name the file whatever went wrong
        what = str(e) if isinstance(e, SweepError) else f"{type(e).__name__}: {e}"
        raise SweepError(f"{path}: {what}") from e
    return check_runs(runs, path, check_configs=check_configs)


# ----------------------------------------------------------------------------- commands


def cli_value(value: Any) -> str:
    """A value as `--config.a.b=` expects it (ml_collections parses it by the field's type)."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def train_argv(run: Mapping[str, Any], workdir: str, python: str = "python") -> list[str]:
    argv = [python, "-m", "luna_lra.train", "--config", run["config"], "--workdir", workdir]
    argv += [f"--config.{k}={cli_value(v)}" for k, v in run["overrides"].items()]
    return argv


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


# ----------------------------------------------------------------------------- status of a run


def run_status(run: Mapping[str, Any], workdir: str) -> tuple[str, str]:
    """('finished' | 'resume' | 'new' | 'stale', why), by luna_lra.config's definition of
    the same run.

    finished: result.json is valid and its config is the run's (bookkeeping fields such as
    data.data_dir aside). resume: no valid result.json yet, or one the trainer can continue
    (a longer train.num_steps). stale: a valid result.json of another run: refused (running
    it would not give this run's result).
    """
    from luna_lra import results  # light: numpy only

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


def _say(msg: str) -> None:
    with _PRINT_LOCK:  # Ray runs are driven from threads: whole lines only
        print(f"[sweep] {msg}", flush=True)


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
    t0 = time.time()
    for attempt in range(1, max_retries + 2):
        sweep_state.write_run(workdir, run, config, "pending", attempt=attempt)
        end = launch(attempt)
        if stopping is not None and stopping.is_set():
            return "stopped"  # the run stays 'pending' under a dead driver: 'stopped'
        if end.exit_status == 0:
            status, why = run_status(run, workdir)
            if status == "finished":
                sweep_state.write_run(workdir, run, config, "finished", attempt=attempt)
                took = sweep_state.seconds_trained(workdir)
                _say(f"{head}: done" + (f" in {took:.0f} s" if took == took else "") + f" ({why})")
                return "finished"
            end = Attempt(0, f"exit status 0 but {why}")
        retry, _ = sweep_state.classify(end.exit_status)
        detail = end.error if end.exit_status == 0 else sweep_state.describe_exit(
            end.exit_status) + (f"; {end.error}" if end.error else "")
        state = "retrying" if retry and attempt <= max_retries else "failed"
        sweep_state.write_run(workdir, run, config, state, attempt=attempt,
                              exit_status=end.exit_status, error=detail)
        if state == "failed":
            _say(f"{head}: FAILED after {time.time() - t0:.0f} s ({detail}); log: "
                 f"{os.path.join(workdir, 'train.log')}; continuing")
            return "failed"
        _say(f"{head}: attempt {attempt} ended ({detail}); retrying ({attempt} of "
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
            _say(f"{head}: finished, skipped ({why})")
            outcome["skipped"].append(run["name"])
        elif status == "stale":
            _say(f"{head}: FAILED: {why}")
            outcome["failed"].append(run["name"])
        elif dry_run:
            _say(f"{head}: would run ({why}): {shlex.join(argv)}")
            outcome["would_run"].append(run["name"])
        else:
            todo.append(Planned(run, workdir, head, why, argv))
    return todo


def run_sweep(runs: Sequence[Mapping[str, Any]], root: str, *, dry_run: bool = False,
              python: str = sys.executable, max_retries: int = 3,
              ray_options: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """Runs the sweep here one run after another, or on Ray when `ray_options` is given
    (sweep_ray.run_sweep's keywords); returns the names by outcome: {'finished', 'skipped'
    (finished before), 'failed', 'would_run' (dry run), 'stopped'}."""
    root = os.path.abspath(root)
    outcome: dict[str, list[str]] = {"finished": [], "skipped": [], "failed": [],
                                     "would_run": [], "stopped": []}
    todo = plan(runs, root, outcome, dry_run=dry_run, python=python)
    if ray_options is not None and todo:
        from luna_lra import sweep_ray

        for planned, result in zip(todo, sweep_ray.run_sweep(todo, max_retries=max_retries,
                                                             **ray_options)):
            outcome[result].append(planned.run["name"])
        return outcome
    from luna_lra import sweep_local

    for planned in todo:
        result = drive_run(planned, lambda k, p=planned: sweep_local.run_attempt(p, k),
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
        rows.append(sweep_state.run_state(run, workdir, finished))
    print(sweep_state.render_status(rows))


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
        try:
            import ray  # noqa: F401
        except ImportError as e:
            raise SweepError(f"--backend ray needs Ray: pip install -e '.[ray]' ({e})") from None


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
    _say(f"{len(runs)} run(s) from {args.sweep} under {os.path.abspath(args.root)}"
         + (" (dry run)" if args.dry_run else f" ({args.backend} backend)"))
    try:
        outcome = run_sweep(runs, args.root, dry_run=args.dry_run, max_retries=args.max_retries,
                            ray_options=ray_options)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _say("interrupted: the runs are stopped (each trainer saves a checkpoint); start the "
             "same command again to resume them")
        return 130
    _say((f"would run {len(outcome['would_run'])}, " if args.dry_run else "")
         + f"finished {len(outcome['finished'])}, skipped (already finished) "
         f"{len(outcome['skipped'])}, failed {len(outcome['failed'])}"
         + (f": {', '.join(outcome['failed'])}" if outcome["failed"] else ""))
    return 1 if outcome["failed"] or outcome["stopped"] else 0


if __name__ == "__main__":
    sys.exit(main())
