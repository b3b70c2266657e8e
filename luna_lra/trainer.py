"""The one trainer for every task: optimiser, jit-compiled steps over a device mesh, evaluation,
checkpoints, metrics and the final result.

The global batch is sharded on the mesh's `data` axis and parameters are replicated; jit
inserts the gradient all-reduce. The same code runs on one CPU, eight GPUs or a pod slice.
A run is: check the config, load the data, build the model, restore or initialise the state,
the loop (train, log, evaluate, save), finish (result.json).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import json
import logging
import os
import platform
import shutil
import signal
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
import tqdm
from flax.training import train_state
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from luna_lra import checkpoints as ckpt_lib
from luna_lra import config as config_lib
from luna_lra import data as data_lib
from luna_lra import host_memory, models, ops, provenance, results, workdir_lock
from luna_lra.data import pipeline
from luna_lra.metrics_log import MetricsWriter

log = logging.getLogger("luna_lra")


class TrainingError(RuntimeError):
    """The run cannot go on; the message says why in one line."""


class Refused(TrainingError):
    """The run cannot start as asked (the workdir holds another run, or cannot be written):
    a mistake no retry fixes."""


class Diverged(TrainingError):
    """A non-finite loss or state (no retry fixes it)."""


class Preempted(Exception):
    """A preemption notice arrived; a checkpoint of the last finished step was written."""


# ----------------------------------------------------------------------------- optimiser


def make_schedule(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warm-up from warmup_init_lr to learning_rate, then the chosen decay.

    inverse_sqrt is fairseq's: learning_rate * sqrt(warmup_steps / step) after warm-up (the
    LRA code's rsqrt_decay has the same shape).
    """
    peak, warm, init = cfg.learning_rate, max(int(cfg.warmup_steps), 0), cfg.warmup_init_lr

    def warmup(step):
        return init + (peak - init) * step / max(warm, 1)

    def after(step):
        if cfg.schedule == "inverse_sqrt":
            return peak * jnp.sqrt(max(warm, 1) / jnp.maximum(step, 1.0))
        if cfg.schedule == "cosine":
            frac = jnp.clip((step - warm) / max(num_steps - warm, 1), 0.0, 1.0)
            return cfg.end_lr + 0.5 * (peak - cfg.end_lr) * (1 + jnp.cos(jnp.pi * frac))
        return peak * jnp.ones_like(step)  # constant

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


def _all_finite(tree):
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def make_steps(model, schedule):
    """(train_step(state, batch, rng) -> (state, metrics), eval_step(params, batch) -> sums).
    metrics["finite"]: the loss and the whole updated state (parameters and optimiser
    moments) are finite."""
    def train_step(state, batch, rng):
        dropout_rng = jax.random.fold_in(rng, state.step)

        def loss_fn(params):
            logits = model.apply({"params": params}, *_model_args(batch), train=True,
                                 rngs={"dropout": dropout_rng})
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
            return loss.mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = state.apply_gradients(grads=grads)
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["targets"]),
            "grad_norm": jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads))),
            "learning_rate": schedule(state.step),
            "finite": jnp.isfinite(loss) & _all_finite((new_state.params, new_state.opt_state)),
        }
        return new_state, metrics

    def eval_step(params, batch):
        logits = model.apply({"params": params}, *_model_args(batch), train=False)
        w = batch["weights"]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
        return {"correct": jnp.sum(correct * w), "loss": jnp.sum(loss * w), "count": jnp.sum(w)}

    return train_step, eval_step


# ----------------------------------------------------------------------------- the pieces


@dataclasses.dataclass
class Progress:
    """What a checkpoint carries besides the train state (JSON): the best step so far, the
    run's totals over every attempt up to this state, and the train rows not yet logged."""

    best_val_accuracy: float = -1.0
    best_step: int = -1
    test_at_best: float = -1.0
    val_history: list = dataclasses.field(default_factory=list)
    started_at: str = dataclasses.field(default_factory=lambda: utc_now())  # the first start
    attempts: int = 0  # starts of the trainer on this run
    wall_seconds: float = 0.0
    compile_seconds: float = 0.0  # each attempt's first step (tracing, compiling), summed
    attention_ran: dict = dataclasses.field(default_factory=dict)
    log_window: list = dataclasses.field(default_factory=list)  # [[step, metrics]] not logged


