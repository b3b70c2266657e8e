"""`python -m luna_lra.benchmark model`: whole training steps (forward + backward + AdamW update,
luna_lra.trainer.make_steps) of the Text task's model (4 layers, dim 256, mlp 1024, 4 heads,
vocabulary 257, 2 classes, CLS pooling), softmax Transformer (XLA; cuDNN flash attention on a
GPU) vs Luna-16/128/256 (XLA; Pallas on GPU/TPU), at growing n: steps per second and peak
memory, each relative to the Transformer, with log-log slopes (model_report.py). Writes
OUT/efficiency.md, .json, .png. `python -m luna_lra.benchmark model -h` lists its options.

Each configuration runs in a fresh worker process on the CPU (`model --worker SPEC`), so its
peak RSS is its own and an allocation failure or a kill takes down only that worker; on an
accelerator all configurations run in this process and memory comes from XLA's memory analysis
of the compiled step (`--isolate subprocess` gives fresh processes and peak_bytes_in_use).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

from luna_lra import config as config_lib
from luna_lra import models, trainer
from luna_lra.benchmark import measure, model_report
from luna_lra.benchmark.measure import length_name
from luna_lra.benchmark.step_worker import text_batch
from luna_lra.data import TaskInfo
from luna_lra.defaults import base_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODEL_HELP = """Training-step efficiency of the Text task's model: Transformer vs Luna as n grows.

modes:
  --mode cpu  (default without an accelerator) batch 2, float32, n = 1K, 2K, 4K, 8K, 16K;
              Transformer, Luna-16/128/256 on the XLA path; each configuration in a fresh worker
              process; memory = the worker's peak RSS above its RSS before the first step; a
              step that needs more than the memory cap fails inside the worker: 'OOM (measured)'.
  --mode gpu  (default on GPU/TPU) batch 32, bfloat16, n = 1K, 2K, 3K, 4K, 8K, 16K, 32K;
              adds cuDNN flash attention (GPU) and the Luna Pallas kernels; all in one process,
              memory from XLA's memory analysis of each compiled step; rows not started within
              --budget-s (200 s) are listed as skipped, so one call stays under 5 minutes.
  --quick     smoke test: tiny model (1 layer, dim 32), n = 128, 256, one timed step.
