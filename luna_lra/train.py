"""Train and evaluate one configuration.

    python -m luna_lra.train --config configs/listops.py:luna256 --workdir runs/listops \
        [--config.train.num_steps=1000 ...]

Writes WORKDIR/result.json, metrics.jsonl, TensorBoard events and checkpoints; a run started
again with the same command resumes from its last checkpoint. Prints the accuracy table and
writes it under config.train.results_dir.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shlex
import sys

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from luna_lra import report, trainer
from luna_lra.data import DataError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/<task>.py:<variant>", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and result.json.")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                  "Multi-process JAX: 'on' calls jax.distributed.initialize() (TPU pods and SLURM "
                  "find their peers themselves; elsewhere pass --coordinator_address, "
                  "--num_processes, --process_id); 'auto' does so when any of those flags is given.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-process runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
flags.mark_flags_as_required(["config", "workdir"])


def init_distributed() -> None:
    explicit = {k: v for k, v in (("coordinator_address", FLAGS.coordinator_address),
                                  ("num_processes", FLAGS.num_processes),
                                  ("process_id", FLAGS.process_id)) if v is not None}
    if FLAGS.distributed == "on" or (FLAGS.distributed == "auto" and explicit):
        jax.distributed.initialize(**explicit)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax's per-save INFO lines
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    ours = logging.getLogger("luna_lra")
    ours.setLevel(logging.INFO)
    ours.addHandler(handler)
    ours.propagate = False
    init_distributed()
    command = "python -m luna_lra.train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    config = FLAGS.config
    try:
        result = trainer.train_and_evaluate(config, FLAGS.workdir, command=command)
    except trainer.Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        sys.exit(143)
    except (trainer.TrainingError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if jax.process_index() == 0:
        table = report.run_table(result)
        print("\n" + table)
        if config.train.results_dir:
            path = report.write_run_table(result, config.train.results_dir)
            print(f"wrote {path} and {FLAGS.workdir}/result.json")


def check_overrides(argv: list[str]) -> None:
    """Refuses `--config.a.b=...` for a field the config does not have, naming the field and
    the fields that do exist there (ml_collections would fail with a bare AttributeError)."""
    spec_arg = None
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            spec_arg = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            spec_arg = argv[i + 1]
    if not spec_arg:
        return
    path, _, variant = spec_arg.partition(":")
    if not os.path.isfile(path):
        sys.exit(f"--config: no config file {path!r} (expected configs/<task>.py:<variant>)")
    spec = importlib.util.spec_from_file_location("_luna_lra_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        config = module.get_config(variant) if variant else module.get_config()
    except ValueError as e:
        sys.exit(f"--config {spec_arg}: {e}")
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        field = arg[len("--config."):].split("=", 1)[0]
        node, walked = config, []
        for part in field.split("."):
            if not hasattr(node, "keys") or part not in node:
                where = ".".join(walked) or "the top level"
                known = sorted(node.keys()) if hasattr(node, "keys") else []
                sys.exit(f"--config.{field}: {path} has no field {part!r} under {where}; "
                         f"expected one of {known}")
            node = node[part]
            walked.append(part)


def run():
    check_overrides(sys.argv[1:])
    app.run(main)


if __name__ == "__main__":
    run()