@dataclasses.dataclass
class Run:
    """Everything one run needs, built once by `setup`."""

    config: ml_collections.ConfigDict
    workdir: str
    splits: dict
    task: data_lib.TaskInfo
    model: Any
    mesh: Mesh
    checkpoints: ckpt_lib.Checkpoints
    train_batches: pipeline.TrainBatches
    data: dict  # each split's fingerprint (luna_lra.data.fingerprint)
    train_step: Any = None  # compiled, sharded over the mesh
    eval_step: Any = None

    @property
    def replicated(self):
        return NamedSharding(self.mesh, P())

    @property
    def batch_sharding(self):
        return NamedSharding(self.mesh, P("data"))

    def to_global(self, batch):
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
                for k, v in batch.items()}


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def host_names() -> list[str]:
    """The host name of every process, in process order."""
    name = np.frombuffer(platform.node().encode()[:64].ljust(64), np.uint8)
    if jax.process_count() == 1:
        return [platform.node()]
    names = multihost_utils.process_allgather(name)
    return [bytes(row).rstrip(b" ").decode(errors="replace") for row in np.asarray(names)]


def machine_description() -> str:
    devs = jax.devices()
    return (f"{len(devs)} x {devs[0].device_kind} ({jax.default_backend()}), "
            f"{jax.process_count()} process(es), {os.cpu_count()} CPU cores, {platform.machine()}")


def check_workdir(workdir: str) -> None:
    """A workdir the run can write to, or Refused naming it (before any data is read); a full
    disk is a TrainingError (freeing space helps)."""
    # One probe per process: processes sharing a workdir must not delete each other's.
    probe = epath.Path(workdir) / f".luna_lra_write_test.{platform.node()}.{os.getpid()}"
    try:
        epath.Path(workdir).mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        if e.errno in FULL_DISK:
            raise TrainingError(f"--workdir {workdir}: cannot write there ({e.strerror})") \
                from None
        raise Refused(f"--workdir {workdir}: cannot write there "
                      f"({type(e).__name__}: {e.strerror or e})") from None


FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
SPACE_SLACK = 256 * 1024  # metrics rows, status.json and TensorBoard events between two checks


def check_space(run: "Run", state) -> None:
    """TrainingError in one line when the workdir's disk has no room for another checkpoint
    (twice the newest one's size on disk, or before the first an estimate from the state): a
    full disk stops the run here, before a write fails half-way in a background save. Every
    process of a run decides on process 0's figure."""
    workdir = run.workdir
    if "://" in workdir:
        return
    size = run.checkpoints.newest_size() or sum(x.nbytes + 4096 for x in jax.tree.leaves(state))
    free_kib, needed_kib = shutil.disk_usage(workdir).free // 1024, (2 * size + SPACE_SLACK) // 1024
    if jax.process_count() > 1:
        # Broadcast in KiB, capped to int32: JAX without x64 would wrap an int64 byte count.
        cap = np.iinfo(np.int32).max
        figures = np.array([min(free_kib, cap), min(needed_kib, cap)], np.int32)
        free_kib, needed_kib = map(int, multihost_utils.broadcast_one_to_all(figures))
    if free_kib < needed_kib:
        raise TrainingError(f"{workdir}: No space left on device for the next checkpoint "
                            f"({free_kib} KiB free, about {needed_kib} KiB needed); "
                            "free some, then the same command resumes")


@contextlib.contextmanager
def workdir_held(workdir: str):
    """One trainer per workdir (luna_lra.workdir_lock): process 0 takes the lock for the run,
    and every process learns whether it got it."""
    lock, refusal = workdir_lock.Lock(workdir), ""
    if jax.process_index() == 0:
        try:
            lock.acquire()
        except workdir_lock.Busy as e:
            refusal = str(e)
    if jax.process_count() > 1:
        refused = multihost_utils.broadcast_one_to_all(np.int32(bool(refusal)))
        refusal = refusal or (f"--workdir {workdir} is in use by another trainer (process 0 "
                              "says so)" if int(refused) else "")
    if refusal:
        raise Refused(refusal)
    try:
        yield
    finally:
        lock.release()


def load_data(config) -> tuple[dict, data_lib.TaskInfo]:
    data_dir = config.data.data_dir
    if data_dir and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise data_lib.DataError(f"config field data.data_dir={data_dir!r}: is a file; expected "
                                 f"the folder of the {config.data.task} data")
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
    return splits, task


