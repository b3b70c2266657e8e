"""Attention cores of Luna's pack and unpack steps.

`pack_attention` / `unpack_attention` take `impl`:
  "xla"     the fast XLA form in xla.py, on any backend (reference.py holds the oracle every
            form is tested against).
  "pallas"  the Pallas kernels: pallas_gpu.py (Triton) on a GPU backend, pallas_tpu.py (Mosaic)
            on TPU. Elsewhere (CPU) an error, unless interpret=True, which runs the GPU kernels
            in Pallas interpret mode (slow; for tests).
  "auto"    the kernels on GPU (compute capability >= 8.0) / TPU for the shapes they are built
            and tested for (see `kernel_supports`), the XLA form otherwise.
`resolve_impl` says which of "xla", "pallas_gpu", "pallas_tpu" an impl name runs;
`record_choices` collects which one each call actually ran (after the shape check and the
import fallback of "auto"). This package imports with jax alone; the kernel modules are
imported on first use.
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

IMPLS = ("xla", "pallas", "auto")
_KERNELS = {"gpu": "pallas_gpu", "cuda": "pallas_gpu", "tpu": "pallas_tpu"}


def resolve_impl(impl: str, backend: str | None = None, *, interpret: bool = False) -> str:
    """The implementation `impl` selects on `backend` (default jax.default_backend()):
    "xla", "pallas_gpu" or "pallas_tpu". For "auto" this is the choice for supported shapes;
    a call with other shapes still falls back to "xla" (see kernel_supports)."""
    if impl not in IMPLS:
        raise ValueError(f"attention impl must be one of {IMPLS}, got {impl!r}")
    if impl == "xla":
        return "xla"
    backend = backend or jax.default_backend()
    kernel = _KERNELS.get(backend)
    if impl == "auto":
        return kernel if kernel and _device_ok(backend) else "xla"
    if kernel is None:
        if interpret:
            return "pallas_gpu"
        raise ValueError(
            f'impl="pallas" needs a GPU or TPU backend, but the backend is {backend!r}: use '
            'impl="xla" (or "auto"), or pass interpret=True to run the kernels in Pallas '
            "interpret mode (slow, for tests)")
    return kernel


def kernel_supports(q, k) -> bool:
    """Shapes "auto" sends to the kernels: head_dim 32, 64 or 128; float32 or bfloat16; the
    short side (the shorter of q_len and kv_len, Luna's packed length l) at most 256.

    The kernels themselves take any head_dim and lengths (ragged block edges are masked), but
    these are the shapes they are designed and benchmarked for."""
    return (q.shape[-1] in (32, 64, 128) and q.dtype in (jnp.float32, jnp.bfloat16)
            and min(q.shape[1], k.shape[1]) <= 256)


def _device_ok(backend: str) -> bool:
    if _KERNELS.get(backend) != "pallas_gpu" or backend != jax.default_backend():
        return True
    cc = getattr(jax.devices()[0], "compute_capability", None)  # "8.0" on an A100
    return cc is None or float(cc) >= 8.0


_RECORDERS: list[list[tuple[str, str]]] = []


@contextlib.contextmanager
def record_choices():
    """Yields a list that fills, as pack/unpack calls are traced under this context, with
    (kind, implementation) pairs: kind "pack" | "unpack", implementation "xla" |
    "pallas_gpu" | "pallas_tpu" (+ " (interpret)")."""
    found: list[tuple[str, str]] = []
    _RECORDERS.append(found)
    try:
        yield found
    finally:
        _RECORDERS.remove(found)


def _pick(impl, q, k, interpret):
    name = resolve_impl(impl, interpret=interpret)
    if name == "xla" or (impl == "auto" and not kernel_supports(q, k)):
        return xla, {}
    try:
        return importlib.import_module(f"luna_lra.ops.{name}"), {"interpret": interpret}
    except ImportError:  # a JAX without this Pallas backend (JAX 0.11 deprecated Triton's)
        if impl == "auto":
            return xla, {}
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
    for found in _RECORDERS:
        found.append((which.split("_")[0], ran))
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


__all__ = ["attention", "pack_attention", "unpack_attention", "reference", "xla", "resolve_impl",
           "kernel_supports", "record_choices", "IMPLS"]
