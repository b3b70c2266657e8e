"""Attention cores of Luna's pack and unpack steps.

`pack_attention` / `unpack_attention` take `impl`:
  "xla"     the fast XLA form in xla.py, on any backend (reference.py holds the oracle every
            form is tested against).
  "pallas"  the Pallas kernels of this device: on a GPU the Mosaic GPU kernels
            (pallas_mgpu.py) on Hopper for bfloat16/float16 inputs when the installed JAX has
            Mosaic GPU (>= 0.11), else the Triton ones (pallas_gpu.py: Ampere and newer,
            and float32); pallas_tpu.py (Mosaic TPU) on TPU. Elsewhere (CPU) an error, unless
            interpret=True, which runs the Triton kernels in Pallas interpret mode (slow; for
            tests).
  "mosaic"  the Mosaic kernels of the backend (Mosaic GPU, float32 too; TPU: pallas_tpu.py),
            forced; on the CPU with interpret=True the Mosaic GPU kernels in GPU interpret
            mode.
  "triton"  the Triton kernels, forced (GPU; CPU with interpret=True).
  "auto"    what "pallas" picks on GPU (compute capability >= 8.0) / TPU for the shapes the
            kernels are built and tested for (see `kernel_supports`), the XLA form otherwise.
`resolve_impl` says which of "xla", "pallas_gpu", "pallas_mgpu", "pallas_tpu" an impl name
runs on a backend; `record_choices` collects which one each call actually ran (after the
dtype and shape checks and the import fallbacks of "pallas" and "auto"). `pack_folded` /
`unpack_folded` take the long side before its projections (the CPU's Luna-16, where `folds`
says so). This package imports with jax alone; the kernel modules are imported on first use.
"""

from __future__ import annotations

import contextlib
import functools
import importlib

import jax
import jax.numpy as jnp

from luna_lra.ops import dropout as dropout_lib
from luna_lra.ops import reference, xla
from luna_lra.ops.reference import attention

IMPLS = ("xla", "pallas", "mosaic", "triton", "auto")
# Head dims and inputs each kernel module is built, tested and benchmarked for ("auto" takes
# it only there, with the short side at most 256). "pallas" and "auto" take Triton where
# Mosaic GPU's are not: a short side over 256 rows, and float32, which Mosaic GPU's kernels
# take (impl="mosaic") as bfloat16 pieces, three or six wgmmas per product (pallas_mgpu.py),
# against Triton's one TF32 dot at JAX's default precision; no GPU has compared them yet.
_DESIGNED = {
    "pallas_gpu": ((32, 64, 128), (jnp.float32, jnp.bfloat16)),
    "pallas_tpu": ((32, 64, 128), (jnp.float32, jnp.bfloat16)),
    "pallas_mgpu": ((64, 128), (jnp.bfloat16, jnp.float16)),
}
_FALLBACK = {"pallas_mgpu": "pallas_gpu"}  # when "pallas"/"auto" cannot run Mosaic GPU


def resolve_impl(impl: str, backend: str | None = None, *, interpret: bool = False,
                 compute_capability: str | None = None) -> str:
    """The kernels (or "xla") `impl` selects on `backend` (default jax.default_backend()):
    "xla", "pallas_gpu" (Triton), "pallas_mgpu" (Mosaic GPU) or "pallas_tpu".
    compute_capability ("9.0" on an H100): of the GPU, by default read from the device when
    `backend` is the running one; unknown, "pallas" takes Triton. For "pallas" and "auto" on
    Hopper this is the choice for the inputs and shapes Mosaic GPU's kernels take; a call
    with others (float32, l > 256) takes Triton's, and under "auto" the XLA form where no
    kernels are built for its shapes (see `kernel_supports`)."""
    if impl not in IMPLS:
        raise ValueError(f"attention impl must be one of {IMPLS}, got {impl!r}")
    if impl == "xla":
        return "xla"
    backend = backend or jax.default_backend()
    if backend == "tpu":
        if impl == "triton":
            raise ValueError('impl="triton" needs a GPU backend; on TPU use "pallas" or "mosaic"')
        return "pallas_tpu"
    if backend in ("gpu", "cuda"):
        cc = compute_capability or _compute_capability(backend)
        if impl in ("mosaic", "triton"):
            return "pallas_mgpu" if impl == "mosaic" else "pallas_gpu"
        if impl == "auto" and cc is not None and float(cc) < 8.0:
            return "xla"
        # wgmma is Hopper's (sm_90); Blackwell's tensor cores take other instructions
        return "pallas_mgpu" if cc is not None and cc.split(".")[0] == "9" else "pallas_gpu"
    if impl == "auto":
        return "xla"
    if interpret:
        return "pallas_mgpu" if impl == "mosaic" else "pallas_gpu"
    raise ValueError(
        f'impl={impl!r} needs a GPU or TPU backend, but the backend is {backend!r}: use '
        'impl="xla" (or "auto"), or pass interpret=True to run the kernels in Pallas '
        "interpret mode (slow, for tests)")


