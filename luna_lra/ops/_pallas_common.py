"""Plumbing shared by the Pallas attention kernels in pallas_gpu.py and pallas_tpu.py.

Each backend provides three kernels over the unpadded inputs, laid out [batch, len, heads, dim]
(a backend may transpose internally):

  fwd(plan, q, k, v, mask, seed)                    -> out [S, B, Lq, H, D], lse [S, B, H, Lq, 1]
  dq(plan, q, k, v, mask, seed, do, lse, delta)     -> dq [S, B, Lq, H, D]
  dkdv(plan, q, k, v, mask, seed, do, lse, delta)   -> dk, dv [S, B, Lk, H, D]

S splits the streamed axis across programs (keys for fwd/dq, queries for dkdv); this module
combines the partials. Lengths need not be block multiples: the last block of an axis is
ragged, and the kernels read its rows past the end as zeros (Triton: masked loads; Mosaic: the
partial block's tail zeroed in VMEM), take key validity from the length as well as the mask,
and never write past the end. It also holds the per-tile math both backends run, so the GPU
and TPU kernels differ only in how they walk and read blocks. Residuals of the custom_vjp: the
inputs, the output and the row logsumexp; the probabilities are recomputed in the backward.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from jax import lax

from luna_lra.ops import dropout as dropout_lib
from luna_lra.ops import reference

NEG = reference.NEG
# A card of each compute capability as JAX names it, and its SMs: what lowering asks of a GPU
GPU_KINDS = {80: ("NVIDIA A100-SXM4-80GB", 108), 86: ("NVIDIA A10", 72),
             89: ("NVIDIA L4", 58), 90: ("NVIDIA H100 80GB HBM3", 132)}
_TRANS_B = (((1,), (1,)), ((), ()))  # contract the last dims: a @ b.T


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """One kernel's tile: block_q query rows by block_k keys, on num_warps warps (Triton; None
    on TPU)."""

    block_q: int
    block_k: int
    num_warps: int | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
    """Static choices of one call, shared by its forward and backward pass.

    fwd and dq walk the same query blocks and split the key axis into k_splits ranges of whole
    forward key blocks (dq walks its range in dq.block_k steps, which divide fwd.block_k); dkdv
    splits its dkdv.block_q query blocks into q_splits ranges."""

    fwd: BlockSizes
    dq: BlockSizes
    dkdv: BlockSizes
    q_splits: int  # programs sharing the query axis of the dk/dv kernel
    k_splits: int  # programs sharing the key axis of the fwd and dq kernels
    head_dim: int  # head dim of the kernels' tiles (Triton: a power of 2 >= 16, >= the real one)
    scale: float
    rate: float
    interpret: Any = False


def split(num_blocks: int, splits: int) -> tuple[int, int]:
    """(splits, blocks per split) with no empty split."""
    per = -(-num_blocks // max(1, min(splits, num_blocks)))
    return -(-num_blocks // per), per


def auto_splits(programs: int, num_blocks: int, target: int) -> int:
    """Split the streamed axis until about `target` programs run at once."""
    return max(1, min(num_blocks, -(-target // programs)))


def cdiv(x: int, m: int) -> int:
    return -(-x // m)


def round_up(x: int, m: int) -> int:
    return cdiv(x, m) * m


# ---------------------------------------------------------------- per-tile math (in kernels)

def scores(q, k, key_ok, scale):
    """Scaled float32 q @ k.T with masked keys at NEG. key_ok: [bq, bk] bool."""
    s = lax.dot_general(q, k, _TRANS_B, preferred_element_type=jnp.float32) * scale
    return jnp.where(key_ok, s, NEG)


def keep_mask(plan, seed, b, h, row0, col0, shape):
    """The reference's dropout hash for the tile at (row0, col0), or None without dropout."""
    if plan.rate == 0.0:
        return None
    rows = row0 + lax.broadcasted_iota(jnp.int32, shape, 0)
    cols = col0 + lax.broadcasted_iota(jnp.int32, shape, 1)
    return dropout_lib.keep_mask(seed, b, h, rows, cols, plan.rate)