def setup(config, workdir: str, mesh: Mesh) -> Run:
    splits, task = load_data(config)
    fingerprints = {name: data_lib.fingerprint(split) for name, split in splits.items()}
    model = models.build_model(config.model, task)
    train_batches = pipeline.TrainBatches(splits["train"], config.data.batch_size, config.seed,
                                          jax.process_index(), jax.process_count())
    checkpoints = ckpt_lib.Checkpoints(workdir, keep=config.train.keep_checkpoints,
                                       every=config.train.checkpoint_every,
                                       last_step=config.train.num_steps)
    return Run(config, workdir, splits, task, model, mesh, checkpoints, train_batches,
               fingerprints)


def state_initializer(run: Run, tx):
    """init(rng) -> TrainState, to be traced abstractly or jit-compiled sharded."""
    sample = run.train_batches(0)
    args = [jnp.asarray(sample[k][:1]) if k in sample else None
            for k in ("inputs", "mask", "inputs2", "mask2")]

    def init(rng):
        params = run.model.init(rng, *args, train=False)["params"]
        return train_state.TrainState.create(apply_fn=run.model.apply, params=params, tx=tx)

    return init


def restore_or_init(run: Run, tx, init_rng) -> tuple[Any, Progress]:
    """The newest intact checkpoint made with this run's config, else a fresh state."""
    init = state_initializer(run, tx)
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                           sharding=run.replicated),
                            jax.eval_shape(init, init_rng))
    this = config_lib.to_dict(run.config)

    def check_meta(meta, where):
        blockers = config_lib.extension_blockers(meta["config"], this)
        if blockers:
            raise Refused(f"{where} was made with another config ({'; '.join(blockers)}, "
                          "as checkpoint vs this run); use a new --workdir or that config")
        check_same_data(meta.get("data"), run.data, where)

    restored = run.checkpoints.restore_latest(abstract, check_meta)
    if restored is None:
        return jax.jit(init, out_shardings=run.replicated)(init_rng), Progress()
    state, meta = restored
    step = int(state.step)
    if step > run.config.train.num_steps:
        raise Refused(f"{run.checkpoints.path}/{step} is past config field "
                            f"train.num_steps={run.config.train.num_steps}; give at least {step}")
    log.info("resumed from %s at step %d", run.checkpoints.path, step)
    progress = Progress(**meta["progress"])
    # status.json, written at every logged step, knows of time spent after the checkpoint
    status = read_json(os.path.join(run.workdir, "status.json"))
    for key in ("wall_seconds", "compile_seconds"):
        if isinstance(status.get(key), (int, float)):
            setattr(progress, key, max(getattr(progress, key), float(status[key])))
    return state, progress


def check_same_data(saved: dict | None, now: dict, where: str) -> None:
    """Refused if a split's examples differ from those the checkpoint was trained on (a
    checkpoint from before fingerprints were kept is trusted)."""
    if saved is None:
        log.warning("%s records no data fingerprint: cannot check the data is the same", where)
        return
    for split in sorted(set(saved) | set(now)):
        have, want = saved.get(split) or {}, now.get(split) or {}
        if have.get("sha256") != want.get("sha256"):
            show = lambda f: (f"{f.get('examples')} examples, sha256 "  # noqa: E731
                              f"{str(f.get('sha256'))[:12]}" if f else "none")
            raise Refused(f"config field data.data_dir: the {split} split is not the data {where} "
                          f"was trained on ({show(want)} here vs {show(have)} there); resume "
                          "with that data, or use a new --workdir")


def compile_steps(run: Run, schedule) -> None:
    train_step, eval_step = make_steps(run.model, schedule)
    rep, batch = run.replicated, run.batch_sharding
    run.train_step = jax.jit(train_step, in_shardings=(rep, batch, rep),
                             out_shardings=(rep, rep), donate_argnums=0)
    run.eval_step = jax.jit(eval_step, in_shardings=(rep, batch), out_shardings=rep)


def evaluate(run: Run, params, split_name: str) -> dict[str, float]:
    totals = {"correct": 0.0, "loss": 0.0, "count": 0.0}
    split = run.splits[split_name]
    for batch in pipeline.eval_batches(split, run.config.data.eval_batch_size,
                                       jax.process_index(), jax.process_count(), split_name):
        out = ckpt_lib.to_host(run.eval_step(params, run.to_global(batch)))
        for k in totals:
            totals[k] += float(out[k])
    expected = len(split["targets"])
    if int(totals["count"]) != expected:
        raise TrainingError(f"{split_name}: evaluated {totals['count']} examples, expected "
                            f"{expected}")
    return {"accuracy": totals["correct"] / totals["count"],
            "loss": totals["loss"] / totals["count"], "examples": expected}


