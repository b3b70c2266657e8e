"""Train and evaluate one configuration.

    python -m luna_lra.train --config configs/listops.py:luna256 --workdir runs/listops \
        [--config.train.num_steps=1000 ...] [--distributed=on | --coordinator_address=H:P
        --num_processes=N --process_id=I]

Writes WORKDIR/result.json, metrics.jsonl, TensorBoard events and checkpoints; a run started
again with the same command resumes from its last good checkpoint. Prints the accuracy table
and writes it under config.train.results_dir.

Exit status (EXIT below): 0 finished; 2 a config or data mistake (a retry cannot help); 3 the
training diverged (non-finite loss or weights; a retry cannot help); 143 preempted (a
checkpoint was saved: run the same command to resume); 1 anything else (a crash, a failed
save: a retry may help).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from typing import Sequence

EXIT = {"finished": 0, "crash": 1, "mistake": 2, "diverged": 3, "preempted": 143}


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
    import jax

    explicit = {k: v for k, v in (("coordinator_address", args.coordinator_address),
                                  ("num_processes", args.num_processes),
                                  ("process_id", args.process_id)) if v is not None}
    if args.distributed == "on" or (args.distributed == "auto" and explicit):
        jax.distributed.initialize(**explicit)


def setup_logging() -> None:
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax's per-save INFO lines
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    ours = logging.getLogger("luna_lra")
    ours.setLevel(logging.INFO)
    ours.addHandler(handler)
    ours.propagate = False


def run(argv: Sequence[str]) -> str:
    """Trains; returns the outcome (a key of EXIT). Errors a user can fix print one line."""
    from luna_lra import config as config_lib
    from luna_lra.data import DataError

    args, overrides = parse_args(argv)
    try:  # the config first: a mistake there costs nothing to find
        recipe = config_lib.load(args.config)
        config = config_lib.load(args.config, overrides)
    except config_lib.ConfigError as e:
        return _fail("mistake", e)
    setup_logging()
    init_distributed(args)
    import jax

    from luna_lra import checkpoints, results, trainer

    command = "python -m luna_lra.train " + shlex.join(argv)
    changed = {f: [config_lib.flatten(recipe)[f], v] for f, v in
               config_lib.flatten(config).items() if config_lib.flatten(recipe)[f] != v}
    try:
        result = trainer.train_and_evaluate(config, args.workdir, command=command,
                                            changed=changed)
    except trainer.Preempted as e:
        return _fail("preempted", e, "preempted")
    except trainer.Diverged as e:
        return _fail("diverged", e)
    except (config_lib.ConfigError, DataError, trainer.Refused) as e:
        return _fail("mistake", e)
    except (trainer.TrainingError, checkpoints.CheckpointError) as e:
        return _fail("crash", e)
    if jax.process_index() == 0:
        print("\n" + results.run_table(result))
        if config.train.results_dir:
            path = results.write_run_table(result, config.train.results_dir)
            print(f"wrote {path} and {args.workdir}/result.json")
    return "finished"


def _fail(outcome: str, error: Exception, label: str = "error") -> str:
    print(f"{label}: {error}", file=sys.stderr)
    return outcome


def main() -> None:
    sys.exit(EXIT[run(sys.argv[1:])])


if __name__ == "__main__":
    main()
