"""`python -m luna_lra.benchmark gpu [--dry-run] [--out DIR] [--wheels DIR]`: everything a
fresh GPU machine (H100/H200, jax with CUDA) should measure, in one call of under 8 minutes:

  1. tests    JAX_PLATFORMS=cuda pytest tests/test_ops_pallas_gpu.py tests/test_ops_pallas_mgpu.py (the
              Triton kernels, and on Hopper the Mosaic GPU ones, compiled, at real plans)
  2. kernels  `kernels`: this device's Pallas kernels (Mosaic GPU on Hopper) and Triton's vs
              the XLA path vs jax.nn (cuDNN) (and tokamax when it is installed), batch 32,
              8 heads, head_dim 64, bf16, n 1K-16K, l 16/128/256
  3. model    `model --mode gpu`: Transformer (XLA, cuDNN) vs Luna-16/128/256 (XLA, Pallas) on
              the Text model, n 1K-16K, bf16 (Pallas: Mosaic GPU on Hopper)
  4. train    configs/text.py:luna256 in bf16 on synthetic Text-shaped data (IMDB cannot travel),
              about a minute with impl=xla, then the same steps with impl=pallas: steps/s and
              both loss curves

Each part runs in its own process under a time limit (a hang or crash costs that part only).
It prints a short table of the issue's bars last and leaves three files in OUT: summary.md,
summary.json and parts.tar.gz (every part's tables and logs), so all come back from a device
machine's $OUT. --dry-run rehearses every path on the CPU at tiny sizes (the Triton kernels in
Pallas interpret mode, the Mosaic GPU ones in GPU interpret mode; the GPU tests only collected)
in a few minutes. --wheels DIR first
installs the wheels in DIR (ml-collections etc., which the GPU image lacks) with pip, offline.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

from luna_lra.benchmark import measure

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Seconds per part (the whole stays under 8 minutes); the benchmarks get a budget inside it.
LIMITS = {"tests": 75, "kernels": 130, "model": 130, "train": 140}
DRY_LIMITS = {"tests": 60, "kernels": 120, "model": 90, "train": 120}
# Issue 14's reference for Luna at 4K (Luna-256, Mega's efficiency table): speed and memory
# relative to the softmax Transformer.
PAPER_4K = {"speed": 4.9, "memory": 0.16}


def part_commands(out: str, dry: bool) -> dict:
    """{part: (argv, env overrides)}, each run from the repository root."""
    py = sys.executable
    bench = [py, "-m", "luna_lra.benchmark"]
    tests = [py, "-m", "pytest", "-q", "tests/test_ops_pallas_gpu.py", "tests/test_ops_pallas_mgpu.py"] + (
        ["--collect-only"] if dry else [])
    kernels = bench + ["kernels", "--out", f"{out}/kernels", "--budget-s",
                       str(LIMITS["kernels"] - 40)] + (["--quick"] if dry else [])
    model = bench + ["model", "--out", f"{out}/model"] + (
        ["--quick", "--isolate", "inprocess", "--lengths", "128"] if dry else
        ["--mode", "gpu", "--lengths", "1K,2K,4K,8K,16K", "--budget-s",
         str(LIMITS["model"] - 40)])
    train = bench + ["gpu", "--part", "train", "--out", f"{out}/train"] + (
        ["--dry-run"] if dry else [])
    cpu = {"JAX_PLATFORMS": "cpu"} if dry else {}
    return {"tests": (tests, {"JAX_PLATFORMS": "cpu" if dry else "cuda"}),
            "kernels": (kernels, cpu), "model": (model, cpu), "train": (train, cpu)}


def run_part(name: str, argv: list, env: dict, limit: float, log_dir: str) -> dict:
    """One part in a child process; its output goes to LOG_DIR/<name>.log."""
    t0 = time.perf_counter()
    log = os.path.join(log_dir, f"{name}.log")
    with open(log, "w") as f:
        try:
            rc = subprocess.run(argv, cwd=REPO_ROOT, env=dict(os.environ, **env), stdout=f,
                                stderr=subprocess.STDOUT, timeout=limit).returncode
            status = "ok" if rc == 0 else f"failed (rc {rc})"
        except subprocess.TimeoutExpired:
            status = f"timeout (> {limit:g} s)"
    with open(log) as f:
        tail = f.read().strip().splitlines()[-1:] or [""]
    print(f"[gpu] {name}: {status} in {time.perf_counter() - t0:.0f} s; {tail[0][:150]}",
          flush=True)
    return dict(status=status, seconds=time.perf_counter() - t0, command=" ".join(argv),
                last_line=tail[0][:300])


def install_wheels(wheels: str, dry: bool) -> str:
    """pip-installs every wheel in `wheels` into this interpreter, offline, no dependencies."""
    files = sorted(glob.glob(os.path.join(wheels, "*.whl")))
    argv = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
            "--no-compile", *files]
    if dry or not files:
        return f"not run ({'dry run' if dry else 'no wheels'}): {' '.join(argv)}"
    proc = subprocess.run(argv, capture_output=True, text=True)
    return f"rc {proc.returncode}: {len(files)} wheels" + (
        f"; {proc.stderr.strip()[-300:]}" if proc.returncode else "")


def _load(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def kernel_bar_rows(parts_dir: str) -> list:
    data = _load(next(iter(glob.glob(f"{parts_dir}/kernels/kernels_*.json")), ""))
    if not data or not data["bars"]:
        return [("kernels: f+b at n >= 4K, l = 256", "not measured" + (
            " (no such rows: --quick)" if data else ""))]
    return [(f"kernels {b['op']} n={b['n']}: >= 2x XLA, <= 1/2 memory, <= 3x floor",
             f"{measure.fmt(b['speedup'])}x, {measure.fmt(b['memory_ratio'])}, "
             f"{measure.fmt(b['time_over_floor'])}x: {b['verdict']}") for b in data["bars"]]


def model_bar_rows(parts_dir: str, n: int = 4096) -> list:
    data = _load(f"{parts_dir}/model/efficiency.json")
    rows = {(r["model"], r["n"]): r for r in (data or {}).get("rows", [])
            if r.get("status") == "ok"}
    base = rows.get(("transformer", n))
    out = []
    for v, ref in (("luna16", "transformer"), ("luna256", "transformer"),
                   ("luna16-pallas", "transformer"), ("luna16", "transformer-cudnn"),
                   ("luna16-pallas", "transformer-cudnn")):
        r, b = rows.get((v, n)), rows.get((ref, n)) or base
        name = (f"{v} vs {ref} at n = {n} (paper, Luna-256 at 4K: {PAPER_4K['speed']}x speed, "
                f"{PAPER_4K['memory']}x memory)")
        if r is None or rows.get((ref, n)) is None:
            out.append((name, "not measured"))
            continue
        mem = (r["memory_mib"] / b["memory_mib"]) if r.get("memory_mib") and b.get(
            "memory_mib") else None
        out.append((name, f"speed {r['steps_per_s'] / b['steps_per_s']:.2f}x, memory "
                          f"{measure.fmt(mem, '.3f')}"))
    return out


def train_bar_rows(parts_dir: str) -> list:
    data = _load(f"{parts_dir}/train/train.json")
    if not data:
        return [("training: pallas faster than xla", "not measured")]
    x, p = data["runs"].get("xla", {}), data["runs"].get("pallas", {})
    if not x.get("steps_per_s") or not p.get("steps_per_s"):
        return [("training: pallas faster than xla", "not measured: " + str(
            {k: r.get("status") for k, r in data["runs"].items()}))]
    faster = p["steps_per_s"] > x["steps_per_s"]
    return [("training (Text config, synthetic data): pallas faster than xla",
             f"{x['steps_per_s']:.2f} vs {p['steps_per_s']:.2f} steps/s: "
             f"{'pass' if faster else 'FAIL'}"),
            ("training: loss curves equal to bf16 rounding (first 20 steps)",
             f"max abs diff {data['max_abs_diff_first20']:.2e} (limit {data['tolerance']:g}): "
             f"{'pass' if data['max_abs_diff_first20'] <= data['tolerance'] else 'FAIL'}; "
             f"over {data['common_steps']} steps {data['max_abs_diff_all']:.2e}")]


def summary_markdown(meta: dict, parts: dict, bars: list) -> str:
    dry = " (DRY RUN on the CPU: tiny sizes, numbers mean nothing)" if meta["dry_run"] else ""
    out = [f"# GPU run{dry}", "",
           f"- machine: {meta['machine']}; jax {meta['jax_version']}; commit {meta['commit']}",
           f"- command: `{meta['command']}`",
           f"- wheels: {meta['wheels']}", f"- wall time {meta['wall_s']:.0f} s", "",
           "| part | status | seconds |", "|---|---|---|"]
    out += [f"| {k} | {p['status']} | {p['seconds']:.0f} |" for k, p in parts.items()]
    out += ["", "| bar | result |", "|---|---|"]
    out += [f"| {name} | {value} |" for name, value in bars]
    out += ["", "Every part's tables and log: parts.tar.gz (kernels/, model/, train/, "
                "logs/)."]
    return "\n".join(out) + "\n"


def run_gpu(args) -> dict:
    if args.part == "train":
        from luna_lra.benchmark import gpu_train
        return gpu_train.run(args.out, args.dry_run)
    start = time.perf_counter()
    out = os.path.abspath(args.out)
    parts_dir = os.path.join(out, "parts")
    os.makedirs(os.path.join(parts_dir, "logs"), exist_ok=True)
    wheels = install_wheels(args.wheels, args.dry_run) if args.wheels else "none"
    limits = DRY_LIMITS if args.dry_run else LIMITS
    parts = {name: run_part(name, argv, env, limits[name], os.path.join(parts_dir, "logs"))
             for name, (argv, env) in part_commands(parts_dir, args.dry_run).items()}
    bars = kernel_bar_rows(parts_dir) + model_bar_rows(
        parts_dir, 128 if args.dry_run else 4096) + train_bar_rows(parts_dir)
    meta = dict(measure.provenance_meta(), dry_run=args.dry_run, wheels=wheels,
                wall_s=time.perf_counter() - start)
    md = summary_markdown(meta, parts, bars)
    measure.write_table(out, "summary", md, dict(meta=meta, parts=parts, bars=bars))
    with tarfile.open(os.path.join(out, "parts.tar.gz"), "w:gz") as tar:
        tar.add(parts_dir, arcname="parts")
    shutil.rmtree(parts_dir)  # three files in OUT: a device machine's $OUT returns 8 at most
    print(md, flush=True)
    return dict(meta=meta, parts=parts, bars=bars)


def add_parser(sub):
    g = sub.add_parser("gpu", help="the whole GPU run in one call (tests, kernels, model, "
                                   "training); --dry-run rehearses it on the CPU")
    g.add_argument("--dry-run", action="store_true",
                   help="tiny sizes on the CPU, kernels in interpret mode (about a minute)")
    g.add_argument("--out", default="gpu_run", help="output folder (default gpu_run/)")
    g.add_argument("--wheels", default="",
                   help="install the *.whl in this folder first (pip, offline, no deps)")
    g.add_argument("--part", default="", choices=("", "train"), help=argparse.SUPPRESS)
    g.set_defaults(func=run_gpu)
