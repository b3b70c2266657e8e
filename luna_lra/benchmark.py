"""Benchmarks. `python -m luna_lra.benchmark kernels [--quick] [--out DIR]`,
`python -m luna_lra.benchmark model [--mode cpu|gpu] [--quick] [--out DIR]`.

kernels: Luna's pack and unpack attention cores as the Pallas kernel, the XLA reference and
jax.nn.dot_product_attention (cuDNN where it works, else its XLA path), at batch 32, 8 heads,
head_dim 64, bfloat16, n in 1K..16K, l in {16, 128, 256}: forward and forward+backward time
(median after a warm-up; compile time apart), memory, achieved bandwidth and FLOP rate as shares
of this card's copy bandwidth and bf16 matmul rate measured in the same run, and a kernel vs
reference correctness check. Writes results/kernels_<device-slug>.md and .json.
--quick: tiny sizes (the kernels run in interpret mode on a CPU), a smoke test in under a minute.

model: whole training steps of the Text task's model (4 layers, dim 256, mlp 1024, 4 heads,
vocabulary 257, 2 classes, CLS pooling), softmax Transformer (XLA; cuDNN flash attention on a
GPU) vs Luna-16/128/256 (XLA; Pallas on GPU/TPU), at growing n: steps per second and peak memory,
each relative to the Transformer, with log-log slopes. Writes results/efficiency.md, .json, .png.
`python -m luna_lra.benchmark model -h` lists its modes and options.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from luna_lra import ops, provenance

FULL = dict(batch=32, heads=8, head_dim=64, ns=(1024, 2048, 4096, 8192, 16384), ls=(16, 128, 256),
            check=dict(batch=4, n=1024, l=128), copy_mib=2048, matmul=8192, runs=5)
QUICK = dict(batch=2, heads=2, head_dim=16, ns=(128,), ls=(16,), check=dict(batch=2, n=64, l=16),
             copy_mib=16, matmul=256, runs=2)
IMPLS = ("pallas", "xla", "jax.nn")


# ------------------------------------------------------------------------------ measuring

def _timed(fn, args, runs):
    """(compile seconds, median run seconds, compiled) of jit(fn) on args."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times), compiled


def _program_bytes(compiled):
    """XLA's own footprint of one program: arguments + outputs + temporaries (None if unknown)."""
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                   - m.alias_size_in_bytes)
    except Exception:  # backend without memory analysis
        return None


def _device_peak():
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def _failure(e: Exception) -> str:
    text = str(e)
    if re.search(r"RESOURCE_EXHAUSTED|out of memory|OOM", text, re.IGNORECASE):
        return "OOM"
    first = text.strip().splitlines()[0][:160] if text.strip() else ""
    return f"error: {type(e).__name__}: {first}"


def measure_peaks(cfg):
    """Copy bandwidth (bytes/s; x + 1 reads and writes each byte once) and bf16 matmul FLOP/s."""
    x = jnp.ones((cfg["copy_mib"] * 2**20 // 2,), jnp.bfloat16)
    _, t, _ = _timed(lambda x: x + 1, (x,), max(cfg["runs"], 5))
    bandwidth = 2 * x.nbytes / t
    del x
    m = cfg["matmul"]
    a = jnp.ones((m, m), jnp.bfloat16)
    _, t, _ = _timed(lambda a, b: a @ b, (a, a), max(cfg["runs"], 5))
    return bandwidth, 2 * m**3 / t


# ------------------------------------------------------------------------- implementations

def _attention_fn(impl, kind, interpret):
    """f(q, k, v, mask) of the Pallas kernel or the XLA reference through luna_lra.ops."""
    op = ops.pack_attention if kind == "pack" else ops.unpack_attention
    kw = {"interpret": interpret} if impl == "pallas" else {}
    return lambda q, k, v, m: op(q, k, v, m, impl=impl, **kw)


def _nn_attention(implementation):
    """jax.nn.dot_product_attention with the key mask given as lengths (its padding API)."""
    return lambda q, k, v, m: jax.nn.dot_product_attention(
        q, k, v, key_value_seq_lengths=jnp.sum(m, axis=1, dtype=jnp.int32),
        implementation=implementation)


def _fwd_bwd(fn):
    def f(q, k, v, m, g):
        out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, m), q, k, v)
        return out, vjp(g)
    return f


def _inputs(key, b, lq, lk, h, d, dtype):
    kq, kk, kv, kg = jax.random.split(key, 4)
    q = jax.random.normal(kq, (b, lq, h, d), dtype)
    k = jax.random.normal(kk, (b, lk, h, d), dtype)
    v = jax.random.normal(kv, (b, lk, h, d), dtype)
    g = jax.random.normal(kg, (b, lq, h, d), dtype)
    return q, k, v, jnp.ones((b, lk), bool), g


def bench_row(cfg, kind, n, l, impl, interpret, peaks):
    b, h, d = cfg["batch"], cfg["heads"], cfg["head_dim"]
    lq, lk = (l, n) if kind == "pack" else (n, l)
    row = dict(op=kind, n=n, l=l, impl=impl, status="ok")
    try:
        q, k, v, m, g = _inputs(jax.random.key(n + l), b, lq, lk, h, d, jnp.bfloat16)
        if impl != "jax.nn":
            fn, row["impl_detail"] = _attention_fn(impl, kind, interpret), impl
        else:
            fn, row["impl_detail"] = _nn_attention("cudnn"), "jax.nn cudnn"
            try:
                jax.jit(fn).lower(q, k, v, m).compile()
            except Exception as e:  # no cuDNN here (CPU, old card, unsupported shape)
                fn, row["impl_detail"] = _nn_attention("xla"), "jax.nn xla (no cudnn)"
                row["cudnn_error"] = _failure(e)
        qkv, o = q.nbytes + k.nbytes + v.nbytes, q.nbytes
        flops = 4 * b * h * lq * lk * d  # q k^T and p v, 2 flops per multiply-add
        for phase, f, args, nbytes, nflops in (
                ("fwd", fn, (q, k, v, m), qkv + o, flops),
                # backward reads q, k, v, o, dO and writes dq, dk, dv; 5 matmuls (recompute too)
                ("fwdbwd", _fwd_bwd(fn), (q, k, v, m, g), 3 * qkv + 3 * o, 3.5 * flops)):
            compile_s, t, compiled = _timed(f, args, cfg["runs"])
            row[f"{phase}_ms"] = 1e3 * t
            row[f"{phase}_compile_s"] = compile_s
            row[f"{phase}_gbps"] = nbytes / t / 1e9
            row[f"{phase}_tflops"] = nflops / t / 1e12
            row[f"{phase}_bw_share"] = nbytes / t / peaks[0]
            row[f"{phase}_flop_share"] = nflops / t / peaks[1]
            row[f"{phase}_program_mib"] = (_program_bytes(compiled) or 0) / 2**20 or None
            del compiled
        row["device_peak_mib"] = (_device_peak() or 0) / 2**20 or None
    except Exception as e:
        row["status"] = _failure(e)
    gc.collect()
    return row