# ----------------------------------------------------------------------------- the loop


class Interrupted(Exception):
    """Ctrl-C twice: stopped at once, the step since the last checkpoint not saved."""


class PreemptionNotice:
    """Whether to save and stop after a step: a SIGTERM (preemption, a sweep stopping) or a
    Ctrl-C (SIGINT, the same; a second one stops at once). Several processes: JAX's preemption
    sync point (through Orbax), so every process stops at the same step; a Ctrl-C there is
    passed on as SIGTERM to this process, which JAX's notice listens for."""

    def __init__(self, checkpoints: ckpt_lib.Checkpoints):
        self.checkpoints, self.flag, self._previous = checkpoints, False, {}

    def __enter__(self):
        signals = (signal.SIGINT,) if jax.process_count() > 1 else (signal.SIGINT, signal.SIGTERM)
        try:
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = {}
        return self

    def _handle(self, signum, frame):
        if self.flag and signum == signal.SIGINT:
            raise Interrupted("Ctrl-C again: stopped at once, without saving the steps since "
                              "the last checkpoint; the same command resumes from it")
        if not self.flag:
            print(f"{signal.Signals(signum).name}: saving a checkpoint of this step, then "
                  "stopping" + (" (Ctrl-C again to stop at once)"
                                if signum == signal.SIGINT else ""), file=sys.stderr, flush=True)
        self.flag = True
        if jax.process_count() > 1 and signum == signal.SIGINT:
            os.kill(os.getpid(), signal.SIGTERM)

    def reached(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self.flag
        return self.checkpoints.preempted(step)

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


class Loop:
    """The training loop of a run: train, log, evaluate, save; one method per concern."""

    def __init__(self, run: Run, state, progress: Progress, dropout_rng, started: float):
        self.run, self.state, self.progress, self.rng = run, state, progress, dropout_rng
        self.cfg = run.config.train
        # (step, metrics) not yet checked and logged: a checkpoint carries them, so the rows
        # logged after a resume are those of an uninterrupted run
        self.pending = [(step, _host_row(row)) for step, row in progress.log_window]
        self.writer = MetricsWriter(run.workdir, int(state.step))
        self.val_is_test = run.splits["val"]["inputs"] is run.splits["test"]["inputs"]
        self.bar, self.compile_seconds, self.attention_ran = None, None, {}
        self.last_status, self.speed = None, None  # (step, time) of the last status.json
        self.started, self.before = started, (progress.wall_seconds, progress.compile_seconds)
        progress.attempts += 1

    def run_steps(self) -> None:
        start, num_steps = int(self.state.step), self.cfg.num_steps
        if self.cfg.progress_bar and jax.process_index() == 0:
            self.bar = tqdm.tqdm(total=num_steps, initial=start, dynamic_ncols=True,
                                 file=sys.stdout,
                                 desc=f"{self.run.config.data.task}:{self.run.config.variant}")
        with PreemptionNotice(self.run.checkpoints) as notice:
            for step in range(start, num_steps):
                self.train_one(step)
                done = step + 1
                if done % self.cfg.log_every == 0 or done == num_steps:
                    self.log_train(done)
                improved = (done % self.cfg.eval_every == 0 or done == num_steps) \
                    and self.evaluate_val(done)
                preempted = notice.reached(done)
                if improved or preempted or self.run.checkpoints.due(done):
                    self.save(done, improved)
                if self.bar is not None:
                    self.bar.update(1)
                if preempted:
                    self.run.checkpoints.wait()
                    raise Preempted(f"stopped at step {done} (SIGTERM or Ctrl-C): saved "
                                    f"{self.run.checkpoints.path}/{done}; run the same command "
                                    "to resume")

    def train_one(self, step: int) -> None:
        t0 = time.time()
        batch = self.run.to_global(self.run.train_batches(step))
        if self.compile_seconds is None:  # the first call traces: see what attention ran
            with ops.record_choices() as choices:
                self.state, metrics = self.run.train_step(self.state, batch, self.rng)
            jax.block_until_ready(metrics)
            self.compile_seconds = time.time() - t0
            self.attention_ran = attention_summary(self.run.config, choices)
            log.info("attention ran: %s", ", ".join(f"{k} {v}" for k, v in
                                                    self.attention_ran.items()))
        else:
            self.state, metrics = self.run.train_step(self.state, batch, self.rng)
        self.pending.append((step + 1, metrics))

    def check_finite(self) -> list[tuple[int, dict]]:
        """Host copies of the pending (step, metrics); Diverged at the first non-finite step."""
        rows = [(s, ckpt_lib.to_host(m)) for s, m in self.pending]
        for s, row in rows:
            if not bool(row["finite"]):
                last = self.run.checkpoints.latest_step()
                raise Diverged(
                    f"non-finite loss or weights at step {s} (loss {float(row['loss']):.4g}, "
                    f"gradient norm {float(row['grad_norm']):.4g}); last good checkpoint: "
                    + (f"{self.run.checkpoints.path}/{last}" if last is not None else "none")
                    + "; lower optim.learning_rate or set optim.grad_clip_norm")
        return rows

    def log_train(self, done: int) -> None:
        self.run.checkpoints.check_for_errors()  # a failed background save stops the run now
        check_space(self.run, self.state)
        rows = [row for _, row in self.check_finite()]
        self.pending = []
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "finite"}
        self.writer.write(done, "train", mean)
        self.write_status(done)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{mean['loss']:.3f}", acc=f"{mean['accuracy']:.3f}")

    def totals(self) -> dict[str, Any]:
        """The run's wall time, compile time and attention over every attempt until now."""
        wall, compile_s = self.before
        return {"wall_seconds": wall + time.time() - self.started,
                "compile_seconds": compile_s + (self.compile_seconds or 0.0),
                "attention_ran": self.attention_ran or self.progress.attention_ran,
                "attempts": self.progress.attempts}

    def write_status(self, done: int) -> None:
        """WORKDIR/status.json: where the run is, for `luna_lra.sweep --status`, and its totals
        (which a resume takes up from there)."""
        now = time.time()
        if self.last_status is not None:
            step0, t0 = self.last_status
            self.speed = (done - step0) / max(now - t0, 1e-9)
        self.last_status = (done, now)
        if jax.process_index() == 0:
            results.write_json_atomic(os.path.join(self.run.workdir, "status.json"), {
                "step": done, "num_steps": self.cfg.num_steps, "steps_per_second": self.speed,
                "best_val_accuracy": self.progress.best_val_accuracy,
                "best_step": self.progress.best_step, **self.totals(), "updated_at": utc_now()})

    def evaluate_val(self, done: int) -> bool:
        """Evaluates val (and test when val improves); returns whether val improved."""
        val = evaluate(self.run, self.state.params, "val")
        self.writer.write(done, "val", val)
        p = self.progress
        p.val_history.append([done, val["accuracy"]])
        improved = val["accuracy"] > p.best_val_accuracy
        if improved:  # Text evaluates on the test split as its validation split (as LRA)
            test = val if self.val_is_test else evaluate(self.run, self.state.params, "test")
            self.writer.write(done, "test", test)
            p.best_val_accuracy, p.best_step, p.test_at_best = val["accuracy"], done, \
                test["accuracy"]
        msg = (f"step {done}: val accuracy {val['accuracy']:.4f} (best "
               f"{p.best_val_accuracy:.4f} at step {p.best_step}, test there "
               f"{p.test_at_best:.4f})")
        (self.bar.write if self.bar is not None else print)(msg)
        return improved

    def save(self, done: int, improved: bool) -> None:
        window = self.check_finite()  # a checkpoint holds only weights known to be finite
        check_space(self.run, self.state)
        progress = dataclasses.replace(self.progress, **self.totals(), log_window=[
            [s, {k: v.item() for k, v in row.items()}] for s, row in window])
        meta = {"config": config_lib.to_dict(self.run.config), "data": self.run.data,
                "progress": dataclasses.asdict(progress)}
        self.run.checkpoints.save(done, self.state, meta,
                                  self.progress.best_val_accuracy if improved else None)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.writer.close()