def kernel_supports(q, k, kernel: str = "pallas_gpu") -> bool:
    """Shapes "auto" sends to `kernel` ("pallas_gpu", "pallas_mgpu", "pallas_tpu"): its
    head dims and input dtypes (Triton and TPU: head_dim 32, 64 or 128, float32 or bfloat16;
    Mosaic GPU: 64 or 128, bfloat16 or float16), the short side (the shorter of q_len and
    kv_len, Luna's packed length l) at most 256.

    The kernels themselves take other head dims and lengths (ragged block edges are masked),
    but these are the shapes they are designed and benchmarked for."""
    head_dims, dtypes = _DESIGNED[kernel]
    return (q.shape[-1] in head_dims and q.dtype in dtypes
            and min(q.shape[1], k.shape[1]) <= 256)


def _compute_capability(backend: str) -> str | None:
    if backend != jax.default_backend():
        return None
    return getattr(jax.devices()[0], "compute_capability", None)  # "8.0" on an A100


_RECORDERS: list[list[tuple[str, str]]] = []


@contextlib.contextmanager
def record_choices():
    """Yields a list that fills, as pack/unpack calls are traced under this context, with
    (kind, implementation) pairs: kind "pack" | "unpack", implementation "xla" | "xla
    (folded)" | "pallas_gpu" | "pallas_mgpu" | "pallas_tpu" (+ " (interpret)")."""
    found: list[tuple[str, str]] = []
    _RECORDERS.append(found)
    try:
        yield found
    finally:
        _RECORDERS.remove(found)


def _pick(impl, q, k, interpret):
    name = resolve_impl(impl, interpret=interpret)
    by_device = impl in ("pallas", "auto")  # not forced: may take another kernel module
    if by_device and name == "pallas_mgpu" and not kernel_supports(q, k, name):
        name = _FALLBACK[name]  # float32, other head dims, l > 256: the Triton kernels
    while True:
        if name == "xla" or (impl == "auto" and not kernel_supports(q, k, name)):
            return xla, {}
        try:
            return importlib.import_module(f"luna_lra.ops.{name}"), {"interpret": interpret}
        except ImportError:  # a JAX without this Pallas backend (Mosaic GPU's needs >= 0.11;
            if by_device and name in _FALLBACK:  # JAX 0.11 deprecated Triton's)
                name = _FALLBACK[name]
            elif impl == "auto":
                return xla, {}
            else:
                raise


