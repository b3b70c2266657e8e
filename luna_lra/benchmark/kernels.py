"""`python -m luna_lra.benchmark kernels [--quick] [--out DIR]`: Luna's pack and unpack attention
cores as the Pallas kernels of this device ("pallas": Mosaic GPU on Hopper, Triton on other
GPUs) and Triton's on Hopper too, the XLA path, jax.nn.dot_product_attention (cuDNN where it
works, else its XLA path) and tokamax.dot_product_attention when installed (Python >= 3.12;
its default implementation), at batch 32, 8 heads, head_dim 64, bfloat16, n in 1K..16K, l in
{16, 128, 256}: forward and forward+backward time (median after a warm-up; compile time apart),
memory, achieved bandwidth and FLOP rate as shares of this card's copy bandwidth and bf16
matmul rate measured in the same run, and a correctness check of each kernel family against
the reference. Writes OUT/kernels_<device-slug>.md and .json. --quick: tiny sizes (on a CPU the
kernels run in interpret mode, Mosaic GPU's for the check only), a smoke test in about a
minute.
"""

from __future__ import annotations

import gc
import importlib.util
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from luna_lra import ops
from luna_lra.benchmark import measure
from luna_lra.benchmark.measure import fmt as _fmt

FULL = dict(batch=32, heads=8, head_dim=64, ns=(1024, 2048, 4096, 8192, 16384), ls=(16, 128, 256),
            check=dict(batch=4, n=1024, l=128), copy_mib=2048, matmul=8192, runs=5)
QUICK = dict(batch=2, heads=1, head_dim=16, ns=(128,), ls=(16,), check=dict(batch=2, n=64, l=16),
             copy_mib=16, matmul=256, runs=1)
CHECK_DTYPES = (jnp.bfloat16, jnp.float32)  # inputs of every kernel family's check


def kernel_impls(interpret):
    """The kernel families checked against the oracle: this device's ("pallas") and the other
    GPU family where it runs as well: Triton on Hopper (where "pallas" is Mosaic GPU), Mosaic GPU
    in GPU interpret mode on a CPU (where "pallas" is Triton's interpret mode) when this JAX has
    it."""
    device = ops.resolve_impl("pallas", interpret=interpret)
    if device == "pallas_mgpu":
        return ("pallas", "triton")
    if interpret and jax.default_backend() == "cpu" and _has_mosaic_gpu():
        return ("pallas", "mosaic")
    return ("pallas",)


def impls(interpret):
    """Every implementation timed, in table order: the kernel families, but on a CPU (where
    interpreted times mean nothing, and GPU interpret mode is slow) only "pallas"."""
    kernels = ("pallas",) if interpret else kernel_impls(interpret)
    return kernels + ("xla", "jax.nn") + (
        ("tokamax",) if importlib.util.find_spec("tokamax") else ())  # Python >= 3.12


def _has_mosaic_gpu():
    try:
        importlib.import_module("luna_lra.ops.pallas_mgpu")
    except ImportError:  # JAX < 0.11
        return False
    return True