outputs: OUT/efficiency.md (tables: steps/s with speed-up x, memory with fraction of the
Transformer's, log-log slopes), OUT/efficiency.json (every raw number), OUT/efficiency.png.
"""

MODEL_SIZES = {
    # The LRA efficiency setting: the Luna / LRA Text model (configs/text.py).
    "text": dict(num_layers=4, emb_dim=256, num_heads=4, mlp_dim=1024, classifier_dim=1024),
    "tiny": dict(num_layers=1, emb_dim=32, num_heads=2, mlp_dim=64, classifier_dim=64),
}
TEXT_VOCAB, TEXT_CLASSES = 257, 2  # bytes + padding id 0; binary sentiment
TEXT_CONFIG = os.path.join(REPO_ROOT, "configs", "text.py")  # whose recipes give --dropout recipe
# Rows: "<model or model variant>[-<attention_impl>]": "transformer", "luna16-pallas", or a
# model of a user's ("my_package.my_model"); the suffix sets the model's attention_impl field.
MODEL_ROWS = ("transformer", "transformer-cudnn", "luna16", "luna16-pallas", "luna128",
              "luna128-pallas", "luna256", "luna256-pallas")
IMPL_LABELS = {"xla": "XLA", "pallas": "Pallas", "cudnn": "cuDNN flash", "dot_product": "jax.nn"}
IMPL_RUNS_ON = {"cudnn": "gpu", "pallas": "accelerator"}  # where a row can run; others: any
MODEL_MODES = {
    # one accelerator call of under 5 minutes: rows not started within budget_s are "skipped"
    "gpu": dict(batch=32, lengths=(1024, 2048, 3072, 4096, 8192, 16384, 32768), steps=5,
                size="text", dtype="bfloat16", budget_s=200.0, timeout_s=240.0),
    # two CPU cores in about 10 minutes
    "cpu": dict(batch=2, lengths=(1024, 2048, 4096, 8192, 16384), steps=3, size="text",
                dtype="float32", budget_s=0.0, timeout_s=300.0),
    "quick": dict(batch=2, lengths=(128, 256), steps=1, size="tiny", dtype="float32",
                  budget_s=0.0, timeout_s=120.0),
}
MEMORY_MEASURES = {
    "rss": "peak resident set (VmHWM, reset just before the first step through "
           "/proc/self/clear_refs) minus the resident set just before the first step, in a fresh "
           "worker process: what the step allocates (activations, gradients, temporaries, the new "
           "optimiser state); the parameters, optimiser state and batch already resident are "
           "excluded (their size is state_mib in the JSON)",
    "rss_maxrss": "ru_maxrss of a fresh worker process minus its resident set just before the "
                  "first step (the high-water mark could not be reset, so it may include compile "
                  "time memory)",
    "device_peak": "device memory_stats()['peak_bytes_in_use'] of a fresh worker process: "
                   "everything on the device (parameters, optimiser state, batch, step)",
    "memory_analysis": "XLA's memory analysis of the compiled step: arguments + outputs + "
                       "temporaries - donated (aliased) bytes: parameters, optimiser state, "
                       "batch and the step's peak temporaries",
}


def _parse_length(text: str) -> int:
    text = text.strip().lower()
    return int(float(text[:-1]) * 1024) if text.endswith("k") else int(text)


def split_row(row: str) -> tuple[str, str]:
    """'luna16-pallas' -> ('luna16', 'pallas'); 'transformer' -> ('transformer', '')."""
    base, _, impl = row.rpartition("-")
    return (base, impl) if base else (row, "")


def row_section(row: str, size: str = "text", dtype: str = "float32",
                dropout: str = "zero") -> dict:
    """A config's `model` section for one benchmark row (ConfigError for an unknown one)."""
    base, impl = split_row(row)
    model, fields = models.variant(base)
    section = {**models.defaults(model.name), **fields, **MODEL_SIZES[size],
               "classifier_layers": 1, "classifier_activation": "relu", "use_cls": True,
               "pooling": "cls", "dtype": dtype,
               "last_layer_cls_only": False}  # every position of every layer, as the papers'
    if impl:
        section["attention_impl"] = impl
    rates = ("dropout_rate", "attention_dropout_rate", "activation_dropout_rate")
    section.update(dict.fromkeys(rates, 0.0))
    if dropout == "recipe":
        section.update({k: recipe_model(base)[k] for k in rates[:2]})
        if impl == "cudnn":
            section["attention_dropout_rate"] = 0.0  # the cuDNN path has no attention dropout
    models.model_config(section)  # checks it
    return section


def recipe_model(base: str) -> dict:
    """The model section configs/text.py gives a row's model: its variant there, else the
    model's default config."""
    try:
        return dict(config_lib.load(f"{TEXT_CONFIG}:{base}").model)
    except config_lib.ConfigError:
        return models.defaults(models.variant(base)[0].name)


def row_label(row: str) -> str:
    """'Luna-16 (Pallas)': the model's label and the attention implementation."""
    section = row_section(row)
    label = models.label(section)
    impl = section.get("attention_impl", "")
    return f"{label} ({IMPL_LABELS.get(impl, impl)})" if impl else label


def text_task(n: int):
    return TaskInfo(name="text", num_classes=TEXT_CLASSES, vocab_size=TEXT_VOCAB, max_length=n)


def random_text_batch(seed: int, batch: int, n: int) -> dict:
    """Random bytes with some padding: example 0 is full, the others lose up to n/8 tokens."""
    return text_batch(seed, batch, n, TEXT_VOCAB, TEXT_CLASSES)


def _init_inputs(n: int):
    """A tiny input for model.init: parameter shapes depend on the task's max_length only, and
    init runs the forward pass, which at full length would allocate the attention scores."""
    m = min(n, 16)
    return jnp.ones((1, m), jnp.int32), jnp.ones((1, m), bool)


def param_count(variant: str, n: int, size: str = "text") -> int:
    model = models.build_model(row_section(variant, size), text_task(n))
    shapes = jax.eval_shape(lambda r: model.init(r, *_init_inputs(n), train=False),
                            jax.random.key(0))
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)))


