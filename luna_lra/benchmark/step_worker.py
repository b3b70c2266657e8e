"""One side of `python -m luna_lra.benchmark step`: times Luna training steps of whichever
luna_lra is first on the import path, so the same file runs against this tree and against a
baseline checkout. The coordinator starts it with that checkout as the working directory:

    python -c "import runpy; runpy.run_path('<this file>', run_name='__main__')" SPEC_JSON

It imports only what both trees have (defaults.base_config, data.TaskInfo,
models.build_model, trainer.make_optimizer / make_steps), builds the step for each setting (a
dict of model fields set over the spec's model), then answers lines on stdin:
`run <setting> <steps>` -> one JSON line of step times; `export <setting> <path>` -> writes the
setting's initial parameters (flattened, "a/b/c" keys) and its batch ("batch:inputs", ...) to
an .npz file, for the official code to load (benchmark/official.py); `quit` ends it. The first
line it prints describes the run (commit, losses, compile times). Setting names have no spaces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def text_batch(seed: int, batch: int, n: int, vocab: int, classes: int) -> dict:
    """Random tokens with padding: example 0 is full, the others lose up to n/8 tokens."""
    rng = np.random.default_rng(seed)
    lengths = n - rng.integers(0, max(n // 8, 1), size=batch)
    lengths[0] = n
    mask = np.arange(n)[None, :] < lengths[:, None]
    inputs = np.where(mask, rng.integers(1, vocab, size=(batch, n)), 0).astype(np.int32)
    return dict(inputs=inputs, mask=mask,
                targets=rng.integers(0, classes, size=batch).astype(np.int32))


def build_step(spec: dict, fields: dict):
    """(compiled step, state, batch) for one setting: the spec's model with `fields` set over
    it; params from seed 0."""
    from flax.training import train_state

    from luna_lra.data import TaskInfo
    from luna_lra.defaults import base_config
    from luna_lra.models import build_model
    from luna_lra.trainer import make_optimizer, make_steps

    c = base_config().model
    for key, value in {**spec["model"], **fields}.items():
        c[key] = value
    task = TaskInfo(name="text", num_classes=spec["classes"], vocab_size=spec["vocab"],
                    max_length=spec["n"])
    model = build_model(c, task)
    tx, schedule = make_optimizer(base_config().optim, 1000)
    train_step, _ = make_steps(model, schedule)
    batch = jax.tree.map(jnp.asarray, text_batch(0, spec["batch"], spec["n"], spec["vocab"],
                                                 spec["classes"]))
    params = model.init(jax.random.key(0), batch["inputs"][:1, :16], batch["mask"][:1, :16])
    state = train_state.TrainState.create(apply_fn=model.apply, params=params["params"], tx=tx)
    compiled = jax.jit(train_step).lower(state, batch, jax.random.key(1)).compile()
    return compiled, state, batch


def export(path: str, params, batch) -> None:
    from flax import traverse_util

    arrays = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}
    arrays.update({f"batch:{k}": np.asarray(v) for k, v in batch.items()})
    np.savez(path, **arrays)


def commit() -> str:
    """The working directory's short commit, "-dirty" when tracked files differ from it."""
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, check=True)
    try:
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return git("rev-parse", "--short", "HEAD").stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(spec: dict) -> None:
    import luna_lra

    from luna_lra.defaults import base_config

    # 6785641 has no such field: it computes every position of the last layer
    cls_only = base_config().model.get("last_layer_cls_only", False)
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    steps, info = {}, dict(tree=luna_lra.__file__, commit=commit(), jax=jax.__version__,
                           last_layer_cls_only=cls_only,
                           huge_pages="glibc.malloc.hugetlb=1" in tunables,
                           glibc_tunables=tunables, settings={})
    for name, fields in spec["settings"].items():
        t0 = time.perf_counter()
        compiled, state, batch = build_step(spec, fields)
        compile_s = time.perf_counter() - t0
        new_state, metrics = compiled(state, batch, jax.random.key(1))  # warm-up, checked
        jax.block_until_ready(new_state)
        info["settings"][name] = dict(compile_s=compile_s, loss=float(metrics["loss"]),
                                      grad_norm=float(metrics["grad_norm"]))
        steps[name] = (compiled, state, batch)
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            return
        compiled, state, batch = steps[words[1]]
        if words[0] == "export":
            export(words[2], state.params, batch)
            print(json.dumps(dict(exported=words[2])), flush=True)
            continue
        times = []
        for _ in range(int(words[2])):
            t0 = time.perf_counter()
            # the same state every time: each step does the same work on the same numbers
            out = compiled(state, batch, jax.random.key(1))
            jax.block_until_ready(out)
            times.append(time.perf_counter() - t0)
        print(json.dumps(dict(times=times)), flush=True)


if __name__ == "__main__":
    try:  # as the trainer starts, where this tree has it (an older tree may not)
        from luna_lra import host_memory
        host_memory.restart_with_huge_pages()
    except ImportError:
        pass
    main(json.loads(sys.argv[1]))