def check_row(cfg, kind, dtype, interpret):
    """Max relative error (max|a-b| / max|b|) of the kernel's out, dq, dk, dv vs the reference
    (float32 math at highest matmul precision), ragged mask with an all-padded example, dropout."""
    c = cfg["check"]
    lq, lk = (c["l"], c["n"]) if kind == "pack" else (c["n"], c["l"])
    q, k, v, _, g = _inputs(jax.random.key(7), c["batch"], lq, lk, cfg["heads"], cfg["head_dim"],
                            dtype)
    lengths = jnp.linspace(lk, 0, c["batch"]).astype(jnp.int32)  # full ... all-padded
    m = jnp.arange(lk)[None, :] < lengths[:, None]
    op = ops.pack_attention if kind == "pack" else ops.unpack_attention
    kw = dict(dropout_rate=0.1, dropout_seed=jnp.uint32(1234))
    row = dict(op=kind, dtype=jnp.dtype(dtype).name, shape=f"b={c['batch']} lq={lq} lk={lk}")
    try:
        # Float32 at "highest" (IEEE dots in the kernel; its default on a GPU is TF32, as XLA's)
        with jax.default_matmul_precision("highest" if dtype == jnp.float32 else None):
            got = jax.jit(_fwd_bwd(lambda *a: op(*a, impl="pallas", interpret=interpret,
                                                 **kw)))(q, k, v, m, g)
        up = lambda x: x.astype(jnp.float32)
        with jax.default_matmul_precision("highest"):
            want = jax.jit(_fwd_bwd(lambda *a: op(*a, impl="xla", **kw)))(
                up(q), up(k), up(v), m, up(g))
        got, want = jax.tree.leaves(got), jax.tree.leaves(want)
        for name, a, w in zip(("out", "dq", "dk", "dv"), got, want):
            a, w = np.asarray(a, np.float64), np.asarray(w, np.float64)
            row[f"{name}_max_rel"] = float(np.max(np.abs(a - w)) / max(np.max(np.abs(w)), 1e-30))
        row["status"] = "ok"
    except Exception as e:
        row["status"] = _failure(e)
    return row


# ------------------------------------------------------------------------------ reporting

def _fmt(x, spec=".2f"):
    return "—" if x is None else format(x, spec)