def _host_row(row: dict) -> dict:
    """A logged-later metrics row from a checkpoint: the float32 values the device gave."""
    return {k: np.asarray(v, bool if k == "finite" else np.float32) for k, v in row.items()}


# ----------------------------------------------------------------------------- the run


def read_json(path: str) -> dict:
    """The JSON object in a regular file, or {} (missing, unreadable, torn, not an object)."""
    try:
        if not os.path.isfile(path):
            return {}
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def finished_result(config, workdir: str) -> dict | None:
    """The workdir's result.json if it is this run's, finished (the same identity)."""
    result = read_json(os.path.join(workdir, "result.json"))
    if not isinstance(result.get("config"), dict):
        return None
    return None if config_lib.differences(result["config"], config_lib.to_dict(config)) \
        else result


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, command: str = "",
                       changed: dict | None = None) -> dict[str, Any]:
    """Trains, evaluates on val every train.eval_every steps (test whenever val improves),
    checkpoints, and returns (and writes to workdir/result.json) the final result. A run
    that has finished already is returned as it is, nothing written.
    `changed`: {field: [config file's value, this run's]} for the record."""
    config_lib.check(config, devices=jax.device_count(), processes=jax.process_count(),
                     backend=jax.default_backend())
    done = finished_result(config, workdir)
    if done is not None:
        return done
    check_workdir(workdir)
    # One mesh over every device of every host. Setting it as the current mesh lets the
    # attention kernels run per device on their share of the batch (see luna_lra.ops).
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    with workdir_held(workdir), jax.set_mesh(mesh):
        started = time.time()
        run = setup(config, workdir, mesh)
        tx, schedule = make_optimizer(config.optim, config.train.num_steps)
        init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
        state, progress = restore_or_init(run, tx, init_rng)
        check_space(run, state)
        compile_steps(run, schedule)
        log_start(run, state)
        loop = Loop(run, state, progress, dropout_rng, started)
        with closing(loop, run):
            loop.run_steps()
        return finish(run, loop, command, changed or {})


