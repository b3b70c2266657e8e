"""Part 4 of `python -m luna_lra.benchmark gpu`: the Text config's Luna-256 (configs/text.py,
bf16) trained on synthetic Text-shaped data, first with impl=xla for a time budget, then the
same steps with impl=pallas: steps/s of each and both loss curves (OUT/train.md/.json).

The data are random bytes (1..256) of random lengths (half to all of max_length), labelled by
whether the first 64 bytes' mean exceeds 128: IMDB cannot travel to a device machine, and a
learnable rule makes the loss move. Both runs start from the same parameters, see the same
batches and draw the same dropout masks (the kernels reproduce the reference's counter hash),
so their losses agree to bf16 rounding until the runs drift apart.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

from luna_lra import config as config_lib
from luna_lra.benchmark import measure
from luna_lra.data import TaskInfo
from luna_lra.models import build_model
from luna_lra.trainer import make_optimizer, make_steps

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FULL = dict(spec="configs/text.py:luna256", seconds=50.0, n=None, batch=None)
DRY = dict(spec="configs/text.py:tiny", seconds=4.0, n=64, batch=4)
TOLERANCE = 2e-2  # bf16 keeps 8 bits of mantissa: a loss near 0.7 moves by ~3e-3 per rounding
CHUNK = 5  # steps between host syncs


def synthetic_batches(seed: int, batch: int, n: int, count: int):
    """`count` Text-shaped batches (inputs, mask, targets) as numpy."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        lengths = rng.integers(n // 2, n + 1, size=batch)
        mask = np.arange(n)[None, :] < lengths[:, None]
        inputs = np.where(mask, rng.integers(1, 257, size=(batch, n)), 0).astype(np.int32)
        targets = (inputs[:, :64].mean(axis=1) > 128).astype(np.int32)
        yield dict(inputs=inputs, mask=mask, targets=targets)


def build(config, impl: str, interpret: bool):
    """(model, optimizer, schedule) of the config with attention_impl=impl."""
    config.model.attention_impl, config.model.dtype = impl, "bfloat16"
    task = TaskInfo(name="text", num_classes=2, vocab_size=257,
                    max_length=int(config.data.max_length))
    tx, schedule = make_optimizer(config.optim, int(config.train.num_steps))
    return build_model(config.model, task, interpret=interpret), tx, schedule


def train(config, impl: str, interpret: bool, seconds: float, max_steps: int | None) -> dict:
    """Steps until `seconds` have passed (or max_steps); losses, steps/s after compiling."""
    model, tx, schedule = build(config, impl, interpret)
    b, n = int(config.data.batch_size), int(config.data.max_length)
    data = list(synthetic_batches(0, b, n, 8))  # cycled: the same batches for both runs
    params = jax.jit(model.init)(jax.random.key(0), jnp.asarray(data[0]["inputs"][:1, :16]),
                                 jnp.asarray(data[0]["mask"][:1, :16]))["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    step = jax.jit(make_steps(model, schedule)[0], donate_argnums=0)
    batches = [jax.tree.map(jnp.asarray, d) for d in data]
    t0 = time.perf_counter()
    state, metrics = step(state, batches[0], jax.random.key(1))
    losses = [metrics["loss"]]
    jax.block_until_ready(state)
    compile_s, t0 = time.perf_counter() - t0, time.perf_counter()
    while (time.perf_counter() - t0 < seconds) and (max_steps is None or len(losses) < max_steps):
        for _ in range(CHUNK):
            state, metrics = step(state, batches[len(losses) % len(batches)], jax.random.key(1))
            losses.append(metrics["loss"])
        jax.block_until_ready(state)
    timed = len(losses) - 1
    return dict(status="ok", compile_and_first_step_s=compile_s, steps=len(losses),
                steps_per_s=timed / (time.perf_counter() - t0),
                losses=[float(x) for x in losses])


def _markdown(meta: dict, runs: dict, result: dict) -> str:
    out = [f"# Text-config training, impl=xla vs impl=pallas ({meta['spec']}, bf16)", "",
           f"- machine: {meta['machine']}; jax {meta['jax_version']}; commit {meta['commit']}",
           "- data: synthetic Text-shaped batches (IMDB cannot travel); see "
           "luna_lra/benchmark/gpu_train.py", "",
           "| impl | steps | steps/s | compile + first step s | first loss | last loss |",
           "|---|---|---|---|---|---|"]
    for impl, r in runs.items():
        if r.get("status") != "ok":
            out.append(f"| {impl} | — | — | — | — | {r.get('status')} |")
            continue
        out.append(f"| {impl} | {r['steps']} | {r['steps_per_s']:.2f} | "
                   f"{r['compile_and_first_step_s']:.1f} | {r['losses'][0]:.4f} | "
                   f"{r['losses'][-1]:.4f} |")
    if "common_steps" in result:
        out += ["", f"- loss max |xla - pallas|: first 20 steps "
                    f"{result['max_abs_diff_first20']:.2e}, all {result['common_steps']} common "
                    f"steps {result['max_abs_diff_all']:.2e} (bf16 tolerance {TOLERANCE:g})"]
    return "\n".join(out) + "\n"


def run(out: str, dry: bool) -> dict:
    plan = DRY if dry else FULL
    runs = {}
    for impl in ("xla", "pallas"):
        config = config_lib.load(os.path.join(REPO_ROOT, plan["spec"]))
        if plan["n"]:
            config.data.max_length, config.data.batch_size = plan["n"], plan["batch"]
        max_steps = runs["xla"].get("steps") if impl == "pallas" and "xla" in runs else None
        try:
            runs[impl] = train(config, impl, interpret=dry, seconds=plan["seconds"] * (
                3 if impl == "pallas" else 1), max_steps=max_steps)
        except Exception as e:  # a failed run is a row, and the other still runs
            runs[impl] = dict(status=measure.failure(e))
        print(f"[train] {impl}: {runs[impl].get('steps_per_s', runs[impl]['status'])}",
              flush=True)
    result = dict(runs=runs, tolerance=TOLERANCE)
    if all(r.get("status") == "ok" for r in runs.values()):
        a, b = (np.asarray(runs[k]["losses"]) for k in ("xla", "pallas"))
        k = min(len(a), len(b))  # the pallas run may stop early (its own time budget)
        first = min(20, k)
        result.update(common_steps=k,
                      max_abs_diff_first20=float(np.abs(a[:first] - b[:first]).max()),
                      max_abs_diff_all=float(np.abs(a[:k] - b[:k]).max()))
    meta = dict(measure.provenance_meta(), spec=plan["spec"], dry_run=dry)
    result["meta"] = meta
    measure.write_table(out, "train", _markdown(meta, runs, result), result)
    return result
