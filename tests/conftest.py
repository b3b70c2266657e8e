"""What the end-to-end tests share: a small generated ListOps set, the tiny model's settings,
and helpers that start the real CLIs (trainer, sweep, report) in subprocesses."""

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from luna_lra.data import listops_generator

# Tests run on the CPU; the multi-device tests start their own subprocesses with more devices.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the tests and every process they start (set before JAX
# is imported): the many small runs compile the same programs, and a cached executable is the
# same executable, so results stay bitwise the same; it halves a tiny training run. (A
# multi-process run turns it off: train.init_distributed.)
for key, value in (("JAX_COMPILATION_CACHE_DIR",
                    os.path.join(tempfile.gettempdir(), "luna_lra_tests_jax_cache")),
                   ("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0"),
                   ("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")):
    os.environ.setdefault(key, value)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTOPS = dict(num_train=800, num_val=100, num_test=100, min_length=5, max_length=48,
               max_depth=5, max_args=5, seed=0)
# configs/listops.py:tiny made smaller still: seconds per run on two cores
SMALL = {"data.max_length": 48, "data.batch_size": 16, "data.eval_batch_size": 50,
         "model.emb_dim": 16, "model.mlp_dim": 32, "model.num_heads": 2, "model.num_layers": 1,
         "model.classifier_dim": 16, "model.dropout_rate": 0.1,
         "model.attention_dropout_rate": 0.1, "train.eval_every": 50, "train.log_every": 10,
         "train.checkpoint_every": 10, "train.results_dir": "", "train.progress_bar": False}


@pytest.fixture(scope="session")
def listops_dir(tmp_path_factory):
    """A small ListOps set in the release's format (800 / 100 / 100 examples, <= 48 tokens)."""
    d = tmp_path_factory.mktemp("listops")
    listops_generator.generate(str(d), show_progress=False, **LISTOPS)
    return str(d)


def train_args(data_dir, workdir, steps=200, config="configs/listops.py:tiny", **overrides):
    """The trainer's arguments for a SMALL run of `config` (overrides: field -> value)."""
    fields = {"data.data_dir": data_dir, **SMALL, "train.num_steps": steps, **overrides}
    return (["--config", config, "--workdir", str(workdir)]
            + [f"--config.{k}={v}" for k, v in fields.items()])


def env(devices=1, **extra):
    out = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    out.update(extra)
    return out


def cli(module, *argv, check=True, devices=1, timeout=300, env_extra=None):
    """`python -m module argv...` from the repository root; the finished process."""
    out = subprocess.run([sys.executable, "-m", module, *map(str, argv)], cwd=REPO,
                         env=env(devices, **(env_extra or {})), capture_output=True, text=True,
                         timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{module} exit {out.returncode}:\n{out.stdout[-3000:]}\n"
                             f"{out.stderr[-3000:]}")
    return out


def run_train(argv, **kw):
    return cli("luna_lra.train", *argv, **kw)


def start(module, *argv, log=None, env_extra=None, **kw):
    """`python -m module argv...` started in the background (output to `log` or dropped)."""
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", module, *map(str, argv)], cwd=REPO,
                            env=env(**(env_extra or {})), stdout=out,
                            stderr=subprocess.STDOUT if log else subprocess.PIPE, text=True,
                            **kw)


def result(workdir):
    with open(os.path.join(workdir, "result.json")) as f:
        return json.load(f)


def metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def latest_checkpoint(workdir):
    path = os.path.join(workdir, "checkpoints")
    names = os.listdir(path) if os.path.isdir(path) else []
    return max((int(n) for n in names if n.isdigit()), default=0)


def wait_for(predicate, proc, what, timeout=180):
    """Polls predicate() until true; fails if proc ends first or after timeout seconds."""
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"the process ended before {what}"
        assert time.time() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.002)


def one_line_error(out):
    """The single line a failed CLI printed to stderr (no traceback, nothing else)."""
    lines = [l for l in out.stderr.splitlines() if l.strip() and "WARNING" not in l
             and not l.startswith(("W0", "I0", "E0", "warning:"))]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert len(lines) == 1, out.stderr[-3000:]
    return lines[0]