@contextlib.contextmanager
def closing(loop: Loop, run: Run):
    """Closes the loop's writers and the checkpoints (waiting for a save). When the run is
    failing already, a second failure while closing (a full disk fails them all) is only
    logged: the first error is the one reported."""
    try:
        yield
    except ckpt_lib.NonFiniteState as e:
        _close_quietly(loop, run)
        raise Diverged(str(e)) from None
    except BaseException:
        _close_quietly(loop, run)
        raise
    loop.close()
    run.checkpoints.close()


def _close_quietly(loop: Loop, run: Run) -> None:
    for close in (loop.close, run.checkpoints.close):
        try:
            close()
        except Exception as e:  # noqa: BLE001 - the error being raised is the one that counts
            log.warning("while stopping: %s", ckpt_lib.root_cause(e))


def attention_summary(config, choices) -> dict[str, str]:
    """What ran, by kind of attention call: {'pack': 'pallas_gpu', 'unpack': 'xla'} for calls
    through luna_lra.ops' pack/unpack (as traced); otherwise the model's own attention_impl
    field, if it has one ({'attention': 'cudnn'})."""
    ran: dict[str, list[str]] = {}
    for kind, impl in choices:
        if impl not in ran.setdefault(kind, []):
            ran[kind].append(impl)
    if not ran and "attention_impl" in config.model:
        return {"attention": config.model.attention_impl}
    return {kind: " + ".join(impls) for kind, impls in ran.items()}


def log_start(run: Run, state) -> None:
    cfg = run.config
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
    log.info("model %s (%s), %d parameters; %s; %d train / %d val / %d test examples",
             models.label(cfg.model), cfg.variant, num_params, machine_description(),
             *(len(run.splits[s]["targets"]) for s in ("train", "val", "test")))


def finish(run: Run, loop: Loop, command: str, changed: dict) -> dict:
    """result.json: the run's record, with its totals over every attempt."""
    cfg, p = run.config, loop.progress
    result = {
        "task": cfg.data.task, "name": cfg.name or cfg.data.task, "variant": cfg.variant,
        "model": cfg.model.name, "model_label": models.label(cfg.model),
        "config_file": cfg.config_file,
        "test_accuracy": p.test_at_best, "val_accuracy": p.best_val_accuracy,
        "step": p.best_step, "num_steps": cfg.train.num_steps,
        "majority_baseline_test_accuracy": results.majority_baseline(
            run.splits["train"]["targets"], run.splits["test"]["targets"]),
        "num_params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(loop.state.params)),
        "params_sha256": ckpt_lib.params_digest(loop.state.params),
        **loop.totals(),
        "started_at": p.started_at, "finished_at": utc_now(), "hosts": host_names(),
        "visible_devices": {k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES",
                            "TPU_VISIBLE_CHIPS") if k in os.environ},
        "machine": machine_description(), "devices": jax.device_count(),
        "jax_version": jax.__version__, "huge_pages": host_memory.in_use(),
        "glibc_tunables": host_memory.tunables(),
        "commit": provenance.git_commit(), "command": command,
        "data": run.data, "changed_from_config_file": changed,
        "config": config_lib.to_dict(cfg),
    }
    result.update(results.published_for(result))
    if jax.process_index() == 0:
        results.write_json_atomic(os.path.join(run.workdir, "result.json"), result)
    return result