def estimate_step_bytes(variant: str, n: int, batch: int, size: str = "text",
                        dtype: str = "float32", params: int | None = None) -> int:
    """A rough estimate of what one training step allocates beyond the resident state: per layer
    the activations kept for the backward pass (linear in n) plus float32 score-sized buffers of
    the attention (b·h·n'·n' for softmax attention, b·h·n'·l for each of Luna's pack and
    unpack) and the backward pass's transient copies; gradients and the new optimiser state.
    The constants match the XLA:CPU path's measured RSS at n = 1K, 2K (batch 2: ~4 score-sized
    buffers kept per softmax layer, ~4 per pack and per unpack). A model with a proj_len field
    packs to that many rows, any other attends over all n'. Informative (shown beside an OOM,
    and --skip-estimated); by default the worker's memory cap decides."""
    s, section = MODEL_SIZES[size], row_section(variant, size)
    n1, d, h, layers, mlp = n + 1, s["emb_dim"], s["num_heads"], s["num_layers"], s["mlp_dim"]
    item = 2 if dtype == "bfloat16" else 4
    linear = layers * batch * n1 * (18 * d + 4 * mlp) * item
    if "proj_len" in section:
        scores = batch * h * n1 * min(section["proj_len"], n1) * 4  # one of pack's or unpack's
        attention = layers * 8 * scores + 4 * scores
    else:
        scores = 0 if section.get("attention_impl") == "cudnn" else batch * h * n1 * n1 * 4
        attention = layers * 4 * scores + 2 * scores
    params = param_count(variant, n, size) if params is None else params
    return int(linear + attention + 4 * params * 4)


def _tree_bytes(tree) -> int:
    return int(sum(x.nbytes for x in jax.tree.leaves(tree) if hasattr(x, "nbytes")))



# ------------------------------------------------------------------ one configuration


def _prepare(spec: dict, row: dict):
    """(compiled step, state, batch, rng) of one configuration; fills init/compile fields."""
    n, b = spec["n"], spec["batch"]
    model = models.build_model(row_section(spec["variant"], spec["size"], spec["dtype"],
                                           spec["dropout"]), text_task(n))
    tx, schedule = trainer.make_optimizer(base_config().optim, 20000)
    train_step, _ = trainer.make_steps(model, schedule)
    t0 = time.perf_counter()
    params = jax.jit(lambda r: model.init(r, *_init_inputs(n), train=False)["params"])(
        jax.random.key(spec.get("seed", 0)))
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    batch = jax.tree.map(jnp.asarray, random_text_batch(spec.get("seed", 0), b, n))
    rng = jax.random.key(1)
    jax.block_until_ready((state, batch))
    row["init_s"] = time.perf_counter() - t0
    row["params"] = int(sum(x.size for x in jax.tree.leaves(state.params)))
    row["state_mib"] = (_tree_bytes(state) + _tree_bytes(batch)) / 2**20
    row["real_tokens"] = int(np.asarray(batch["mask"]).sum())
    t0 = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=0).lower(state, batch, rng).compile()
    row["compile_s"] = time.perf_counter() - t0
    program = measure.program_bytes(compiled)
    row["program_mib"] = None if program is None else program / 2**20
    return compiled, state, batch, rng


def _start_rss_window(spec: dict):
    """Before the first step: (rss bytes, memory measure actually used, capped?). Resets the
    high-water mark and caps the address space at its size now + mem_cap_bytes."""
    gc.collect()
    measure.malloc_trim()
    rss0 = measure.proc_status_bytes("VmRSS")
    memory = "rss" if measure.reset_peak_rss() else "rss_maxrss"
    cap, vm = spec.get("mem_cap_bytes") or 0, measure.proc_status_bytes("VmSize")
    if cap and vm:
        resource.setrlimit(resource.RLIMIT_AS, (vm + cap, resource.RLIM_INFINITY))
    return rss0, memory, bool(cap and vm)


