"""The one trainer for every task: optimiser, jit-compiled steps over a device mesh, evaluation,
checkpoints, metrics and the final result.

The global batch is sharded on the mesh's `data` axis and parameters are replicated; jit
inserts the gradient all-reduce. The same code runs on one CPU, eight GPUs or a pod slice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import signal
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from etils import epath
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from luna_lra import data as data_lib
from luna_lra import ops, provenance, report
from luna_lra.data import pipeline
from luna_lra.models import build_model

log = logging.getLogger("luna_lra")

# Config fields that must match between a checkpoint and the run resuming from it.
RESUME_FIELDS = ("seed", "data", "model", "optim")


class TrainingError(RuntimeError):
    pass


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint of the last finished step was written."""


class _SigtermFlag:
    """Turns SIGTERM (a preemption notice) into a flag the loop checks after each step."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


# ----------------------------------------------------------------------------- optimiser


def make_schedule(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warm-up from warmup_init_lr to learning_rate, then the chosen decay.

    inverse_sqrt is fairseq's: learning_rate * sqrt(warmup_steps / step) after warm-up (the
    LRA code's rsqrt_decay has the same shape).
    """
    peak, warm, init = cfg.learning_rate, max(int(cfg.warmup_steps), 0), cfg.warmup_init_lr

    def warmup(step):
        return init + (peak - init) * step / max(warm, 1)

    if cfg.schedule == "inverse_sqrt":
        def after(step):
            return peak * jnp.sqrt(max(warm, 1) / jnp.maximum(step, 1.0))
    elif cfg.schedule == "cosine":
        def after(step):
            frac = jnp.clip((step - warm) / max(num_steps - warm, 1), 0.0, 1.0)
            return cfg.end_lr + 0.5 * (peak - cfg.end_lr) * (1 + jnp.cos(jnp.pi * frac))
    elif cfg.schedule == "constant":
        def after(step):
            return peak * jnp.ones_like(step)
    else:
        raise ValueError(f"config field optim.schedule: expected 'inverse_sqrt', 'cosine' or "
                         f"'constant', got {cfg.schedule!r}")

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        return jnp.where(step < warm, warmup(step), after(step))

    return schedule


def make_optimizer(cfg: ml_collections.ConfigDict, num_steps: int):
    schedule = make_schedule(cfg, num_steps)
    adamw = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), adamw) \
        if cfg.grad_clip_norm > 0 else adamw
    return tx, schedule


# ----------------------------------------------------------------------------- steps


def _model_args(batch):
    return (batch["inputs"], batch["mask"], batch.get("inputs2"), batch.get("mask2"))


def make_steps(model, schedule):
    def train_step(state, batch, rng):
        dropout_rng = jax.random.fold_in(rng, state.step)

        def loss_fn(params):
            logits = model.apply({"params": params}, *_model_args(batch), train=True,
                                 rngs={"dropout": dropout_rng})
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
            return loss.mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["targets"]),
            "grad_norm": jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads))),
            "learning_rate": schedule(state.step),
        }
        return state.apply_gradients(grads=grads), metrics

    def eval_step(params, batch):
        logits = model.apply({"params": params}, *_model_args(batch), train=False)
        w = batch["weights"]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
        return {"correct": jnp.sum(correct * w), "loss": jnp.sum(loss * w), "count": jnp.sum(w)}

    return train_step, eval_step


# ----------------------------------------------------------------------------- helpers


@dataclasses.dataclass
class Progress:
    """What a checkpoint carries besides the train state (JSON)."""

    best_val_accuracy: float = -1.0
    best_step: int = -1
    test_at_best: float = -1.0
    val_history: list = dataclasses.field(default_factory=list)


def to_host(tree):
    """numpy copies of replicated arrays; works on every process of a multi-host run, where
    jax.device_get refuses arrays that span other hosts' devices."""
    def one(x):
        return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x)
    return jax.tree.map(one, tree)