def measure_peaks(cfg):
    """Copy bandwidth (bytes/s; x + 1 reads and writes each byte once) and bf16 matmul FLOP/s."""
    x = jnp.ones((cfg["copy_mib"] * 2**20 // 2,), jnp.bfloat16)
    _, t, _ = measure.timed(lambda x: x + 1, (x,), max(cfg["runs"], 5))
    bandwidth = 2 * x.nbytes / t
    del x
    m = cfg["matmul"]
    a = jnp.ones((m, m), jnp.bfloat16)
    _, t, _ = measure.timed(lambda a, b: a @ b, (a, a), max(cfg["runs"], 5))
    return bandwidth, 2 * m**3 / t


# ------------------------------------------------------------------------- implementations

def _attention_fn(impl, kind, interpret):
    """f(q, k, v, mask) of the Pallas kernels or the XLA path through luna_lra.ops."""
    op = ops.pack_attention if kind == "pack" else ops.unpack_attention
    kw = {"interpret": interpret} if impl != "xla" else {}
    return lambda q, k, v, m: op(q, k, v, m, impl=impl, **kw)


def _ran(impl, kind, q, k, interpret):
    """Which kernels (or XLA) ops runs for this impl and these inputs."""
    with ops.record_choices() as found:
        jax.eval_shape(_attention_fn(impl, kind, interpret), q, k, k,
                       jax.ShapeDtypeStruct(k.shape[:2], jnp.bool_))
    return found[0][1]


def _nn_attention(implementation):
    """jax.nn.dot_product_attention with the key mask given as lengths (its padding API)."""
    return lambda q, k, v, m: jax.nn.dot_product_attention(
        q, k, v, key_value_seq_lengths=jnp.sum(m, axis=1, dtype=jnp.int32),
        implementation=implementation)


def tokamax_attention(implementation=None):
    """tokamax.dot_product_attention (its jax.nn-like API; query and key sides may differ in
    length) with the key mask given as lengths, as for jax.nn: Luna's masks are padding masks
    (real tokens first). implementation None: tokamax picks (Mosaic GPU or Triton on a GPU, XLA
    on a CPU); a failure is the row's status."""
    import tokamax

    return lambda q, k, v, m: tokamax.dot_product_attention(
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
        if impl == "tokamax":
            fn, row["impl_detail"] = tokamax_attention(), "tokamax (its default implementation)"
        elif impl != "jax.nn":
            fn = _attention_fn(impl, kind, interpret)
            row["impl_detail"] = f"{impl}: {_ran(impl, kind, q, k, interpret)}"
        else:
            fn, row["impl_detail"] = _nn_attention("cudnn"), "jax.nn cudnn"
            try:
                jax.jit(fn).lower(q, k, v, m).compile()
            except Exception as e:  # no cuDNN here (CPU, old card, unsupported shape)
                fn, row["impl_detail"] = _nn_attention("xla"), "jax.nn xla (no cudnn)"
                row["cudnn_error"] = measure.failure(e)
        qkv, o = q.nbytes + k.nbytes + v.nbytes, q.nbytes
        flops = 4 * b * h * lq * lk * d  # q k^T and p v, 2 flops per multiply-add
        for phase, f, args, nbytes, nflops in (
                ("fwd", fn, (q, k, v, m), qkv + o, flops),
                # backward reads q, k, v, o, dO and writes dq, dk, dv; 5 matmuls (recompute too)
                ("fwdbwd", _fwd_bwd(fn), (q, k, v, m, g), 3 * qkv + 3 * o, 3.5 * flops)):
            compile_s, t, compiled = measure.timed(f, args, cfg["runs"])
            row[f"{phase}_ms"] = 1e3 * t
            row[f"{phase}_compile_s"] = compile_s
            row[f"{phase}_gbps"] = nbytes / t / 1e9
            row[f"{phase}_tflops"] = nflops / t / 1e12
            row[f"{phase}_bw_share"] = nbytes / t / peaks[0]
            row[f"{phase}_flop_share"] = nflops / t / peaks[1]
            row[f"{phase}_program_mib"] = (measure.program_bytes(compiled) or 0) / 2**20 or None
            del compiled
        row["device_peak_mib"] = (measure.device_peak() or 0) / 2**20 or None
    except Exception as e:
        row["status"] = measure.failure(e)
    gc.collect()
    return row


def check_row(cfg, impl, kind, dtype, interpret):
    """Max relative error (max|a-b| / max|b|) of the kernels' out, dq, dk, dv vs the oracle
    (float32 math at highest matmul precision), ragged mask with an all-padded example, dropout."""
    c = cfg["check"]
    lq, lk = (c["l"], c["n"]) if kind == "pack" else (c["n"], c["l"])
    q, k, v, _, g = _inputs(jax.random.key(7), c["batch"], lq, lk, cfg["heads"], cfg["head_dim"],
                            dtype)
    lengths = jnp.linspace(lk, 0, c["batch"]).astype(jnp.int32)  # full ... all-padded
    m = jnp.arange(lk)[None, :] < lengths[:, None]
    op = ops.pack_attention if kind == "pack" else ops.unpack_attention
    kw = dict(dropout_rate=0.1, dropout_seed=jnp.uint32(1234))
    row = dict(op=kind, impl=impl, dtype=jnp.dtype(dtype).name,
               shape=f"b={c['batch']} lq={lq} lk={lk}")
    try:
        row["ran"] = _ran(impl, kind, q, k, interpret)
        # Float32 at "highest" (IEEE dots in the kernel; its default on a GPU is TF32, as XLA's)
        with jax.default_matmul_precision("highest" if dtype == jnp.float32 else None):
            got = jax.jit(_fwd_bwd(lambda *a: op(*a, impl=impl, interpret=interpret,
                                                 **kw)))(q, k, v, m, g)
        up = lambda x: x.astype(jnp.float32)
        with jax.default_matmul_precision("highest"):
            oracle = ops.reference.pack_attention if kind == "pack" else \
                ops.reference.unpack_attention
            want = jax.jit(_fwd_bwd(lambda *a: oracle(*a, **kw)))(
                up(q), up(k), up(v), m, up(g))
        got, want = jax.tree.leaves(got), jax.tree.leaves(want)
        for name, a, w in zip(("out", "dq", "dk", "dv"), got, want):
            a, w = np.asarray(a, np.float64), np.asarray(w, np.float64)
            row[f"{name}_max_rel"] = float(np.max(np.abs(a - w)) / max(np.max(np.abs(w)), 1e-30))
        row["status"] = "ok"
    except Exception as e:
        row["status"] = measure.failure(e)
    return row


def to_markdown(meta, rows, checks):
    peak_bw, peak_fl = meta["peak_copy_gbps"], meta["peak_bf16_tflops"]
    out = [f"# Luna attention kernels on {meta['device_kind']}", "",
           f"- jax {meta['jax_version']}, backend {meta['backend']}, commit {meta['commit']}",
           f"- command: `{meta['command']}`",
           f"- shapes: batch {meta['batch']}, heads {meta['heads']}, head_dim {meta['head_dim']}, "
           f"bfloat16, no padding, no dropout; pack: q = l rows, k/v = n rows; unpack: the reverse",
           f"- measured peaks: copy {peak_bw:.1f} GB/s, bf16 matmul {peak_fl:.2f} TFLOP/s",
           f"- pallas: this device's kernels ({meta['pallas_impl']} for 16-bit inputs)"
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
            "Pallas vs the XLA path: speed-up (XLA ms / Pallas ms) at least 2, program "
            "memory at most half, and time within 3x of the larger of the bandwidth and FLOP "
            "floors (bytes / measured copy bandwidth, FLOPs / measured bf16 matmul rate).", "",
            "| op | n | speed-up | memory ratio | time / floor | verdict |",
            "|---|---|---|---|---|---|"]
    for b in kernel_bars(rows):
        out.append(f"| {b['op']} | {b['n']} | {_fmt(b['speedup'])} | {_fmt(b['memory_ratio'])} | "
                   f"{_fmt(b['time_over_floor'])} | {b['verdict']} |")
    out += ["", "## Correctness: the Pallas kernels vs the oracle (ops/reference.py)",
            "", "max |kernel − reference| / max |reference|, ragged key mask with an all-padded "
            "example, dropout 0.1; reference in float32 at highest matmul precision, float32 "
            "kernels too (IEEE dots; their default on a GPU is TF32); `ran`: the kernels the "
            "impl took for these inputs", "",
            "| op | impl | ran | dtype | shape | out | dq | dk | dv | status |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for c in checks:
        out.append(f"| {c['op']} | {c['impl']} | {c.get('ran', '—')} | {c['dtype']} | "
                   f"{c['shape']} | " + " | ".join(
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


def timing_rows(cfg, interpret, peaks, budget_s, start):
    """bench_row for every (n, l, op, impl); rows not started within budget_s are 'skipped'."""
    rows = []
    for n in cfg["ns"]:
        for l in cfg["ls"]:
            for kind in ("pack", "unpack"):
                for impl in impls(interpret):
                    if time.perf_counter() - start > budget_s:
                        rows.append(dict(op=kind, n=n, l=l, impl=impl,
                                         status=f"skipped (--budget-s {budget_s:g})"))
                        continue
                    r = bench_row(cfg, kind, n, l, impl, interpret, peaks)
                    rows.append(r)
                    print(f"[kernels] {kind} n={n} l={l} {r.get('impl_detail', impl)}: "
                          f"fwd {_fmt(r.get('fwd_ms'), '.3f')} ms, "
                          f"f+b {_fmt(r.get('fwdbwd_ms'), '.3f')} ms, {r['status']}", flush=True)
    return rows


def run(quick: bool, out: str, budget_s: float) -> dict:
    """The whole benchmark; writes OUT/kernels_<device>.md/.json and returns its data."""
    cfg = QUICK if quick else FULL
    start = time.perf_counter()
    interpret = jax.default_backend() == "cpu"  # Pallas kernels only run interpreted there
    device_kind = jax.devices()[0].device_kind
    slug = re.sub(r"[^a-z0-9]+", "-", device_kind.lower()).strip("-") or "unknown"
    print(f"[kernels] {device_kind}, jax {jax.__version__}, backend {jax.default_backend()}",
          flush=True)
    peaks = measure_peaks(cfg)
    print(f"[kernels] peaks: copy {peaks[0] / 1e9:.1f} GB/s, bf16 matmul {peaks[1] / 1e12:.2f} "
          "TFLOP/s", flush=True)
    checks = [check_row(cfg, impl, kind, dtype, interpret) for impl in kernel_impls(interpret)
              for kind in ("pack", "unpack") for dtype in CHECK_DTYPES]
    for c in checks:
        print(f"[kernels] check {c}", flush=True)
    rows = timing_rows(cfg, interpret, peaks, budget_s, start)
    meta = dict(measure.provenance_meta(), batch=cfg["batch"], heads=cfg["heads"],
                head_dim=cfg["head_dim"], peak_copy_gbps=peaks[0] / 1e9,
                peak_bf16_tflops=peaks[1] / 1e12,
                pallas_impl=ops.resolve_impl("pallas", interpret=interpret), interpret=interpret,
                device_peak_available=measure.device_peak() is not None,
                wall_s=time.perf_counter() - start)
    data = dict(meta=meta, rows=rows, checks=checks, bars=kernel_bars(rows))
    base = measure.write_table(out, f"kernels_{slug}", to_markdown(meta, rows, checks), data)
    print(f"[kernels] wrote {base}.md and {base}.json in {meta['wall_s']:.0f} s", flush=True)
    return data


def add_parser(sub):
    k = sub.add_parser("kernels", help="pack/unpack attention kernels vs XLA, jax.nn, tokamax")
    k.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test (CPU is fine)")
    k.add_argument("--out", default="results", help="output directory (default: results/)")
    k.add_argument("--budget-s", type=float, default=240.0,
                   help="stop starting new timing rows after this many seconds (default 240), so "
                        "one call stays under 5 minutes; skipped rows are listed as such")
    k.set_defaults(func=lambda args: run(args.quick, args.out, args.budget_s))