def _data_parallel(kernel, q, k, v, key_mask, dropout_rate, dropout_rng, dropout_seed):
    """Runs a kernel once per device on its share of the batch when a mesh with a `data` axis
    is set (jax.set_mesh, as the trainer does). XLA cannot partition a pallas_call by itself:
    without this it would gather the whole batch onto every device.

    Each shard's dropout seed is mixed with its index along `data`, so shards draw different
    masks; the masks therefore depend on the device count (the XLA path's do not)."""
    mesh = jax.sharding.get_abstract_mesh()
    shards = 0 if mesh.empty or "data" not in mesh.axis_names else mesh.shape["data"]
    if shards <= 1 or q.shape[0] % shards:
        return kernel(q, k, v, key_mask, dropout_rate=dropout_rate, dropout_rng=dropout_rng,
                      dropout_seed=dropout_seed)
    seed = dropout_lib.resolve_seed(dropout_rate, dropout_rng, dropout_seed)
    batch = jax.sharding.PartitionSpec("data")

    def per_shard(q, k, v, key_mask, seed):
        index = jax.lax.axis_index("data").astype(jnp.uint32)
        return kernel(q, k, v, key_mask, dropout_rate=dropout_rate,
                      dropout_seed=dropout_lib.keep_mask_seed(seed, index))

    return jax.shard_map(per_shard, mesh=mesh, in_specs=(batch, batch, batch, batch,
                                                         jax.sharding.PartitionSpec()),
                         out_specs=batch, check_vma=False)(q, k, v, key_mask, seed)


def _call(which, q, k, v, key_mask, dropout_rate, dropout_rng, impl, interpret, dropout_seed):
    mod, kw = _pick(impl, q, k, interpret)
    ran = "xla" if mod is xla else mod.__name__.rsplit(".", 1)[1] + (
        " (interpret)" if interpret and jax.default_backend() == "cpu" else "")
    _record(which.split("_")[0], ran)
    fn = getattr(mod, which)
    if mod is xla:  # XLA partitions its own form by itself
        return fn(q, k, v, key_mask, dropout_rate=dropout_rate, dropout_rng=dropout_rng,
                  dropout_seed=dropout_seed)
    return _data_parallel(functools.partial(fn, **kw), q, k, v, key_mask, dropout_rate,
                          dropout_rng, dropout_seed)


def pack_attention(q, k, v, key_mask, *, dropout_rate=0.0, dropout_rng=None, impl="xla",
                   interpret=False, dropout_seed=None):
    """q: P side [batch, l, heads, head_dim]; k, v: X side [batch, n, heads, head_dim];
    key_mask: [batch, n] bool (True = real token). Returns [batch, l, heads, head_dim]."""
    return _call("pack_attention", q, k, v, key_mask, dropout_rate, dropout_rng, impl,
                 interpret, dropout_seed)


def unpack_attention(q, k, v, key_mask, *, dropout_rate=0.0, dropout_rng=None, impl="xla",
                     interpret=False, dropout_seed=None):
    """q: X side [batch, n, heads, head_dim]; k, v: packed side [batch, l, heads, head_dim];
    key_mask: [batch, l] bool. Returns [batch, n, heads, head_dim]."""
    return _call("unpack_attention", q, k, v, key_mask, dropout_rate, dropout_rng, impl,
                 interpret, dropout_seed)


def folds(heads: int, proj_len: int, dim: int, *, impl: str, interpret: bool = False) -> bool:
    """Whether Luna runs pack and unpack with the long side's projections folded in
    (pack_folded, unpack_folded): where `impl` runs the XLA form on the CPU and folding
    saves at least half the multiply-adds (xla.folding_saves)."""
    return (jax.default_backend() == "cpu" and xla.folding_saves(heads, proj_len, dim)
            and resolve_impl(impl, interpret=interpret) == "xla")


def _record(kind: str, ran: str) -> None:
    for found in _RECORDERS:
        found.append((kind, ran))


def pack_folded(q, x, w_k, w_v, b_v, key_mask, **dropout):
    """xla.pack_folded (see `folds`), recorded as ("pack", "xla (folded)")."""
    _record("pack", "xla (folded)")
    return xla.pack_folded(q, x, w_k, w_v, b_v, key_mask, **dropout)


def unpack_folded(x, w_q, b_q, k, v, w_o, b_o, key_mask, **dropout):
    """xla.unpack_folded (see `folds`), recorded as ("unpack", "xla (folded)")."""
    _record("unpack", "xla (folded)")
    return xla.unpack_folded(x, w_q, b_q, k, v, w_o, b_o, key_mask, **dropout)


__all__ = ["attention", "pack_attention", "unpack_attention", "reference", "xla", "resolve_impl",
           "kernel_supports", "record_choices", "IMPLS", "folds", "pack_folded",
           "unpack_folded"]