def _uncap():
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)


def _memory_fields(memory: str, rss0, row: dict) -> None:
    if memory in ("rss", "rss_maxrss"):
        peak = (measure.proc_status_bytes("VmHWM") if memory == "rss" else
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        row["rss_before_mib"], row["rss_peak_mib"] = rss0 / 2**20, peak / 2**20
        row["memory_mib"] = row["rss_peak_mib"] - row["rss_before_mib"]
    elif memory == "device_peak":
        peak = measure.device_peak()
        row["memory_mib"] = None if peak is None else peak / 2**20
    else:
        row["memory_mib"] = row["program_mib"]
    row["memory_measure"] = memory
    row["device_peak_mib"] = (measure.device_peak() or 0) / 2**20 or None


def measure_model_config(spec: dict) -> dict:
    """Build, initialise, compile and time the training step of one (variant, n) here.

    spec: variant, n, batch, size, dtype, dropout, steps, warmup, memory ('rss' | 'device_peak'
    | 'memory_analysis'), mem_cap_bytes (rss only: RLIMIT_AS headroom for the steps; 0 = none).
    An out-of-memory or any other failure gives a row with its status, never an exception.
    """
    row = dict(model=spec["variant"], n=spec["n"], batch=spec["batch"], status="ok",
               memory_measure=spec["memory"])
    capped = False
    try:
        compiled, state, batch, rng = _prepare(spec, row)
        memory, rss0 = spec["memory"], None
        if memory == "rss":
            rss0, memory, capped = _start_rss_window(spec)
        times = []
        for i in range(spec["warmup"] + spec["steps"]):
            t0 = time.perf_counter()
            state, metrics = compiled(state, batch, rng)
            jax.block_until_ready((state, metrics))
            if i < spec["warmup"]:
                row["warmup_s"] = time.perf_counter() - t0
            else:
                times.append(time.perf_counter() - t0)
        if capped:
            _uncap()
        row.update(step_times_s=times, step_s=statistics.median(times),
                   steps_per_s=1.0 / statistics.median(times), loss=float(metrics["loss"]))
        _memory_fields(memory, rss0, row)
        del compiled, state
    except Exception as e:  # OOM and anything else: a row, never a crash
        if capped:
            _uncap()
        row["status"] = measure.failure(e, capped)
        row["error"] = f"{type(e).__name__}: {str(e)[:2000]}"
    gc.collect()
    return row


def _model_worker(spec_json: str):
    """`model --worker SPEC`: one configuration, its row written as JSON to spec['result_path']."""
    spec = json.loads(spec_json)
    row = measure_model_config(spec)
    with open(spec["result_path"], "w") as f:
        json.dump(row, f)


def _died_row(base: dict, proc) -> dict:
    tail = (proc.stderr or "").strip().splitlines()[-3:]
    row = dict(base, returncode=proc.returncode, error=" | ".join(tail)[:2000])
    if proc.returncode == -9:
        row["status"] = "OOM (measured: worker killed by SIGKILL, the kernel's OOM killer)"
    elif measure.OOM_TEXT.search(proc.stderr or "") or measure.CAPPED_OOM_TEXT.search(
            proc.stderr or ""):
        row["status"] = f"OOM (measured: worker died, rc {proc.returncode}, allocation failed)"
    else:
        row["status"] = f"error: worker died (rc {proc.returncode}): {' | '.join(tail)[:200]}"
    return row


def run_model_isolated(spec: dict, timeout_s: float) -> dict:
    """measure_model_config(spec) in a fresh `python -m luna_lra.benchmark model --worker`
    process (the installed package); a worker that dies (the kernel's OOM killer, an abort on a
    failed allocation) or overruns timeout_s gives a row, not a crash."""
    fd, path = tempfile.mkstemp(prefix="luna_bench_", suffix=".json")
    os.close(fd)
    spec = dict(spec, result_path=path)
    cmd = [sys.executable, "-m", "luna_lra.benchmark", "model", "--worker", json.dumps(spec)]
    base = dict(model=spec["variant"], n=spec["n"], batch=spec["batch"],
                memory_measure=spec["memory"])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              cwd=REPO_ROOT)  # the same luna_lra as this process's
        with open(path) as f:
            text = f.read()
        return json.loads(text) if text.strip() else _died_row(base, proc)
    except subprocess.TimeoutExpired:
        return dict(base, status=f"timeout (> {timeout_s:g} s; --config-timeout-s)")
    finally:
        os.remove(path)


