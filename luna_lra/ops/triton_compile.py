"""Compile the Pallas GPU kernels for an NVIDIA target on a machine without a GPU.

    python -m luna_lra.ops.triton_compile [--arch 90] [--quick] [--out results]

For each shape of the kernel benchmark (n 4096, l 16/128/256), the same at LRA's ragged n 4000,
head dims 32/64/128, float32 and bfloat16, dropout on and off, this lowers pack and unpack attention, forward and backward, to Triton IR through
Pallas (jax.export for platform "cuda", no GPU needed), compiles each of the three kernels with
the `triton` package to a cubin for the target (sm_90 = H100/H200, sm_80 = A100), and reads the
resources from ptxas: registers per thread, spill bytes, and shared memory. A kernel that needs
more shared memory than the target has cannot launch; spills slow it. Writes
results/triton_compile_sm<arch>.md and .json.

This checks that the kernels compile and fit; it says nothing about their speed. XLA compiles
Pallas' Triton IR with the Triton it bundles, which may lower it differently from the `triton`
release used here (the version is in the table). Needs `pip install triton` (Linux x86-64; its
wheel bundles ptxas). A developer tool: it reaches into a private JAX function (the Pallas ->
Triton IR step) to capture each kernel's IR, so `luna_lra.ops` never imports it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
from jax import export

from jax.experimental.pallas import triton as plgpu

from luna_lra import provenance
from luna_lra.ops import _pallas_common as common
from luna_lra.ops import pallas_gpu

# The custom call XLA runs a Pallas Triton kernel through: exported as plgpu.CUSTOM_CALL_TARGET_NAME
# from JAX 0.11; JAX 0.10 writes the same name inline in its lowering.
CUSTOM_CALL = getattr(plgpu, "CUSTOM_CALL_TARGET_NAME", "__gpu$xla.gpu.triton")

# Shared memory one block may use (opt-in maximum), by compute capability.
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}

KERNELS = ("fwd", "dq", "dkdv")  # order of the three pallas_calls in a forward+backward
# n = 4000 (LRA's Text and Retrieval length) is no block multiple: its kernels use masked loads.
FULL = dict(batch=32, heads=8, ns=(4000, 4096), ls=(16, 128, 256), head_dims=(32, 64, 128),
            dtypes=("bfloat16", "float32"), rates=(0.0, 0.1))
QUICK = dict(batch=2, heads=2, ns=(1000,), ls=(16, 256), head_dims=(64,), dtypes=("bfloat16",),
             rates=(0.1,))


@dataclasses.dataclass
class Lowered:
    kernel: str
    ttir: str  # Triton IR as text
    grid: tuple
    num_warps: int
    num_stages: int


def export_for_gpu(fn, *specs, arch: int = 90) -> export.Exported:
    """jax.export of jit(fn) at the argument specs for CUDA (sm_<arch>), with no GPU here."""
    with common.abstract_gpu(arch):
        return export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=[
            export.DisabledSafetyCheck.custom_call(CUSTOM_CALL)])(*specs)


def lower_to_triton(kind, b, h, n, l, d, dtype, rate, arch: int = 90) -> list[Lowered]:
    """Triton IR of the fwd, dq and dkdv kernels of one forward+backward, as XLA would get it."""
    from jax._src.pallas.triton import pallas_call_registration as registration

    captured = []
    original = registration.lowering.lower_jaxpr_to_triton_module

    def capture(*args, **kwargs):  # the Pallas -> Triton step; XLA compiles its result
        result = original(*args, **kwargs)
        captured.append((result.module.operation.get_asm(enable_debug_info=False),
                         tuple(result.grid)))
        return result

    lq, lk = (l, n) if kind == "pack" else (n, l)
    fn = getattr(pallas_gpu, f"{kind}_attention")

    def fwd_bwd(q, k, v, mask, g):
        out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, mask, dropout_rate=rate, dropout_seed=7),
                           q, k, v)
        return out, vjp(g)

    spec = lambda m: jax.ShapeDtypeStruct((b, m, h, d), jnp.dtype(dtype))
    registration.lowering.lower_jaxpr_to_triton_module = capture
    try:
        export_for_gpu(fwd_bwd, spec(lq), spec(lk), spec(lk),
                       jax.ShapeDtypeStruct((b, lk), jnp.bool_), spec(lq), arch=arch)
    finally:
        registration.lowering.lower_jaxpr_to_triton_module = original
    if len(captured) != len(KERNELS):
        raise RuntimeError(f"expected {len(KERNELS)} Triton kernels, lowering produced "
                           f"{len(captured)}")
    plan = pallas_gpu.make_plan(kind, b, h, lq, lk, d, dtype, rate, False, block_q=None,
                                block_k=None, num_splits=None)
    return [Lowered(name, ttir, grid, getattr(plan, name).num_warps, pallas_gpu.NUM_STAGES)
            for name, (ttir, grid) in zip(KERNELS, captured)]


_PTXAS_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGS = re.compile(r"Used (\d+) registers")


def compile_triton(lowered: Lowered, arch: int) -> dict:
    """Compile one kernel's Triton IR to a cubin: shared bytes, registers, spill bytes."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton import knobs
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, f"{lowered.kernel}.ttir")  # triton compiles IR from a file
        with open(src, "w") as f:
            f.write(lowered.ttir)
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                  options=dict(num_warps=lowered.num_warps,
                                               num_stages=lowered.num_stages,
                                               enable_fp_fusion=True))  # Triton's usual default
        ptx = os.path.join(tmp, "kernel.ptx")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        suffix = "a" if arch >= 90 else ""  # Triton targets sm_90a on Hopper
        cubin = os.path.join(tmp, "kernel.cubin")
        log = subprocess.run([get_ptxas(arch).path, "-v", f"-arch=sm_{arch}{suffix}", ptx, "-o",
                              cubin], capture_output=True, text=True, check=True).stderr
        sass = subprocess.run([knobs.nvidia.cuobjdump.path, "-sass", cubin], capture_output=True,
                              text=True, check=True).stdout
    spills, regs = _PTXAS_SPILLS.search(log), _PTXAS_REGS.search(log)
    if not (spills and regs):
        raise RuntimeError(f"unexpected ptxas -v output:\n{log}")
    # Tensor-core instructions: HGMMA (Hopper warpgroup MMA) or HMMA (mma.sync); float32 dots
    # at IEEE precision have none (FMA loops).
    mma = sorted(set(re.findall(r"\b(HGMMA|HMMA)\.", sass)))
    return dict(shared_bytes=int(compiled.metadata.shared), registers=int(regs.group(1)),
                spill_store_bytes=int(spills.group(1)), spill_load_bytes=int(spills.group(2)),
                tensor_core="/".join(mma) or "none")


