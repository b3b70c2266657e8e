"""A run's checkpoints, through one Orbax CheckpointManager and its own policies.

- Saved every train.checkpoint_every steps and at the last step (Orbax's save decision
  policies), on preemption, and at every step where the validation accuracy improves.
- Kept: the last train.keep_checkpoints, and the best by validation accuracy (Orbax's LatestN
  and BestN preservation policies).
- A save holds only finite weights (checked on the host copy it is hashed from), and records
  the sha256 of the state beside it. A restore recomputes that digest: a checkpoint Orbax
  cannot read, or whose digest differs, is reported in one line, moved to
  WORKDIR/checkpoints_damaged/, and the one before it is tried.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

log = logging.getLogger("luna_lra")

NOT_A_BEST = -1.0  # the metric of checkpoints not saved at an improvement of validation


class CheckpointError(RuntimeError):
    """A save failed (a full disk, a read-only folder); the message says where and why."""


class NonFiniteState(RuntimeError):
    """The state to be saved holds NaN or inf."""


def to_host(tree):
    """numpy copies of replicated arrays; works on every process of a multi-host run, where
    jax.device_get refuses arrays that span other hosts' devices."""
    def one(x):
        return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x)
    return jax.tree.map(one, tree)


def tree_digest(host_tree) -> str:
    """sha256 over the leaves' paths and bytes in tree order: equal digests, equal trees."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(host_tree)[0]:
        h.update(jax.tree_util.keystr(path).encode())
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()


def params_digest(params) -> str:
    return tree_digest(to_host(params))


def count_non_finite(host_tree) -> tuple[int, int]:
    """(non-finite values, all values) over the floating-point leaves."""
    leaves = [np.asarray(x) for x in jax.tree.leaves(host_tree)
              if np.issubdtype(np.asarray(x).dtype, np.floating)]
    return (sum(int(np.size(x) - np.isfinite(x).sum()) for x in leaves),
            sum(int(np.size(x)) for x in leaves))


def directory(workdir: str, name: str = "checkpoints") -> str:
    """Orbax wants absolute local paths; remote ones (gs://...) pass as they are."""
    path = os.path.join(workdir, name)
    return path if "://" in workdir else os.path.abspath(path)


def _best_metric(metrics) -> float:
    return float(metrics["val_accuracy"])


class Checkpoints:
    """save(step, state, meta, best_val) and restore_latest(abstract_state, check_meta)."""

    def __init__(self, workdir: str, *, keep: int, every: int, last_step: int):
        self.workdir, self.path = workdir, directory(workdir)
        options = ocp.CheckpointManagerOptions(
            create=True, cleanup_tmp_directories=True,  # the leftovers of a save cut short
            best_fn=_best_metric, best_mode="max",  # so metrics are written and read back
            save_decision_policy=policies.AnySavePolicy([
                policies.FixedIntervalPolicy(every), policies.SpecificStepsPolicy([last_step]),
                policies.PreemptionCheckpointingPolicy()]),
            preservation_policy=policies.AnyPreservationPolicy([
                policies.LatestN(keep),
                policies.BestN(get_metric_fn=_best_metric, reverse=False, n=1,
                               keep_checkpoints_without_metrics=False)]))
        self.manager = ocp.CheckpointManager(self.path, options=options,
                                             item_names=("state", "meta"))

    def due(self, step: int) -> bool:
        """Whether Orbax's save decision (interval, last step, preemption) says save now."""
        return self.manager.should_save(step)

    def preempted(self, step: int) -> bool:
        """All processes agree on a preemption notice at this step (multi-process runs)."""
        return self.manager.reached_preemption(step)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def newest_size(self) -> int | None:
        """Bytes the newest checkpoint takes on a local disk (None: none yet, or remote)."""
        step = self.manager.latest_step()
        if step is None or "://" in self.path:
            return None
        folder = os.path.join(self.path, str(step))
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder)
                   for f in files)

    def save(self, step: int, state, meta: dict, best_val: float | None) -> None:
        """Saves (asynchronously) unless this step is saved already. Raises NonFiniteState
        rather than write NaN/inf, CheckpointError when writing fails."""
        if step in self.manager.all_steps():
            return
        host = to_host(state)
        bad, total = count_non_finite(host)
        if bad:
            raise NonFiniteState(f"{bad:,} of {total:,} values of the state at step {step} are "
                                 "not finite")
        meta = {**meta, "state_sha256": tree_digest(host)}
        metrics = {"val_accuracy": NOT_A_BEST if best_val is None else float(best_val)}
        self._guard(step, lambda: self.manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta)),
            metrics=metrics, force=True))

    def check_for_errors(self) -> None:
        """Raises CheckpointError now if an asynchronous save has failed since the last call."""
        self._guard(self.manager.latest_step(), self.manager.check_for_errors)

    def wait(self) -> None:
        """Blocks until the asynchronous save has been written (CheckpointError if it fails)."""
        self._guard(self.manager.latest_step(), self.manager.wait_until_finished)

    def close(self) -> None:
        self.wait()
        self.manager.close()

    def _guard(self, step, action) -> None:
        try:
            action()
        except Exception as e:  # noqa: BLE001 - any failure to write: one line, the cause
            raise CheckpointError(f"saving checkpoint {self.path}/{step} failed: "
                                  f"{root_cause(e)}") from e

    def restore_latest(self, abstract_state, check_meta) -> tuple[Any, dict] | None:
        """(state, meta) of the newest checkpoint that reads back intact, or None.

        check_meta(meta, where) may raise to refuse a checkpoint (another config): that
        error propagates. Damaged checkpoints are moved aside, one line each."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            where = f"{self.path}/{step}"
            try:
                meta = self.manager.restore(step, args=ocp.args.Composite(
                    meta=ocp.args.JsonRestore()))["meta"]
            except Exception as e:  # noqa: BLE001 - unreadable metadata: damaged
                self._set_aside(step, f"its metadata cannot be read ({root_cause(e)})")
                continue
            check_meta(meta, where)
            try:
                state = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state)))["state"]
                digest = tree_digest(to_host(state))
            except Exception as e:  # noqa: BLE001 - unreadable arrays: damaged
                self._set_aside(step, f"its arrays cannot be read ({root_cause(e)})")
                continue
            if digest != meta.get("state_sha256"):
                self._set_aside(step, "its arrays differ from what was saved (sha256 "
                                f"{digest[:12]}..., recorded {str(meta.get('state_sha256'))[:12]}...)")
                continue
            return state, meta
        return None

    def _set_aside(self, step: int, why: str) -> None:
        target = epath.Path(directory(self.workdir, "checkpoints_damaged")) / str(step)
        log.warning("checkpoint %s/%d is damaged: %s; moved to %s, trying the one before",
                    self.path, step, why, target)
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target.rmtree()
            (epath.Path(self.path) / str(step)).rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"luna_lra_set_aside_{step}")
        self.manager.reload()


def root_cause(e: BaseException) -> str:
    """'Type: message' of the innermost cause, first line only."""
    while e.__cause__ is not None or (e.__context__ is not None and not e.__suppress_context__):
        e = e.__cause__ or e.__context__
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def load_params(workdir: str, step: int | None = None, best: bool = False):
    """A run's parameters as numpy arrays (the latest checkpoint, a step, or the best by
    validation accuracy), whatever device layout wrote them."""
    path = directory(workdir)
    manager = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(
        read_only=True, best_fn=_best_metric, best_mode="max"), item_names=("state", "meta"))
    if not manager.all_steps():
        raise FileNotFoundError(f"no checkpoint in {path}")
    step = manager.best_step() if best else manager.latest_step() if step is None else step
    checkpointer = ocp.PyTreeCheckpointer()
    item = os.path.join(path, str(step), "state")
    tree = checkpointer.metadata(item).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return checkpointer.restore(item, args=ocp.args.PyTreeRestore(restore_args=as_numpy))["params"]