def to_markdown(meta, rows, checks):
    peak_bw, peak_fl = meta["peak_copy_gbps"], meta["peak_bf16_tflops"]
    out = [f"# Luna attention kernels on {meta['device_kind']}", "",
           f"- jax {meta['jax_version']}, backend {meta['backend']}, commit {meta['commit']}",
           f"- command: `{meta['command']}`",
           f"- shapes: batch {meta['batch']}, heads {meta['heads']}, head_dim {meta['head_dim']}, "
           f"bfloat16, no padding, no dropout; pack: q = l rows, k/v = n rows; unpack: the reverse",
           f"- measured peaks: copy {peak_bw:.1f} GB/s, bf16 matmul {peak_fl:.2f} TFLOP/s",
           f"- pallas kernel: {meta['pallas_impl']}"
           + (" (interpret mode: timings mean nothing)" if meta["interpret"] else ""),
           "- times: median of the runs after one warm-up; compile time apart. GB/s counts q, k, "
           "v, o (+ dO, dq, dk, dv) once; FLOPs 4·b·h·lq·lk·d forward, 3.5x that forward+backward",
           "- memory: `program MiB` is XLA's memory analysis of the compiled forward+backward "
           "(arguments + outputs + temporaries); `device peak MiB` is memory_stats()"
           "['peak_bytes_in_use'], a high-water mark since the process started"
           + ("" if meta["device_peak_available"] else " (unavailable on this backend)"), "",
           "| op | n | l | impl | fwd ms | f+b ms | compile s f / f+b | fwd GB/s (% peak) | "
           "fwd TFLOP/s (% peak) | f+b GB/s (% peak) | f+b TFLOP/s (% peak) | program MiB | "
           "device peak MiB | status |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        g = r.get
        pct = lambda ph, unit, share: (f"{g(ph + unit):.1f} ({100 * g(ph + share):.0f}%)"
                                       if g(ph + unit) is not None else "—")
        out.append(
            f"| {r['op']} | {r['n']} | {r['l']} | {r.get('impl_detail', r['impl'])} | "
            f"{_fmt(g('fwd_ms'), '.3f')} | {_fmt(g('fwdbwd_ms'), '.3f')} | "
            f"{_fmt(g('fwd_compile_s'), '.1f')} / {_fmt(g('fwdbwd_compile_s'), '.1f')} | "
            f"{pct('fwd', '_gbps', '_bw_share')} | {pct('fwd', '_tflops', '_flop_share')} | "
            f"{pct('fwdbwd', '_gbps', '_bw_share')} | {pct('fwdbwd', '_tflops', '_flop_share')} | "
            f"{_fmt(g('fwdbwd_program_mib'), '.0f')} | {_fmt(g('device_peak_mib'), '.0f')} | "
            f"{r['status']} |")
    out += ["", "## Bars (issue: forward+backward at n >= 4K, l = 256)", "",
            "Pallas vs the XLA reference: speed-up (XLA ms / Pallas ms) at least 2, program "
            "memory at most half, and time within 3x of the larger of the bandwidth and FLOP "
            "floors (bytes / measured copy bandwidth, FLOPs / measured bf16 matmul rate).", "",
            "| op | n | speed-up | memory ratio | time / floor | verdict |",
            "|---|---|---|---|---|---|"]
    for b in kernel_bars(rows):
        out.append(f"| {b['op']} | {b['n']} | {_fmt(b['speedup'])} | {_fmt(b['memory_ratio'])} | "
                   f"{_fmt(b['time_over_floor'])} | {b['verdict']} |")
    out += ["", "## Correctness: Pallas kernel vs the XLA reference",
            "", "max |kernel − reference| / max |reference|, ragged key mask with an all-padded "
            "example, dropout 0.1; reference in float32 at highest matmul precision, float32 "
            "kernels too (IEEE dots; their default on a GPU is TF32)", "",
            "| op | dtype | shape | out | dq | dk | dv | status |",
            "|---|---|---|---|---|---|---|---|"]
    for c in checks:
        out.append(f"| {c['op']} | {c['dtype']} | {c['shape']} | " + " | ".join(
            _fmt(c.get(f"{x}_max_rel"), ".1e") for x in ("out", "dq", "dk", "dv"))
            + f" | {c['status']} |")
    return "\n".join(out) + "\n"


def kernel_bars(rows, min_n=4096, l=256):
    """The issue's bars for each (op, n >= min_n) at this l, from the forward+backward rows."""
    find = lambda op, n, impl: next((r for r in rows if (r["op"], r["n"], r["l"], r["impl"])
                                     == (op, n, l, impl) and r["status"] == "ok"), None)
    bars = []
    for op in ("pack", "unpack"):
        for n in sorted({r["n"] for r in rows if r["n"] >= min_n and r["l"] == l}):
            pal, ref = find(op, n, "pallas"), find(op, n, "xla")
            bar = dict(op=op, n=n, speedup=None, memory_ratio=None, time_over_floor=None)
            if pal is None or ref is None:
                bars.append(dict(bar, verdict="not measured"))
                continue
            bar["speedup"] = ref["fwdbwd_ms"] / pal["fwdbwd_ms"]
            if pal.get("fwdbwd_program_mib") and ref.get("fwdbwd_program_mib"):
                bar["memory_ratio"] = pal["fwdbwd_program_mib"] / ref["fwdbwd_program_mib"]
            # share = floor / time for each floor, so time / (larger floor) = 1 / larger share
            bar["time_over_floor"] = 1.0 / max(pal["fwdbwd_bw_share"], pal["fwdbwd_flop_share"])
            failed = [name for name, ok in (
                ("speed-up < 2", bar["speedup"] >= 2.0),
                ("memory > 1/2", bar["memory_ratio"] is not None and bar["memory_ratio"] <= 0.5),
                ("time > 3x floor", bar["time_over_floor"] <= 3.0)) if not ok]
            bars.append(dict(bar, verdict="pass" if not failed else "FAIL: " + ", ".join(failed)))
    return bars


def run_kernels(args):
    cfg = QUICK if args.quick else FULL
    start = time.perf_counter()
    backend = jax.default_backend()
    interpret = backend == "cpu"  # Pallas kernels only run interpreted on a CPU
    device_kind = jax.devices()[0].device_kind
    slug = re.sub(r"[^a-z0-9]+", "-", device_kind.lower()).strip("-") or "unknown"
    print(f"[kernels] {device_kind}, jax {jax.__version__}, backend {backend}", flush=True)
    peaks = measure_peaks(cfg)
    print(f"[kernels] peaks: copy {peaks[0] / 1e9:.1f} GB/s, bf16 matmul {peaks[1] / 1e12:.2f} "
          "TFLOP/s", flush=True)
    checks = [check_row(cfg, kind, dtype, interpret)
              for kind in ("pack", "unpack") for dtype in (jnp.bfloat16, jnp.float32)]
    for c in checks:
        print(f"[kernels] check {c}", flush=True)
    rows = []
    for n in cfg["ns"]:
        for l in cfg["ls"]:
            for kind in ("pack", "unpack"):
                for impl in IMPLS:
                    if time.perf_counter() - start > args.budget_s:
                        rows.append(dict(op=kind, n=n, l=l, impl=impl,
                                         status=f"skipped (--budget-s {args.budget_s:g})"))
                        continue
                    rows.append(bench_row(cfg, kind, n, l, impl, interpret, peaks))
                    r = rows[-1]
                    print(f"[kernels] {kind} n={n} l={l} {r.get('impl_detail', impl)}: "
                          f"fwd {_fmt(r.get('fwd_ms'), '.3f')} ms, "
                          f"f+b {_fmt(r.get('fwdbwd_ms'), '.3f')} ms, {r['status']}", flush=True)
    meta = dict(device_kind=device_kind, backend=backend, jax_version=jax.__version__,
                commit=provenance.git_commit(),
                command="python -m luna_lra.benchmark " + " ".join(sys.argv[1:]),
                batch=cfg["batch"], heads=cfg["heads"], head_dim=cfg["head_dim"],
                peak_copy_gbps=peaks[0] / 1e9, peak_bf16_tflops=peaks[1] / 1e12,
                pallas_impl=ops.resolve_impl("pallas", interpret=interpret), interpret=interpret,
                device_peak_available=_device_peak() is not None,
                wall_s=time.perf_counter() - start)
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"kernels_{slug}")
    with open(base + ".md", "w") as f:
        f.write(to_markdown(meta, rows, checks))
    with open(base + ".json", "w") as f:
        json.dump(dict(meta=meta, rows=rows, checks=checks, bars=kernel_bars(rows)), f, indent=2)
    print(f"[kernels] wrote {base}.md and {base}.json in {meta['wall_s']:.0f} s", flush=True)


# ======================================================================= model: training steps
#
# `python -m luna_lra.benchmark model`: whole training steps (forward + backward + AdamW update,
# luna_lra.trainer.make_steps) of the Text task's model, Transformer vs Luna, as n grows.
# Each configuration runs in a fresh worker process on the CPU (`model --worker SPEC`), so its
# peak RSS is its own and an allocation failure or a kill takes down only that worker; on an
# accelerator all configurations run in this process and memory comes from XLA's memory analysis
# of the compiled step (`--isolate subprocess` gives fresh processes and peak_bytes_in_use).

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
# variant -> (label, model.name, proj_len, model.attention_impl, where it runs)
MODEL_VARIANTS = {
    "transformer": ("Transformer (XLA)", "transformer", 0, "xla", "any"),
    "transformer-cudnn": ("Transformer (cuDNN flash)", "transformer", 0, "cudnn", "gpu"),
    "luna16": ("Luna-16 (XLA)", "luna", 16, "xla", "any"),
    "luna16-pallas": ("Luna-16 (Pallas)", "luna", 16, "pallas", "accelerator"),
    "luna128": ("Luna-128 (XLA)", "luna", 128, "xla", "any"),
    "luna128-pallas": ("Luna-128 (Pallas)", "luna", 128, "pallas", "accelerator"),
    "luna256": ("Luna-256 (XLA)", "luna", 256, "xla", "any"),
    "luna256-pallas": ("Luna-256 (Pallas)", "luna", 256, "pallas", "accelerator"),
}
MODEL_BASELINE = "transformer"
# configs/text.py: (dropout_rate, attention_dropout_rate) of each recipe
RECIPE_DROPOUT = {"luna": (0.3, 0.3), "transformer": (0.1, 0.1)}
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


