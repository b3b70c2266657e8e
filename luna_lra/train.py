"""Train and evaluate one configuration.

    python -m luna_lra.train --config configs/listops.py:luna256 --workdir runs/listops \
        [--config.train.num_steps=1000 ...] [--distributed=on | --coordinator_address=H:P
        --num_processes=N --process_id=I]

Writes WORKDIR/result.json, metrics.jsonl, TensorBoard events and checkpoints; a run started
again with the same command resumes from its last good checkpoint (a finished run says so and
changes nothing). Prints the accuracy table and writes it under config.train.results_dir.
One trainer per workdir: a second one is refused. SIGTERM or Ctrl-C saves a checkpoint of the
step reached and exits 143 (Ctrl-C twice: at once, 130).

Exit statuses: luna_lra/exits.py (the README's table).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
from typing import Sequence

from luna_lra import host_memory

if __name__ == "__main__":  # first, so that the restart does not import JAX twice
    host_memory.restart_with_huge_pages()

import jax
from absl import logging as absl_logging

from luna_lra import checkpoints, exits, lifetime, results, trainer
from luna_lra import config as config_lib
from luna_lra.checks import ConfigError
from luna_lra.data import DataError


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    """(the flags, the --config.a.b=value overrides as {field: text})."""
    parser = argparse.ArgumentParser(prog="python -m luna_lra.train",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="configs/<task>.py:<variant>")
    parser.add_argument("--workdir", required=True,
                        help="checkpoints, metrics and result.json go here")
    parser.add_argument("--distributed", choices=("auto", "on", "off"), default="auto",
                        help="'on' calls jax.distributed.initialize() (TPU pods and SLURM find "
                             "their peers); 'auto' does so when any of the next three is given")
    parser.add_argument("--coordinator_address", help="host:port of process 0")
    parser.add_argument("--num_processes", type=int, help="processes in a multi-process run")
    parser.add_argument("--process_id", type=int, help="this process's index")
    overrides, rest = {}, []
    for arg in argv:
        if arg.startswith("--config."):
            field, eq, value = arg[len("--config."):].partition("=")
            if not eq:
                parser.error(f"{arg}: expected --config.<field>=<value>")
            overrides[field] = value
        else:
            rest.append(arg)
    return parser.parse_args(rest), overrides


def init_distributed(args) -> None:
    explicit = {k: v for k, v in (("coordinator_address", args.coordinator_address),
                                  ("num_processes", args.num_processes),
                                  ("process_id", args.process_id)) if v is not None}
    if args.distributed == "on" or (args.distributed == "auto" and explicit):
        jax.distributed.initialize(**explicit)
        if jax.default_backend() == "cpu":
            # On JAX 0.12 a multi-process CPU program loaded from the persistent compilation
            # cache hangs in its first cross-process collective; compiled afresh it runs.
            jax.config.update("jax_enable_compilation_cache", False)


def setup_logging() -> None:
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax's per-save INFO lines
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    ours = logging.getLogger("luna_lra")
    ours.setLevel(logging.INFO)
    ours.addHandler(handler)
    ours.propagate = False
    # A writer thread that fails, or a writer closed at exit (TensorBoard's, on a full disk):
    # one line each, not a traceback; the error that stops the run is reported by cli()
    threading.excepthook = lambda a: print(
        f"warning: {a.thread.name if a.thread else 'a thread'} failed: "
        f"{a.exc_type.__name__}: {a.exc_value}", file=sys.stderr)
    sys.unraisablehook = lambda u: print(
        f"warning: {u.err_msg or 'ignored'}: {u.exc_type.__name__}: {u.exc_value}",
        file=sys.stderr)


def cli(argv: Sequence[str]) -> str:
    """Trains; returns the outcome (a key of exits.EXIT). Errors a user can fix print one
    line; the config is read first: a mistake there costs nothing."""
    args, overrides = parse_args(argv)
    try:
        recipe = config_lib.load(args.config)
        config = config_lib.load(args.config, overrides)
    except ConfigError as e:
        return _fail("mistake", e)
    setup_logging()
    init_distributed(args)
    done = trainer.finished_result(config, args.workdir)
    if done is not None:
        print(f"{args.workdir} holds this run, finished {done.get('finished_at', '')}: test "
              f"accuracy {100 * done['test_accuracy']:.2f}%; result.json is left as it was")
        return "finished"
    command = "python -m luna_lra.train " + shlex.join(argv)
    flat_recipe, flat = config_lib.flatten(recipe), config_lib.flatten(config)
    changed = {f: [flat_recipe.get(f), v] for f, v in flat.items() if flat_recipe.get(f) != v}
    try:
        result = trainer.train_and_evaluate(config, args.workdir, command=command,
                                            changed=changed)
        if jax.process_index() == 0:
            print("\n" + results.run_table(result))
            if config.train.results_dir:
                path = results.write_run_table(result, config.train.results_dir)
                print(f"wrote {path} and {args.workdir}/result.json")
    except trainer.Preempted as e:
        return _fail("preempted", e, "preempted")
    except (trainer.Interrupted, KeyboardInterrupt) as e:
        return _fail("interrupted", str(e) or "Ctrl-C before the first step: nothing to save",
                     "interrupted")
    except trainer.Diverged as e:
        return _fail("diverged", e)
    except (ConfigError, DataError, trainer.Refused) as e:
        return _fail("mistake", e)
    except (trainer.TrainingError, checkpoints.CheckpointError) as e:
        return _fail("crash", e)
    except OSError as e:  # a full disk, a file gone: the path and the cause, in one line
        return _fail("crash", f"{e.filename or 'a file'}: {e.strerror or e}")
    return "finished"


def _fail(outcome: str, error, label: str = "error") -> str:
    print(f"{label}: {error}", file=sys.stderr)
    return outcome


def main() -> None:
    lifetime.die_with_parent()  # started by a sweep: stop (and save) when it dies
    # Signals a launcher blocked (Ray's workers block SIGINT) must reach the trainer
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(exits.EXIT[cli(sys.argv[1:])])


if __name__ == "__main__":
    main()