def online_softmax_step(m, l, acc, s, key_ok, v, keep):
    """One key block of the streaming softmax. m, l: [bq, 1]; acc: [bq, D] float32.

    l sums the probabilities before dropout (the reference normalises, then drops)."""
    m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
    alpha = jnp.exp(m - m_new)
    p = jnp.where(key_ok, jnp.exp(s - m_new), 0.0)  # where: m_new is NEG while no key is real
    l = alpha * l + jnp.sum(p, axis=1, keepdims=True)
    if keep is not None:
        p = jnp.where(keep, p, 0.0)
    acc = alpha * acc + dot(p, v)
    return m_new, l, acc


def finish_softmax(plan, m, l, acc):
    """(normalised output, row logsumexp); rows with no real key get 0 and lse NEG."""
    real = l > 0.0
    l_safe = jnp.where(real, l, 1.0)
    out = jnp.where(real, acc / (l_safe * (1.0 - plan.rate)), 0.0)
    return out, jnp.where(real, m + jnp.log(l_safe), NEG)


def backward_tile(plan, s, key_ok, lse, v, do, delta, keep):
    """(dropped probabilities, dS) of one tile, recomputed from the logsumexp.

    With Z the dropout keep/(1-rate) mask, O = (P*Z) V, and delta = rowsum(dO * O) equals
    rowsum(P * Z * dO V^T), so dS = P * (Z * dO V^T - delta)."""
    p = jnp.where(key_ok, jnp.exp(s - lse), 0.0)
    dp = lax.dot_general(do, v, _TRANS_B, preferred_element_type=jnp.float32)
    if keep is not None:
        inv = 1.0 / (1.0 - plan.rate)
        dp = jnp.where(keep, dp * inv, 0.0)
        pd = jnp.where(keep, p * inv, 0.0)
    else:
        pd = p
    return pd, p * (dp - delta)


def dot(a, b):
    """a @ b with float32 accumulation, the float32 tile `a` cast to b's input dtype."""
    return lax.dot(a.astype(b.dtype), b, preferred_element_type=jnp.float32)


def key_ok(mask_tile, shape):
    """[1, bk] int32 key mask tile, read as 0 past the end of the keys -> [bq, bk] bool
    (broadcast as int32: Mosaic-friendly)."""
    return jnp.broadcast_to(mask_tile, shape) != 0


@contextlib.contextmanager
def abstract_gpu(arch: int = 90):
    """Lowers kernels for a GPU of compute capability arch/10 that is not here (jax.export):
    from JAX 0.11 the Triton and Mosaic GPU lowerings ask the current mesh's abstract device
    what the GPU is."""
    kind, cores = GPU_KINDS[arch]
    device = jax.sharding.AbstractDevice(device_kind=kind, num_cores=cores, platform="gpu")
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((), (),
                                                                  abstract_device=device)):
        yield


# ------------------------------------------------------------------------- the custom_vjp

class KernelBackend(Protocol):
    """What a kernel backend module (pallas_gpu, pallas_tpu) provides this front end: the plan
    of a call, then the three kernels (shapes in the module docstring above)."""

    def make_plan(self, kind: str, b: int, h: int, lq: int, lk: int, d: int, dtype: Any,
                  rate: float, interpret: Any, *, block_q: int | None, block_k: int | None,
                  num_splits: int | None) -> Plan: ...

    def fwd(self, plan: Plan, q, k, v, mask, seed) -> tuple[jax.Array, jax.Array]: ...

    def dq(self, plan: Plan, q, k, v, mask, seed, do, lse, delta) -> jax.Array: ...

    def dkdv(self, plan: Plan, q, k, v, mask, seed, do, lse, delta
             ) -> tuple[jax.Array, jax.Array]: ...