def params_digest(params) -> str:
    """sha256 over the parameter bytes in tree order: equal digests mean bitwise-equal weights."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(to_host(params))[0]:
        h.update(jax.tree_util.keystr(path).encode())
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()


def load_params(workdir: str, step: int | None = None, best: bool = False):
    """The parameters of a run's checkpoint (the latest, a given step, or the best) as numpy
    arrays, whatever device layout wrote them."""
    directory = os.path.abspath(os.path.join(workdir, "best" if best else "checkpoints"))
    steps = sorted(int(n) for n in os.listdir(directory) if n.isdigit()) \
        if os.path.isdir(directory) else []
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    step = steps[-1] if step is None else step
    path = os.path.join(directory, str(step), "params" if best else "state")
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    return restored if best else restored["params"]


def machine_description() -> str:
    devs = jax.devices()
    return (f"{len(devs)} x {devs[0].device_kind} ({jax.default_backend()}), "
            f"{jax.process_count()} process(es), {os.cpu_count()} CPU cores, {platform.machine()}")


def _config_diff(a: dict, b: dict, prefix="") -> list[str]:
    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += _config_diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            diffs.append(f"{prefix}{key}: checkpoint {va!r}, this run {vb!r}")
    return diffs


def _resume_view(config_dict: dict) -> dict:
    return {k: config_dict[k] for k in RESUME_FIELDS if k in config_dict}


def _checkpoint_dir(workdir: str, name: str) -> str:
    """Orbax wants absolute local paths; remote ones (gs://...) pass as they are."""
    path = os.path.join(workdir, name)
    return os.path.abspath(path) if _is_local(workdir) else path


def _is_local(path: str) -> bool:
    return "://" not in path


class MetricsWriter:
    """JSON lines + TensorBoard events in the workdir, written by process 0 only.

    Local files are appended to; a remote workdir (gs://...) has its file rewritten whole,
    since object stores cannot append.
    """

    def __init__(self, workdir: str, resume_step: int):
        self.enabled = jax.process_index() == 0
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self.lines: list[str] = []
        self.tb = None
        if not self.enabled:
            return
        if self.path.exists():  # drop lines past the checkpoint we resume from
            self.lines = [l + "\n" for l in self.path.read_text().splitlines()
                          if l.strip() and json.loads(l).get("step", 0) <= resume_step]
        self.path.write_text("".join(self.lines))
        try:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(os.fspath(epath.Path(workdir) / "tensorboard"))
        except ImportError:  # optional at run time
            log.warning("tensorboardX is not installed: no TensorBoard events are written")

    def write(self, step: int, split: str, metrics: dict[str, float]):
        if not self.enabled:
            return
        line = json.dumps({"step": step, "split": split, **metrics}) + "\n"
        self.lines.append(line)
        if _is_local(os.fspath(self.path)):
            with self.path.open("a") as f:
                f.write(line)
        else:
            self.path.write_text("".join(self.lines))
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self):
        if self.tb is not None:
            self.tb.close()


# ----------------------------------------------------------------------------- the run


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       command: str = "") -> dict[str, Any]:
    """Trains, evaluates on val every train.eval_every steps (test whenever val improves),
    checkpoints, and returns (and writes to workdir/result.json) the final result."""
    # One mesh over every device of every host. Setting it as the current mesh lets the
    # attention kernels run per device on their share of the batch (see luna_lra.ops).
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    with jax.set_mesh(mesh):
        return _train_and_evaluate(config, workdir, command, mesh)