# ------------------------------------------------------------------ the whole table


def make_plan(args) -> dict:
    """What to run, from the command line and the backend."""
    backend = jax.default_backend()
    accelerator = backend != "cpu"
    mode = "quick" if args.quick else (args.mode or ("gpu" if accelerator else "cpu"))
    cfg = MODEL_MODES[mode]
    where = {"any": True, "gpu": backend in ("gpu", "cuda"),
             "accelerator": backend in ("gpu", "cuda", "tpu")}
    runs_here = lambda v: where[IMPL_RUNS_ON.get(split_row(v)[1], "any")]  # noqa: E731
    if args.models:
        variants = [v.strip() for v in args.models.split(",") if v.strip()]
        for v in variants:
            try:
                row_section(v)
            except config_lib.ConfigError as e:
                raise SystemExit(f"--models {v}: {e} (rows: e.g. {', '.join(MODEL_ROWS)}, or "
                                 "a model's import path)") from None
    else:
        variants = [v for v in MODEL_ROWS if runs_here(v)]
        if mode == "quick":
            variants = ["transformer", "luna16"]
    not_run = [row_label(v) for v in MODEL_ROWS if v not in variants and not runs_here(v)]
    if model_report.MODEL_BASELINE not in variants:
        variants.insert(0, model_report.MODEL_BASELINE)
    isolate = args.isolate if args.isolate != "auto" else (
        "inprocess" if accelerator else "subprocess")
    memory = ("memory_analysis" if isolate == "inprocess" else
              "rss" if not accelerator else "device_peak")
    available = measure.mem_available_bytes()
    mem_cap = 0 if memory != "rss" else (
        int(args.mem_limit_gb * 2**30) if args.mem_limit_gb else
        int(0.85 * available) if available else 0)
    return dict(
        mode=mode, size=cfg["size"], variants=variants, isolate=isolate, memory=memory,
        mem_cap=mem_cap, batch=args.batch or cfg["batch"],
        lengths=tuple(_parse_length(x) for x in args.lengths.split(",")) if args.lengths
        else cfg["lengths"], steps=args.steps or cfg["steps"], dtype=args.dtype or cfg["dtype"],
        budget_s=cfg["budget_s"] if args.budget_s is None else args.budget_s,
        timeout_s=args.config_timeout_s or cfg["timeout_s"], dropout=args.dropout,
        skip_estimated=args.skip_estimated, mem_limit_gb=args.mem_limit_gb,
        not_run=", ".join(not_run) + (" (no GPU/TPU)" if not accelerator else "")
        if not_run else "")


def _one_row(plan: dict, v: str, n: int) -> dict:
    try:
        est = estimate_step_bytes(v, n, plan["batch"], plan["size"], plan["dtype"])
    except Exception:  # an estimate is never worth a crash
        est = None
    spec = dict(variant=v, n=n, batch=plan["batch"], size=plan["size"], dtype=plan["dtype"],
                dropout=plan["dropout"], steps=plan["steps"], warmup=1, memory=plan["memory"],
                mem_cap_bytes=plan["mem_cap"], seed=0)
    cap = plan["mem_cap"]
    if plan["skip_estimated"] and cap and est and est > cap:
        row = dict(model=v, n=n, batch=plan["batch"],
                   status=f"skipped: estimated {est / 1e9:.3g} GB > limit {cap / 1e9:.3g} GB")
    else:
        t0 = time.perf_counter()
        row = (run_model_isolated(spec, plan["timeout_s"]) if plan["isolate"] == "subprocess"
               else measure_model_config(spec))
        row["wall_s"] = time.perf_counter() - t0
    row["estimate_gib"] = None if est is None else est / 2**30
    row["label"] = row_label(v)
    return row