def entry_points(backend: KernelBackend):
    """(pack_attention, unpack_attention) of a backend module."""
    def pack_attention(q, k, v, key_mask, *, dropout_rate=0.0, dropout_rng=None,
                       dropout_seed=None, interpret=False, block_q=None, block_k=None,
                       num_splits=None):
        """Pack: q = P side [batch, l, heads, head_dim]; k, v = X side [batch, n, heads,
        head_dim]; key_mask [batch, n]. block_q/block_k/num_splits override the plan's
        heuristics (tests, tuning); interpret: Pallas interpret mode (on TPU, True or a
        pltpu.InterpretParams)."""
        return attention(backend, "pack", q, k, v, key_mask, dropout_rate=dropout_rate,
                         dropout_rng=dropout_rng, dropout_seed=dropout_seed, interpret=interpret,
                         block_q=block_q, block_k=block_k, num_splits=num_splits)

    def unpack_attention(q, k, v, key_mask, *, dropout_rate=0.0, dropout_rng=None,
                         dropout_seed=None, interpret=False, block_q=None, block_k=None,
                         num_splits=None):
        """Unpack: q = X side [batch, n, heads, head_dim]; k, v = packed side [batch, l, heads,
        head_dim]; key_mask [batch, l]. The whole key side is one block unless block_k says
        less."""
        return attention(backend, "unpack", q, k, v, key_mask, dropout_rate=dropout_rate,
                         dropout_rng=dropout_rng, dropout_seed=dropout_seed, interpret=interpret,
                         block_q=block_q, block_k=block_k, num_splits=num_splits)

    return pack_attention, unpack_attention


def attention(backend: KernelBackend, kind, q, k, v, key_mask, *, dropout_rate, dropout_rng,
              dropout_seed, interpret, block_q, block_k, num_splits):
    """Shared front end of the kernel backends: checks, seed, plan, custom_vjp call.

    kind: "pack" (short q, long k/v) or "unpack" (long q, short k/v)."""
    reference.check_shapes(q, k, v, key_mask)
    dropout_rate = max(float(dropout_rate), 0.0)
    dropout_lib.keep_threshold(dropout_rate)  # validates the rate
    uint_seed = dropout_lib.resolve_seed(dropout_rate, dropout_rng, dropout_seed)
    # Kernels read the seed as int32 (Mosaic scalar memory); same bits as the uint32 seed.
    seed = lax.bitcast_convert_type(uint_seed, jnp.int32).reshape(1)
    b, lq, h, d = q.shape
    plan = backend.make_plan(kind, b, h, lq, k.shape[1], d, q.dtype, float(dropout_rate),
                             interpret,
                             block_q=block_q, block_k=block_k, num_splits=num_splits)
    return _attention(backend, plan, q, k, v, key_mask, seed)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _attention(backend, plan, q, k, v, key_mask, seed):
    return _forward(backend, plan, q, k, v, key_mask, seed)[0]


def _forward(backend, plan, q, k, v, key_mask, seed):
    o, lse = backend.fwd(plan, q, k, v, key_mask.astype(jnp.int32), seed)
    if o.shape[0] > 1:  # split-K: combine partial (out, lse) of each key range
        m = jnp.max(lse, axis=0)
        w = jnp.exp(lse - m)  # [S, B, H, Lq, 1]; empty partials (NEG) get 0 unless all are
        total = jnp.sum(w, axis=0)
        lse = m + jnp.log(total)
        w = jnp.transpose(w / total, (0, 1, 3, 2, 4))  # -> [S, B, Lq, H, 1]
        o = jnp.sum(w * o, axis=0)
    else:
        o, lse = o[0], lse[0]
    return o.astype(q.dtype), lse


def _fwd_rule(backend, plan, q, k, v, key_mask, seed):
    out, lse = _forward(backend, plan, q, k, v, key_mask, seed)
    return out, (q, k, v, key_mask, seed, out, lse)


def _bwd_rule(backend, plan, res, g):
    q, k, v, key_mask, seed, out, lse = res
    do = g.astype(q.dtype)
    delta = jnp.sum(g.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # [B, Lq, H]
    delta = jnp.transpose(delta, (0, 2, 1))[..., None]  # [B, H, Lq, 1], as the lse
    mask = key_mask.astype(jnp.int32)
    dq = backend.dq(plan, q, k, v, mask, seed, do, lse, delta)
    dk, dv = backend.dkdv(plan, q, k, v, mask, seed, do, lse, delta)
    total = lambda x, like: (jnp.sum(x, axis=0) if x.shape[0] > 1 else x[0]).astype(like.dtype)
    return total(dq, q), total(dk, k), total(dv, v), None, None


_attention.defvjp(_fwd_rule, _bwd_rule)