def _train_and_evaluate(config, workdir, command, mesh) -> dict[str, Any]:
    t_start = time.time()
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    if not config.data.task:
        raise ValueError("config field data.task is empty: use a config file from configs/")
    task_module = data_lib.get_task_module(config.data.task)
    if hasattr(task_module, "prepare_if_missing"):
        task_module.prepare_if_missing(config.data)
    splits = task_module.load_splits(config.data)
    for name in ("train", "val", "test"):
        if name not in splits:
            raise data_lib.DataError(f"task {config.data.task!r} returned no {name!r} split")
    task = dataclasses.replace(task_module.TASK, max_length=int(config.data.max_length))
    for name, split in splits.items():
        width = split["inputs"].shape[1]
        if width > task.max_length:
            raise data_lib.DataError(f"{name} inputs are {width} wide, more than "
                                     f"data.max_length={task.max_length}")

    # Parameters are replicated; the batch dimension is sharded on the `data` axis.
    devices = jax.devices()
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    for field in ("batch_size", "eval_batch_size"):
        if config.data[field] % len(devices):
            raise ValueError(f"config field data.{field}={config.data[field]} must be a multiple "
                             f"of the {len(devices)} devices")
    n_proc, proc = jax.process_count(), jax.process_index()

    model = build_model(config.model, task)
    if config.model.name == "luna":
        log.info("Luna attention: model.attention_impl=%r runs %r on backend %r",
                 config.model.attention_impl, _resolved_impl(config.model.attention_impl),
                 jax.default_backend())
    num_steps = int(config.train.num_steps)
    tx, schedule = make_optimizer(config.optim, num_steps)

    train_batches = pipeline.TrainBatches(splits["train"], config.data.batch_size, config.seed,
                                          proc, n_proc)
    sample = train_batches(0)
    init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
    init_args = [jnp.asarray(sample[k][:1]) if k in sample else None
                 for k in ("inputs", "mask", "inputs2", "mask2")]
    params = jax.jit(lambda r: model.init(r, *init_args, train=False)["params"],
                     out_shardings=replicated)(init_rng)
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    state = jax.device_put(state, replicated)
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))

    # Checkpoints: resume from the latest complete one. Orbax writes each step to a temporary
    # directory and renames it when complete, so a save cut short by a kill is never listed.
    ckpt_dir = _checkpoint_dir(workdir, "checkpoints")
    manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(
        max_to_keep=config.train.keep_checkpoints, create=True))
    # The parameters at the best validation accuracy, saved synchronously and only once the
    # other manager's save has finished: Orbax's cross-process barriers carry names that are
    # not unique per manager, so two managers saving at once fail in a multi-host run.
    best_manager = ocp.CheckpointManager(
        _checkpoint_dir(workdir, "best"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                             enable_async_checkpointing=False))
    progress = Progress()
    config_dict = json.loads(config.to_json())
    start_step = 0
    if manager.latest_step() is not None:
        step = manager.latest_step()
        # The config first: restoring arrays of another shape would fail less helpfully.
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        diffs = _config_diff(_resume_view(meta["config"]), _resume_view(config_dict))
        if diffs:
            raise TrainingError(
                f"{ckpt_dir}/{step} was written with another config; refusing to resume. Differing "
                "fields:\n  " + "\n  ".join(diffs) + "\nUse a new --workdir or the original config.")
        state = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(state)))["state"]
        progress = Progress(**meta["progress"])
        start_step = int(state.step)
        log.info("resumed from %s at step %d", ckpt_dir, start_step)

    def meta_now():
        return {"config": config_dict, "progress": dataclasses.asdict(progress)}

    saved_steps = {start_step}  # known alike on every process, unlike the directory listing

    def save(step: int):
        if step in saved_steps:
            return
        saved_steps.add(step)
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   meta=ocp.args.JsonSave(meta_now())), force=True)

    train_step, eval_step = make_steps(model, schedule)
    p_train = jax.jit(train_step, in_shardings=(replicated, batch_sharding, replicated),
                      out_shardings=(replicated, replicated), donate_argnums=0)
    p_eval = jax.jit(eval_step, in_shardings=(replicated, batch_sharding), out_shardings=replicated)

    def to_global(batch):
        return {k: jax.make_array_from_process_local_data(batch_sharding, v)
                for k, v in batch.items()}

    def evaluate(split_name: str) -> dict[str, float]:
        totals = {"correct": 0.0, "loss": 0.0, "count": 0.0}
        for batch in pipeline.eval_batches(splits[split_name], config.data.eval_batch_size,
                                           proc, n_proc):
            out = to_host(p_eval(state.params, to_global(batch)))
            for k in totals:
                totals[k] += float(out[k])
        expected = len(splits[split_name]["targets"])
        if int(totals["count"]) != expected:
            raise TrainingError(f"{split_name}: evaluated {totals['count']} examples, expected "
                                f"{expected}")
        return {"accuracy": totals["correct"] / totals["count"],
                "loss": totals["loss"] / totals["count"], "examples": expected}

    val_is_test = splits["val"]["inputs"] is splits["test"]["inputs"]
    writer = MetricsWriter(workdir, start_step)
    log.info("model %s (%s), %d parameters; %s; %d train / %d val / %d test examples",
             config.model.name, config.variant, num_params, machine_description(),
             len(splits["train"]["targets"]), len(splits["val"]["targets"]),
             len(splits["test"]["targets"]))

    bar = None
    if config.train.progress_bar and proc == 0:
        from tqdm import tqdm
        bar = tqdm(total=num_steps, initial=start_step, desc=f"{config.data.task}:{config.variant}",
                   dynamic_ncols=True, file=sys.stdout)
    pending: list[dict] = []
    t_compile = None
    try:
        with _SigtermFlag() as sigterm:
            for step in range(start_step, num_steps):
                t0 = time.time()
                state, metrics = p_train(state, to_global(train_batches(step)), dropout_rng)
                if t_compile is None:
                    jax.block_until_ready(metrics)
                    t_compile = time.time() - t0
                pending.append(metrics)
                done = step + 1
                if done % config.train.log_every == 0 or done == num_steps:
                    rows = to_host(pending)
                    pending = []
                    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
                    if not np.isfinite(mean["loss"]):
                        last = manager.latest_step()
                        raise TrainingError(
                            f"non-finite training loss at step {done} (mean over the last "
                            f"{len(rows)} steps); last good checkpoint: "
                            f"{f'{ckpt_dir}/{last}' if last is not None else 'none'}")
                    writer.write(done, "train", mean)
                    if bar is not None:
                        bar.set_postfix(loss=f"{mean['loss']:.3f}", acc=f"{mean['accuracy']:.3f}")
                if done % config.train.eval_every == 0 or done == num_steps:
                    val = evaluate("val")
                    writer.write(done, "val", val)
                    progress.val_history.append([done, val["accuracy"]])
                    if val["accuracy"] > progress.best_val_accuracy:
                        # Text evaluates on the test split as its validation split (as LRA).
                        test = val if val_is_test else evaluate("test")
                        writer.write(done, "test", test)
                        progress.best_val_accuracy = val["accuracy"]
                        progress.best_step, progress.test_at_best = done, test["accuracy"]
                        manager.wait_until_finished()
                        best_manager.save(done, args=ocp.args.Composite(
                            params=ocp.args.StandardSave(state.params),
                            meta=ocp.args.JsonSave(meta_now())), force=True)
                    msg = (f"step {done}: val accuracy {val['accuracy']:.4f} (best "
                           f"{progress.best_val_accuracy:.4f} at step {progress.best_step}, test "
                           f"there {progress.test_at_best:.4f})")
                    (bar.write if bar is not None else print)(msg)
                if done % config.train.checkpoint_every == 0 or done == num_steps:
                    save(done)
                if bar is not None:
                    bar.update(1)
                if sigterm.raised:
                    save(done)
                    manager.wait_until_finished()
                    raise Preempted(f"SIGTERM at step {done}: saved {ckpt_dir}/{done}; run the "
                                    "same command to resume")
    finally:
        if bar is not None:
            bar.close()
        manager.wait_until_finished()
        best_manager.wait_until_finished()
        writer.close()
    manager.close()
    best_manager.close()

    majority = report.majority_baseline(splits["train"]["targets"], splits["test"]["targets"])
    result = {
        "task": config.data.task,
        "name": config.name or config.data.task,
        "variant": config.variant,
        "model": config.model.name,
        "test_accuracy": progress.test_at_best,
        "val_accuracy": progress.best_val_accuracy,
        "step": progress.best_step,
        "num_steps": num_steps,
        "majority_baseline_test_accuracy": majority,
        "paper_accuracy": config.paper_accuracy / 100.0 if config.paper_accuracy else None,
        "paper_source": config.paper_source,
        "num_params": num_params,
        "params_sha256": params_digest(state.params),
        "compile_seconds": t_compile,
        "wall_seconds": time.time() - t_start,
        "machine": machine_description(),
        "devices": len(devices),
        "jax_version": jax.__version__,
        "commit": provenance.git_commit(),
        "command": command,
        "config": config_dict,
    }
    if proc == 0:
        (epath.Path(workdir) / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _resolved_impl(impl: str) -> str:
    resolve = getattr(ops, "resolve_impl", None)
    return resolve(impl) if resolve is not None else impl