def run_rows(plan: dict, start: float) -> list:
    rows, oom_at, budget = [], {}, plan["budget_s"]
    for n in plan["lengths"]:
        for v in plan["variants"]:
            base = dict(model=v, n=n, batch=plan["batch"])
            if v in oom_at and plan["isolate"] == "inprocess":  # (a CPU worker fails fast)
                rows.append(dict(base, status=f"skipped: OOM at {length_name(oom_at[v])}"))
                continue
            if budget and time.perf_counter() - start > budget:
                rows.append(dict(base, status=f"skipped: time budget (--budget-s {budget:g})"))
                continue
            row = _one_row(plan, v, n)
            rows.append(row)
            if row["status"].startswith("OOM"):
                oom_at[v] = n
            print(f"[model] {v:16s} n={n:6d}: "
                  + (f"{1e3 * row['step_s']:9.1f} ms/step, "
                     f"{measure.fmt(row['memory_mib'], '.1f')} MiB, compile "
                     f"{row['compile_s']:.1f} s" if row["status"] == "ok" else row["status"])
                  + f"  [{time.perf_counter() - start:.0f} s]", flush=True)
            if plan["isolate"] == "inprocess":
                jax.clear_caches()
    return rows


def describe(plan: dict) -> dict:
    """The table's prose about dropout, isolation and out-of-memory handling."""
    cap, inprocess = plan["mem_cap"], plan["isolate"] == "inprocess"
    capped = (f" with RLIMIT_AS = its virtual size before the first step + {cap / 2**30:.1f} "
              "GiB (" + ("--mem-limit-gb" if plan["mem_limit_gb"] else "85% of MemAvailable "
                         "at the start") + "), so a step that needs more fails its allocation "
              "inside the worker (address space reserved but unused before the step adds a "
              "little to this cap)") if cap else ""
    return dict(
        dropout_desc="zero (dropout, attention and activation dropout all 0)"
        if plan["dropout"] == "zero" else
        "each model's dropout and attention dropout rates in configs/text.py (a model without "
        "a recipe there: its defaults); attention dropout 0 on the cuDNN path, which has none",
        isolation_desc="all configurations in this process (XLA's memory analysis per "
        "compiled step)" if inprocess else
        "a fresh Python worker process per configuration (`model --worker`)" + capped,
        oom_desc="'OOM (measured)': the XLA resource-exhausted error (or a failed allocation "
        "under the cap, or the worker killed by the kernel) caught and recorded"
        + ("; once a model is out of memory its longer lengths are 'skipped: OOM at <n>'"
           if inprocess else "; every length is tried")
        + ("; with --skip-estimated, a configuration whose estimate exceeds the cap is "
           "'skipped: estimated N GB > limit' without running" if cap else ""))