def _length_name(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def model_config(variant: str, size: str = "text", dtype: str = "float32",
                 dropout: str = "zero"):
    """A plain model config (luna_lra.defaults.base_config().model) for one benchmark row."""
    from luna_lra.defaults import base_config

    _, name, proj_len, impl, _ = MODEL_VARIANTS[variant]
    c = base_config().model
    c.name = name
    for key, value in MODEL_SIZES[size].items():
        setattr(c, key, value)
    c.classifier_layers, c.classifier_activation = 1, "relu"
    c.use_cls, c.pooling = True, "cls"
    if proj_len:
        c.proj_len = proj_len
    c.attention_impl, c.dtype = impl, dtype
    rate, attention_rate = RECIPE_DROPOUT[name] if dropout == "recipe" else (0.0, 0.0)
    if impl == "cudnn":
        attention_rate = 0.0  # the cuDNN path has no attention dropout
    c.dropout_rate, c.attention_dropout_rate, c.activation_dropout_rate = rate, attention_rate, 0.0
    return c


def text_task(n: int):
    from luna_lra.data import TaskInfo

    return TaskInfo(name="text", num_classes=TEXT_CLASSES, vocab_size=TEXT_VOCAB, max_length=n)


def random_text_batch(seed: int, batch: int, n: int) -> dict:
    """Random bytes with some padding: example 0 is full, the others lose up to n/8 tokens."""
    rng = np.random.default_rng(seed)
    lengths = n - rng.integers(0, max(n // 8, 1), size=batch)
    lengths[0] = n
    mask = np.arange(n)[None, :] < lengths[:, None]
    inputs = np.where(mask, rng.integers(1, TEXT_VOCAB, size=(batch, n)), 0).astype(np.int32)
    return dict(inputs=inputs, mask=mask,
                targets=rng.integers(0, TEXT_CLASSES, size=batch).astype(np.int32))


def _init_inputs(n: int):
    """A tiny input for model.init: parameter shapes depend on the task's max_length only, and
    init runs the forward pass, which at full length would allocate the attention scores."""
    m = min(n, 16)
    return jnp.ones((1, m), jnp.int32), jnp.ones((1, m), bool)


def param_count(variant: str, n: int, size: str = "text") -> int:
    from luna_lra.models import build_model

    model = build_model(model_config(variant, size), text_task(n))
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
    buffers kept per softmax layer, ~4 per pack and per unpack). Informative (shown beside an
    OOM, and --skip-estimated); by default the worker's memory cap decides."""
    s = MODEL_SIZES[size]
    _, name, proj_len, impl, _ = MODEL_VARIANTS[variant]
    n1, d, h, layers, mlp = n + 1, s["emb_dim"], s["num_heads"], s["num_layers"], s["mlp_dim"]
    item = 2 if dtype == "bfloat16" else 4
    linear = layers * batch * n1 * (18 * d + 4 * mlp) * item
    if name == "transformer":
        scores = 0 if impl == "cudnn" else batch * h * n1 * n1 * 4
        attention = layers * 4 * scores + 2 * scores
    else:
        scores = batch * h * n1 * min(proj_len, n1) * 4  # one of pack's or unpack's
        attention = layers * 8 * scores + 4 * scores
    params = param_count(variant, n, size) if params is None else params
    return int(linear + attention + 4 * params * 4)


# ------------------------------------------------------------------ one configuration


def _proc_status_bytes(key: str):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim():
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _tree_bytes(tree) -> int:
    return int(sum(x.nbytes for x in jax.tree.leaves(tree) if hasattr(x, "nbytes")))


_OOM_TEXT = re.compile(r"RESOURCE_EXHAUSTED|out of memory|OOM|bad_alloc|Cannot allocate memory|"
                       r"failed to allocate|MemoryError", re.IGNORECASE)


def _model_failure(e: BaseException, capped: bool) -> str:
    """'OOM (measured)' for an allocation failure, else 'error: ...'."""
    text = f"{type(e).__name__}: {e}"
    if isinstance(e, MemoryError) or _OOM_TEXT.search(text):
        return "OOM (measured)"
    # XLA:CPU's matmul library (YNNPACK) reports a failed scratch allocation as INTERNAL
    if capped and re.search(r"YNNPACK operation failed|alloc", text):
        return "OOM (measured)"
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return f"error: {type(e).__name__}: {first}"


def measure_model_config(spec: dict) -> dict:
    """Build, initialise, compile and time the training step of one (variant, n) in this process.

    spec: variant, n, batch, size, dtype, dropout, steps, warmup, memory ('rss' | 'device_peak'
    | 'memory_analysis'), mem_cap_bytes (rss only: RLIMIT_AS headroom for the steps; 0 = none).
    """
    from flax.training import train_state

    from luna_lra import trainer
    from luna_lra.defaults import base_config
    from luna_lra.models import build_model

    variant, n, b = spec["variant"], spec["n"], spec["batch"]
    row = dict(model=variant, n=n, batch=b, status="ok")
    capped = False
    try:
        cfg = model_config(variant, spec["size"], spec["dtype"], spec["dropout"])
        model = build_model(cfg, text_task(n))
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
        program = _program_bytes(compiled)
        row["program_mib"] = None if program is None else program / 2**20

        memory = spec["memory"]
        if memory == "rss":
            gc.collect()
            _malloc_trim()
            rss0 = _proc_status_bytes("VmRSS")
            if not _reset_peak_rss():
                memory = "rss_maxrss"
            cap = spec.get("mem_cap_bytes") or 0
            vm = _proc_status_bytes("VmSize")
            if cap and vm:
                import resource
                resource.setrlimit(resource.RLIMIT_AS, (vm + cap, resource.RLIM_INFINITY))
                capped = True
        times = []
        for i in range(spec["warmup"] + spec["steps"]):
            t0 = time.perf_counter()
            state, metrics = compiled(state, batch, rng)
            jax.block_until_ready((state, metrics))
            dt = time.perf_counter() - t0
            if i < spec["warmup"]:
                row["warmup_s"] = dt
            else:
                times.append(dt)
        if capped:
            import resource
            resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)
        row["step_times_s"] = times
        row["step_s"] = statistics.median(times)
        row["steps_per_s"] = 1.0 / row["step_s"]
        row["loss"] = float(metrics["loss"])
        if memory == "rss":
            row["rss_before_mib"] = rss0 / 2**20
            row["rss_peak_mib"] = _proc_status_bytes("VmHWM") / 2**20
            row["memory_mib"] = row["rss_peak_mib"] - row["rss_before_mib"]
        elif memory == "rss_maxrss":
            import resource
            row["rss_before_mib"] = rss0 / 2**20
            row["rss_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            row["memory_mib"] = row["rss_peak_mib"] - row["rss_before_mib"]
        elif memory == "device_peak":
            peak = _device_peak()
            row["memory_mib"] = None if peak is None else peak / 2**20
        else:
            row["memory_mib"] = row["program_mib"]
        row["memory_measure"] = memory
        row["device_peak_mib"] = (_device_peak() or 0) / 2**20 or None
        del compiled, state
    except Exception as e:  # OOM and anything else: a row, never a crash
        if capped:
            import resource
            resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)
        row["status"] = _model_failure(e, capped)
        row["error"] = f"{type(e).__name__}: {str(e)[:2000]}"
        row["memory_measure"] = spec["memory"]
    gc.collect()
    return row


def _model_worker(spec_json: str):
    """`model --worker SPEC`: one configuration, its row written as JSON to spec['result_path']."""
    spec = json.loads(spec_json)
    row = measure_model_config(spec)
    with open(spec["result_path"], "w") as f:
        json.dump(row, f)


def run_model_isolated(spec: dict, timeout_s: float) -> dict:
    """measure_model_config(spec) in a fresh Python process; a worker that dies (the kernel's OOM
    killer, an abort on a failed allocation) or overruns timeout_s gives a row, not a crash."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix="luna_bench_", suffix=".json")
    os.close(fd)
    spec = dict(spec, result_path=path)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "luna_lra.benchmark", "model", "--worker", json.dumps(spec)]
    base = dict(model=spec["variant"], n=spec["n"], batch=spec["batch"],
                memory_measure=spec["memory"])
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        with open(path) as f:
            text = f.read()
        if text.strip():
            return json.loads(text)
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        row = dict(base, returncode=proc.returncode, error=" | ".join(tail)[:2000])
        if proc.returncode == -9:
            row["status"] = "OOM (measured: worker killed by SIGKILL, the kernel's OOM killer)"
        elif _OOM_TEXT.search(proc.stderr or "") or re.search(r"alloc", proc.stderr or ""):
            row["status"] = f"OOM (measured: worker died, rc {proc.returncode}, allocation failed)"
        else:
            row["status"] = f"error: worker died (rc {proc.returncode}): {' | '.join(tail)[:200]}"
        return row
    except subprocess.TimeoutExpired:
        return dict(base, status=f"timeout (> {timeout_s:g} s; --config-timeout-s)")
    finally:
        try:
            os.remove(path)
        except OSError:
            pass


# ------------------------------------------------------------------ fits and reports


def fit_slope(ns, values):
    """Least-squares slope of log(value) against log(n) (~1: linear growth, ~2: quadratic);
    None with fewer than two usable (positive, finite) points."""
    pts = [(float(n), float(v)) for n, v in zip(ns, values)
           if v is not None and np.isfinite(v) and v > 0 and n > 0]
    if len(pts) < 2 or len({n for n, _ in pts}) < 2:
        return None
    x = np.log([n for n, _ in pts])
    y = np.log([v for _, v in pts])
    return float(np.polyfit(x, y, 1)[0])


def model_slopes(rows, variants):
    out = {}
    for v in variants:
        ok = [r for r in rows if r["model"] == v and r["status"] == "ok"]
        ns = [r["n"] for r in ok]
        out[v] = dict(
            time=fit_slope(ns, [r.get("step_s") for r in ok]),
            memory=fit_slope(ns, [r.get("memory_mib") for r in ok]),
            lengths=ns)
    return out


def _row(rows, variant, n):
    for r in rows:
        if r["model"] == variant and r["n"] == n:
            return r
    return None


def _status_cell(r):
    if r is None:
        return "—"
    s = r["status"]
    if s.startswith("OOM") and r.get("estimate_gib"):
        return f"{s} (est. {r['estimate_gib']:.1f} GiB)"
    return s


def _range(ns):
    return f"{_length_name(min(ns))}–{_length_name(max(ns))}, {len(ns)} points" if ns else "—"


def model_checks(rows, slopes, lengths):
    """The issue's bar for the CPU table: Luna-16's step-time slope < 1.15, the Transformer's
    > 1.6, Luna-16's memory at the longest length < 0.1 x the Transformer's, or the Transformer
    out of memory there while Luna-16 runs."""
    if "luna16" not in slopes or MODEL_BASELINE not in slopes:
        return []
    out = []
    s = slopes["luna16"]["time"]
    out.append(("Luna-16 (XLA) step-time slope < 1.15", s is not None and s < 1.15,
                f"{_fmt(s)} over {_range(slopes['luna16']['lengths'])}"))
    s = slopes[MODEL_BASELINE]["time"]
    out.append(("Transformer (XLA) step-time slope > 1.6", s is not None and s > 1.6,
                f"{_fmt(s)} over {_range(slopes[MODEL_BASELINE]['lengths'])}"))
    n = max(lengths)
    luna, tr = _row(rows, "luna16", n), _row(rows, MODEL_BASELINE, n)
    if luna is None or luna["status"] != "ok":
        out.append((f"memory at {_length_name(n)}", False, "Luna-16 did not run there"))
    elif tr is not None and tr["status"] == "ok":
        frac = luna["memory_mib"] / tr["memory_mib"]
        out.append((f"Luna-16 memory at {_length_name(n)} < 0.1 x Transformer's", frac < 0.1,
                    f"{luna['memory_mib']:.0f} MiB vs {tr['memory_mib']:.0f} MiB: {frac:.3f}"))
    elif tr is not None and tr["status"].startswith(("OOM", "skipped: OOM")):
        out.append((f"Transformer out of memory at {_length_name(n)} where Luna-16 runs", True,
                    f"Transformer: {_status_cell(tr)}; Luna-16: {luna['memory_mib']:.0f} MiB"))
    else:
        out.append((f"memory at {_length_name(n)}", False,
                    f"Transformer: {_status_cell(tr)} (not an OOM: nothing to compare)"))
    return out


def model_markdown(meta, rows, slopes):
    lengths, variants = meta["lengths"], meta["models"]
    label = lambda v: MODEL_VARIANTS[v][0]
    heads = " | ".join(_length_name(n) for n in lengths)
    out = [f"# Training-step efficiency: Luna vs softmax attention ({meta['mode']} mode)", "",
           f"- machine: {meta['machine']}"
           + (f"; load average (1 min) {meta['load_avg_start'][0]:.2f} at the start, "
              f"{meta['load_avg_end'][0]:.2f} at the end (timings need a quiet machine)"
              if meta.get("load_avg_start") and meta.get("load_avg_end") else ""),
           f"- jax {meta['jax_version']}, backend {meta['backend']}, commit {meta['commit']}",
           f"- command: `{meta['command']}`",
           f"- model: {meta['model_desc']}; batch {meta['batch']}, dtype {meta['dtype']}, "
           f"dropout {meta['dropout_desc']}; random bytes with padding (example 0 full, the "
           "others up to n/8 shorter), n tokens + the CLS token",
           f"- step: luna_lra.trainer.make_steps' train step (forward + backward + AdamW "
           f"update), jit with the state donated; speed = 1 / median of {meta['steps']} timed "
           f"steps after {meta['warmup']} warm-up step, each ended with jax.block_until_ready; "
           "compile time apart (below)",
           f"- memory: {MEMORY_MEASURES.get(meta['memory'], meta['memory'])}",
           f"- isolation: {meta['isolation_desc']}",
           f"- out of memory: {meta['oom_desc']}",
           f"- not run here: {meta['not_run']}" if meta.get("not_run") else None,
           f"- wall time {meta['wall_s']:.0f} s" + (f"; time budget {meta['budget_s']:g} s"
                                                    if meta.get("budget_s") else ""),
           ""]
    if meta["mode"] == "quick":
        out += ["**Quick mode: a tiny model at short lengths, a smoke test; the figures mean "
                "nothing.**", ""]
    out += [f"## Speed: steps per second (speed-up vs {label(MODEL_BASELINE)} at the same n)", "",
            f"| model | {heads} | slope of step time (log-log fit) |",
            "|---|" + "---|" * len(lengths) + "---|"]
    for v in variants:
        cells = []
        for n in lengths:
            r, base = _row(rows, v, n), _row(rows, MODEL_BASELINE, n)
            if r is None or r["status"] != "ok":
                cells.append(_status_cell(r))
                continue
            rel = (f" ({r['steps_per_s'] / base['steps_per_s']:.2f}x)"
                   if base is not None and base["status"] == "ok" else "")
            cells.append(f"{r['steps_per_s']:.3g}{rel}")
        s = slopes[v]
        out.append(f"| {label(v)} | " + " | ".join(cells)
                   + f" | {_fmt(s['time'])} ({_range(s['lengths'])}) |")
    out += ["", f"## Peak memory: MiB ({meta['memory']}; fraction of {label(MODEL_BASELINE)}'s "
                f"at the same n)", "",
            f"| model | {heads} | slope of memory (log-log fit) |",
            "|---|" + "---|" * len(lengths) + "---|"]
    for v in variants:
        cells = []
        for n in lengths:
            r, base = _row(rows, v, n), _row(rows, MODEL_BASELINE, n)
            if r is None or r["status"] != "ok" or r.get("memory_mib") is None:
                cells.append(_status_cell(r) if r is None or r["status"] != "ok" else "—")
                continue
            rel = (f" ({r['memory_mib'] / base['memory_mib']:.3f})"
                   if base is not None and base["status"] == "ok" and base.get("memory_mib")
                   else "")
            cells.append(f"{r['memory_mib']:.0f}{rel}")
        s = slopes[v]
        out.append(f"| {label(v)} | " + " | ".join(cells)
                   + f" | {_fmt(s['memory'])} ({_range(s['lengths'])}) |")
    out += ["", "## Step time (ms) and compile time (s)", "",
            f"| model | {heads} |", "|---|" + "---|" * len(lengths)]
    for v in variants:
        cells = []
        for n in lengths:
            r = _row(rows, v, n)
            if r is None or r["status"] != "ok":
                cells.append(_status_cell(r))
            else:
                cells.append(f"{1e3 * r['step_s']:.4g} ms / {r['compile_s']:.1f} s")
        out.append(f"| {label(v)} | " + " | ".join(cells) + " |")
    checks = model_checks(rows, slopes, lengths)
    if checks:
        out += ["", "## The issue's bar (meant for `--mode cpu`: n = 1K..16K)", ""]
        out += [f"- [{'x' if ok else ' '}] {name}: {detail}" for name, ok, detail in checks]
    out += ["", "Slopes: least squares of log(step time) (or log(memory)) against log(n) over "
                "the lengths where the model ran; ~1 is linear growth, ~2 quadratic. Raw numbers "
                "(every timed step, compile and init time, RSS before/peak, XLA's memory "
                "analysis of each compiled step as program_mib, the estimate, errors) are in "
                "efficiency.json; the plot is efficiency.png."]
    return "\n".join(x for x in out if x is not None) + "\n"


def model_plot(path, meta, rows, slopes):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, scale, ylabel, skey in (
            (axes[0], "step_s", 1e3, "step time (ms)", "time"),
            (axes[1], "memory_mib", 1.0, f"memory (MiB, {meta['memory']})", "memory")):
        for v in meta["models"]:
            ok = [r for r in rows if r["model"] == v and r["status"] == "ok"
                  and r.get(key) is not None and r[key] > 0]
            if not ok:
                continue
            s = slopes[v][skey]
            ax.plot([r["n"] for r in ok], [scale * r[key] for r in ok], marker="o",
                    linestyle="--" if v.endswith(("pallas", "cudnn")) else "-",
                    label=f"{MODEL_VARIANTS[v][0]}: slope {_fmt(s)}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(meta["lengths"], [_length_name(n) for n in meta["lengths"]])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ref = [r for r in rows if r["model"] == MODEL_BASELINE and r["status"] == "ok"
               and r.get(key)]
        if ref:  # guide lines through the Transformer's first point: slope 1 and slope 2
            n0, y0 = ref[0]["n"], scale * ref[0][key]
            xs = np.array([min(meta["lengths"]), max(meta["lengths"])], float)
            for k, style in ((1, ":"), (2, "-.")):
                ax.plot(xs, y0 * (xs / n0) ** k, color="grey", linestyle=style, linewidth=0.8,
                        label=f"slope {k} (guide)")
        ax.set_xlabel("sequence length n")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    axes[0].set_title("training step time vs n (log-log)")
    axes[1].set_title("peak memory vs n (log-log)")
    fig.suptitle(f"{meta['machine']}: batch {meta['batch']}, {meta['dtype']}, "
                 f"{meta['mode']} mode", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def _mem_available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_model(args):
    if args.worker:
        return _model_worker(args.worker)
    start = time.perf_counter()
    if args.isolate == "subprocess":
        # this process only coordinates: don't let it grab the accelerator's memory
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    # "until memory runs out": let XLA's GPU allocator have 95% of the card, not 75%
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
    backend = jax.default_backend()
    accelerator = backend != "cpu"
    mode = "quick" if args.quick else (args.mode or ("gpu" if accelerator else "cpu"))
    cfg = dict(MODEL_MODES[mode])
    batch = args.batch or cfg["batch"]
    lengths = tuple(_parse_length(x) for x in args.lengths.split(",")) if args.lengths \
        else cfg["lengths"]
    steps, dtype = args.steps or cfg["steps"], args.dtype or cfg["dtype"]
    budget_s = cfg["budget_s"] if args.budget_s is None else args.budget_s
    timeout_s = args.config_timeout_s or cfg["timeout_s"]
    isolate = args.isolate if args.isolate != "auto" else (
        "inprocess" if accelerator else "subprocess")
    if args.models:
        variants = [v.strip() for v in args.models.split(",") if v.strip()]
        unknown = [v for v in variants if v not in MODEL_VARIANTS]
        if unknown:
            raise SystemExit(f"--models: unknown {unknown}; expected some of "
                             f"{list(MODEL_VARIANTS)}")
    else:
        variants = [v for v, spec in MODEL_VARIANTS.items()
                    if spec[4] == "any" or (spec[4] == "gpu" and backend in ("gpu", "cuda"))
                    or (spec[4] == "accelerator" and backend in ("gpu", "cuda", "tpu"))]
        if mode == "quick":
            variants = ["transformer", "luna16"]
    not_run = [MODEL_VARIANTS[v][0] for v in MODEL_VARIANTS
               if v not in variants and MODEL_VARIANTS[v][4] != "any"]
    if MODEL_BASELINE not in variants:
        variants.insert(0, MODEL_BASELINE)

    if isolate == "inprocess":
        memory = "memory_analysis"
    else:
        memory = "rss" if not accelerator else "device_peak"
    mem_cap = 0
    if memory == "rss":
        available = _mem_available_bytes()
        mem_cap = int(args.mem_limit_gb * 2**30) if args.mem_limit_gb else (
            int(0.85 * available) if available else 0)
    device_kind = jax.devices()[0].device_kind
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    machine = (f"{_cpu_model_name()}, {os.cpu_count()} cores"
               f" ({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}"
               " usable)" if not accelerator
               else f"{len(jax.devices())} x {device_kind} ({backend}), host "
                    f"{_cpu_model_name()}, {os.cpu_count()} cores")
    size = cfg["size"]
    s = MODEL_SIZES[size]
    print(f"[model] {mode} mode on {machine}; jax {jax.__version__}; models {variants}; "
          f"lengths {list(lengths)}; batch {batch}; {dtype}; {isolate}; memory {memory}"
          + (f", cap {mem_cap / 2**30:.1f} GiB" if mem_cap else ""), flush=True)

    rows, oom_at = [], {}
    for n in lengths:
        for v in variants:
            base = dict(model=v, n=n, batch=batch)
            if v in oom_at and isolate == "inprocess":  # (a CPU worker fails fast: run it)
                rows.append(dict(base, status=f"skipped: OOM at {_length_name(oom_at[v])}"))
                continue
            if budget_s and time.perf_counter() - start > budget_s:
                rows.append(dict(base, status=f"skipped: time budget (--budget-s {budget_s:g})"))
                continue
            try:
                est = estimate_step_bytes(v, n, batch, size, dtype)
            except Exception:  # an estimate is never worth a crash
                est = None
            spec = dict(variant=v, n=n, batch=batch, size=size, dtype=dtype,
                        dropout=args.dropout, steps=steps, warmup=1, memory=memory,
                        mem_cap_bytes=mem_cap, seed=0)
            if args.skip_estimated and mem_cap and est and est > mem_cap:
                row = dict(base, status=f"skipped: estimated {est / 1e9:.3g} GB > limit "
                                        f"{mem_cap / 1e9:.3g} GB")
            else:
                t0 = time.perf_counter()
                row = (run_model_isolated(spec, timeout_s) if isolate == "subprocess"
                       else measure_model_config(spec))
                row["wall_s"] = time.perf_counter() - t0
            row["estimate_gib"] = None if est is None else est / 2**30
            row["label"] = MODEL_VARIANTS[v][0]
            rows.append(row)
            if row["status"].startswith("OOM"):
                oom_at[v] = n
            print(f"[model] {v:16s} n={n:6d}: "
                  + (f"{1e3 * row['step_s']:9.1f} ms/step, {_fmt(row['memory_mib'], '.1f')} MiB, "
                     f"compile {row['compile_s']:.1f} s" if row["status"] == "ok"
                     else row["status"]) + f"  [{time.perf_counter() - start:.0f} s]", flush=True)
            if isolate == "inprocess":
                jax.clear_caches()

    slopes = model_slopes(rows, variants)
    dropout_desc = ("zero (dropout, attention and activation dropout all 0)"
                    if args.dropout == "zero" else
                    "the recipes' (Luna 0.3/0.3, Transformer 0.1/0.1 from configs/text.py; "
                    "attention dropout 0 on the cuDNN path, which has none)")
    isolation_desc = (
        "a fresh Python worker process per configuration (`model --worker`)"
        + (f" with RLIMIT_AS = its virtual size before the first step + {mem_cap / 2**30:.1f} "
           "GiB (" + ("--mem-limit-gb" if args.mem_limit_gb else "85% of MemAvailable at the "
                      "start") + "), so a step that needs more fails its allocation inside the "
           "worker (address space reserved but unused before the step adds a little to this cap)"
           if mem_cap else "")
        if isolate == "subprocess" else
        "all configurations in this process (XLA's memory analysis per compiled step)")
    oom_desc = ("'OOM (measured)': the XLA resource-exhausted error (or a failed allocation "
                "under the cap, or the worker killed by the kernel) caught and recorded"
                + ("; once a model is out of memory its longer lengths are 'skipped: OOM at <n>'"
                   if isolate == "inprocess" else "; every length is tried")
                + ("; with --skip-estimated, a configuration whose estimate exceeds the cap is "
                   "'skipped: estimated N GB > limit' without running" if mem_cap else ""))
    meta = dict(
        mode=mode, machine=machine, device_kind=device_kind, backend=backend,
        jax_version=jax.__version__, commit=provenance.git_commit(),
        command="python -m luna_lra.benchmark " + " ".join(sys.argv[1:]),
        models=variants, labels={v: MODEL_VARIANTS[v][0] for v in variants},
        lengths=list(lengths), batch=batch, dtype=dtype, steps=steps, warmup=1,
        size=size, model_sizes=s, vocab=TEXT_VOCAB, classes=TEXT_CLASSES,
        model_desc=(f"{'the LRA Text model' if size == 'text' else 'a tiny model'}: "
                    f"{s['num_layers']} layer{'s' * (s['num_layers'] != 1)}, dim "
                    f"{s['emb_dim']}, mlp {s['mlp_dim']}, "
                    f"{s['num_heads']} heads, vocabulary {TEXT_VOCAB}, {TEXT_CLASSES} classes, "
                    f"CLS pooling, classifier {s['classifier_dim']}"),
        dropout=args.dropout, dropout_desc=dropout_desc, memory=memory,
        memory_desc=MEMORY_MEASURES[memory], isolation=isolate, isolation_desc=isolation_desc,
        mem_cap_bytes=mem_cap or None, oom_desc=oom_desc, budget_s=budget_s or None,
        not_run=", ".join(not_run) + (" (no GPU/TPU)" if not accelerator else "")
        if not_run else "",
        xla_env={k: os.environ.get(k) for k in ("XLA_PYTHON_CLIENT_MEM_FRACTION",
                                                 "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_FLAGS")},
        load_avg_start=load_start,
        load_avg_end=os.getloadavg() if hasattr(os, "getloadavg") else None,
        wall_s=time.perf_counter() - start)
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, "efficiency")
    with open(base + ".md", "w") as f:
        f.write(model_markdown(meta, rows, slopes))
    with open(base + ".json", "w") as f:
        json.dump(dict(meta=meta, rows=rows, slopes=slopes,
                       checks=[dict(check=c, ok=ok, detail=d)
                               for c, ok, d in model_checks(rows, slopes, lengths)]), f,
                  indent=2)
    model_plot(base + ".png", meta, rows, slopes)
    print(f"[model] wrote {base}.md, .json and .png in {meta['wall_s']:.0f} s", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m luna_lra.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    k = sub.add_parser("kernels", help="pack/unpack attention kernels vs XLA and jax.nn")
    k.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test (CPU is fine)")
    k.add_argument("--out", default="results", help="output directory (default: results/)")
    k.add_argument("--budget-s", type=float, default=240.0,
                   help="stop starting new timing rows after this many seconds (default 240), so "
                        "one call stays under 5 minutes; skipped rows are listed as such")
    k.set_defaults(func=run_kernels)
    m = sub.add_parser(
        "model", help="training steps of Transformer vs Luna as n grows: speed, memory, slopes",
        description=MODEL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--mode", choices=("cpu", "gpu"), default=None,
                   help="cpu: batch 2, n = 1K..16K, fp32, a worker process per configuration "
                        "(the default without an accelerator); gpu: batch 32, n = 1K..32K, "
                        "bf16, Pallas and cuDNN rows, one call under 5 minutes (the default on "
                        "a GPU/TPU)")
    m.add_argument("--quick", action="store_true",
                   help="smoke test: tiny model, n = 128/256, 1 timed step (CPU is fine)")
    m.add_argument("--out", default="results",
                   help="output directory for efficiency.md/.json/.png (default: results/)")
    m.add_argument("--models", default="",
                   help=f"comma-separated subset of {','.join(MODEL_VARIANTS)} (the "
                        "Transformer (XLA) baseline is always added)")
    m.add_argument("--lengths", default="", help="comma-separated n, e.g. 1K,2K,4K or 1024,2048")
    m.add_argument("--batch", type=int, default=0, help="batch size (default: the mode's)")
    m.add_argument("--steps", type=int, default=0,
                   help="timed steps per configuration, after 1 warm-up (default: the mode's)")
    m.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="compute dtype (default: float32 on CPU, bfloat16 on GPU/TPU)")
    m.add_argument("--dropout", choices=("zero", "recipe"), default="zero",
                   help="zero (default): no dropout; recipe: configs/text.py's rates")
    m.add_argument("--budget-s", type=float, default=None,
                   help="start no configuration after this many seconds; the rest are listed as "
                        "skipped (default: 200 in gpu mode, none otherwise)")
    m.add_argument("--isolate", choices=("auto", "subprocess", "inprocess"), default="auto",
                   help="auto (default): a worker process per configuration on CPU (memory: "
                        "RSS), all in this process on GPU/TPU (memory: XLA's memory analysis); "
                        "subprocess on GPU/TPU measures peak_bytes_in_use per worker")
    m.add_argument("--mem-limit-gb", type=float, default=0.0,
                   help="CPU workers: memory a step may allocate (RLIMIT_AS headroom), default "
                        "85%% of MemAvailable at the start")
    m.add_argument("--skip-estimated", action="store_true",
                   help="CPU: don't run configurations whose estimated need exceeds the limit; "
                        "record them as 'skipped: estimated N GB > limit' (faster)")
    m.add_argument("--config-timeout-s", type=float, default=0.0,
                   help="CPU workers: kill a configuration after this long (default: the mode's)")
    m.add_argument("--worker", default="", help=argparse.SUPPRESS)
    m.set_defaults(func=run_model)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