def run(args):
    import triton

    cfg = QUICK if args.quick else FULL
    limit = SHARED_LIMIT.get(args.arch)
    rows, start = [], time.perf_counter()
    for kind in ("pack", "unpack"):
        for d in cfg["head_dims"]:
            for dtype in cfg["dtypes"]:
                for rate in cfg["rates"]:
                    for l in cfg["ls"]:
                        for n in cfg["ns"]:
                            base = dict(op=kind, n=n, l=l, head_dim=d, dtype=dtype, dropout=rate)
                            try:
                                lowered = lower_to_triton(kind, cfg["batch"], cfg["heads"], n, l,
                                                          d, dtype, rate, args.arch)
                            except Exception as e:
                                rows.append(dict(base, kernel="all", status=_error(e)))
                                continue
                            for low in lowered:
                                row = dict(base, kernel=low.kernel, num_warps=low.num_warps,
                                           num_stages=low.num_stages, grid=list(low.grid))
                                try:
                                    row.update(compile_triton(low, args.arch))
                                    fits = limit is None or row["shared_bytes"] <= limit
                                    row["status"] = "ok" if fits else "shared memory over limit"
                                except Exception as e:
                                    row["status"] = _error(e)
                                rows.append(row)
                                print(_line(row), flush=True)
    meta = dict(arch=args.arch, shared_limit_bytes=limit, triton_version=triton.__version__,
                jax_version=jax.__version__, commit=provenance.git_commit(),
                matmul_precision=str(jax.config.jax_default_matmul_precision or "default"),
                batch=cfg["batch"], heads=cfg["heads"],
                command="python -m luna_lra.ops.triton_compile " + " ".join(sys.argv[1:]),
                wall_s=time.perf_counter() - start)
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"triton_compile_sm{args.arch}")
    with open(base + ".json", "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=2)
    with open(base + ".md", "w") as f:
        f.write(to_markdown(meta, rows))
    bad = [r for r in rows if r["status"] != "ok"]
    spilling = [r for r in rows if r.get("spill_store_bytes")]
    print(f"[triton_compile] {len(rows)} kernels, {len(bad)} failed, {len(spilling)} spill; "
          f"wrote {base}.md and .json in {meta['wall_s']:.0f} s")
    return 1 if bad else 0


def _error(e: Exception) -> str:
    text = str(e).strip()
    return f"error: {type(e).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _line(r):
    return (f"[triton_compile] {r['op']} n={r['n']} l={r['l']} d={r['head_dim']} {r['dtype']} "
            f"p={r['dropout']} {r['kernel']}: {r['status']}, regs {r.get('registers')}, "
            f"spill {r.get('spill_store_bytes')} B, shared {r.get('shared_bytes')} B, "
            f"tensor cores {r.get('tensor_core')}")


def to_markdown(meta, rows):
    limit = meta["shared_limit_bytes"]
    failed = [r for r in rows if r["status"] != "ok"]
    spilling = [r for r in rows if r.get("spill_store_bytes")]
    lines = [
        f"# Pallas GPU kernels compiled for sm_{meta['arch']} without a GPU",
        "",
        f"Command: `{meta['command']}` at commit {meta['commit']}; jax {meta['jax_version']}, "
        f"triton {meta['triton_version']} (its bundled ptxas); batch {meta['batch']}, "
        f"{meta['heads']} heads; {meta['wall_s']:.0f} s on a CPU-only machine.",
        "",
        f"**{len(rows)} kernels: {len(failed)} fail to compile or to fit the "
        f"{limit // 1024 if limit else '?'} KiB of shared memory a block may use; "
        f"{len(spilling)} spill registers.**",
        "",
        "Compile-only: resources, not speed. XLA compiles the same Triton IR with the Triton it "
        "bundles, which may lower it differently from this release. Tensor-core MMA: the kinds "
        "of tensor-core instructions in the SASS (HGMMA: Hopper warpgroup MMA; HMMA: mma.sync). "
        f"Float32 kernels at JAX's matmul precision here ({meta['matmul_precision']}: TF32 "
        "dots unless it is 'highest'/'float32', whose IEEE dots use no tensor cores).",
        "",
        "| op | n | l | head_dim | dtype | dropout | kernel | warps | grid | registers | "
        "spill stores (B) | shared (KiB) | tensor-core MMA | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        shared = r.get("shared_bytes")
        lines.append(
            f"| {r['op']} | {r['n']} | {r['l']} | {r['head_dim']} | {r['dtype']} | "
            f"{r['dropout']} | {r['kernel']} | {r.get('num_warps', '')} | "
            f"{'x'.join(map(str, r.get('grid', [])))} | {r.get('registers', '')} | "
            f"{r.get('spill_store_bytes', '')} | "
            f"{'' if shared is None else f'{shared / 1024:.1f}'} | {r.get('tensor_core', '')} | "
            f"{r['status']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m luna_lra.ops.triton_compile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, choices=sorted(common.GPU_KINDS),
                        help="compute capability x10: 90 (H100/H200, default), 80 (A100)")
    parser.add_argument("--quick", action="store_true", help="a few shapes: a smoke test")
    parser.add_argument("--out", default="results", help="output directory (default: results/)")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("triton") is None:
        parser.error("needs the `triton` package: pip install '.[triton]' (Linux x86-64)")
    sys.exit(run(args))


if __name__ == "__main__":
    main()