def run_model(args):
    if args.worker:
        return _model_worker(args.worker)
    start = time.perf_counter()
    if args.isolate == "subprocess":  # this process only coordinates: leave the device alone
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    # "until memory runs out": let XLA's GPU allocator have 95% of the card, not 75%
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
    plan, load_start = make_plan(args), measure.load_average()
    s = MODEL_SIZES[plan["size"]]
    print(f"[model] {plan['mode']} mode on {measure.machine()}; jax {jax.__version__}; models "
          f"{plan['variants']}; lengths {list(plan['lengths'])}; batch {plan['batch']}; "
          f"{plan['dtype']}; {plan['isolate']}; memory {plan['memory']}", flush=True)
    rows = run_rows(plan, start)
    meta = dict(
        measure.provenance_meta(), **describe(plan), mode=plan["mode"],
        models=plan["variants"], labels={v: row_label(v) for v in plan["variants"]},
        lengths=list(plan["lengths"]), batch=plan["batch"], dtype=plan["dtype"],
        steps=plan["steps"], warmup=1, size=plan["size"], model_sizes=s, vocab=TEXT_VOCAB,
        classes=TEXT_CLASSES, dropout=plan["dropout"], memory=plan["memory"],
        memory_desc=MEMORY_MEASURES[plan["memory"]], isolation=plan["isolate"],
        mem_cap_bytes=plan["mem_cap"] or None, budget_s=plan["budget_s"] or None,
        not_run=plan["not_run"], load_avg_start=load_start,
        load_avg_end=measure.load_average(), wall_s=time.perf_counter() - start,
        model_desc=(f"{'the LRA Text model' if plan['size'] == 'text' else 'a tiny model'}: "
                    f"{s['num_layers']} layer{'s' * (s['num_layers'] != 1)}, dim "
                    f"{s['emb_dim']}, mlp {s['mlp_dim']}, {s['num_heads']} heads, vocabulary "
                    f"{TEXT_VOCAB}, {TEXT_CLASSES} classes, CLS pooling, classifier "
                    f"{s['classifier_dim']}"),
        xla_env={k: os.environ.get(k) for k in ("XLA_PYTHON_CLIENT_MEM_FRACTION",
                                                 "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_FLAGS")})
    return model_report.write(args.out, meta, rows)


def add_parser(sub):
    m = sub.add_parser(
        "model", help="training steps of Transformer vs Luna as n grows: speed, memory, slopes",
        description=MODEL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = m.add_argument
    add("--mode", choices=("cpu", "gpu"), default=None,
        help="cpu: batch 2, n = 1K..16K, fp32, a worker process per configuration (the default "
             "without an accelerator); gpu: batch 32, n = 1K..32K, bf16, Pallas and cuDNN rows, "
             "one call under 5 minutes (the default on a GPU/TPU)")
    add("--quick", action="store_true",
        help="smoke test: tiny model, n = 128/256, 1 timed step (CPU is fine)")
    add("--out", default="results",
        help="output directory for efficiency.md/.json/.png (default: results/)")
    add("--models", default="", help=f"comma-separated rows: some of {','.join(MODEL_ROWS)}, "
        "or any model's name or import path, with -<attention_impl> to pick its implementation "
        "(the Transformer (XLA) baseline is always added)")
    add("--lengths", default="", help="comma-separated n, e.g. 1K,2K,4K or 1024,2048")
    add("--batch", type=int, default=0, help="batch size (default: the mode's)")
    add("--steps", type=int, default=0,
        help="timed steps per configuration, after 1 warm-up (default: the mode's)")
    add("--dtype", choices=("float32", "bfloat16"), default=None,
        help="compute dtype (default: float32 on CPU, bfloat16 on GPU/TPU)")
    add("--dropout", choices=("zero", "recipe"), default="zero",
        help="zero (default): no dropout; recipe: configs/text.py's rates")
    add("--budget-s", type=float, default=None,
        help="start no configuration after this many seconds; the rest are listed as skipped "
             "(default: 200 in gpu mode, none otherwise)")
    add("--isolate", choices=("auto", "subprocess", "inprocess"), default="auto",
        help="auto (default): a worker process per configuration on CPU (memory: RSS), all in "
             "this process on GPU/TPU (memory: XLA's memory analysis); subprocess on GPU/TPU "
             "measures peak_bytes_in_use per worker")
    add("--mem-limit-gb", type=float, default=0.0,
        help="CPU workers: memory a step may allocate (RLIMIT_AS headroom), default 85%% of "
             "MemAvailable at the start")
    add("--skip-estimated", action="store_true",
        help="CPU: don't run configurations whose estimated need exceeds the limit; record "
             "them as 'skipped: estimated N GB > limit' (faster)")
    add("--config-timeout-s", type=float, default=0.0,
        help="CPU workers: kill a configuration after this long (default: the mode's)")
    add("--worker", default="", help=argparse.SUPPRESS)
    m.set_defaults(func=run_model)
