"""Luna pack/unpack attention as Mosaic GPU kernels (Hopper: TMA copies, wgmma), JAX >= 0.11.

Same signature and numerics as reference.py and the same three kernels behind the shared
custom_vjp front end (_pallas_common) as pallas_gpu.py (Triton) and pallas_tpu.py, written
with plgpu.kernel: TMA copies into shared memory (SMEM) completed on barriers, wgmma with
float32 accumulators, emit_pipeline to prefetch the next blocks of the long side while the
tensor cores work on the current one.

One side of Luna's attention is long (n: the keys in pack, the queries in unpack) and one is
short (l <= 256). wgmma's row dimension M comes in 64s while l is often 16, so the short side
never takes the rows: every kernel forms its score tile as [R long rows, C short columns]
(pack: S^T = K Q^T; unpack: S = Q K^T), the short side in N. Results that live on the long
side ([R, D] per block) come out of wgmma as usual; results that live on the short side are
accumulated transposed, [D, C], with the head dim as M (the tile goes through SMEM as the B
operand, the long block transposed as A), and transposed back outside the kernel, where the
short side is small. So the kernels come in two families:

  per block     one program per (batch*head, split of the long side): the whole short side
                sits in SMEM; each long block produces its rows of the output, the short side
                walked in chunks of C columns (unpack fwd: an online softmax over the chunks).
                unpack fwd (out, lse), unpack dq, pack dk/dv.
  accumulating  one program per (batch*head, short chunk of C columns, split of the long
                side): streams its long blocks and accumulates [D, C]; splits of the long side
                are partial results the front end combines (pack: split-K).
                pack fwd (online softmax over the key blocks), pack dq, unpack dk/dv.

Ragged lengths: TMA reads past an array's end as zeros and drops writes past it, so a
partial last block, the short side rounded up to whole chunks and even a whole block past the
end (the last split may be short) need no masks but the keys', and the int32 key mask reads as
0 there, which makes those keys invalid. Mosaic's TMA into wgmma's tiled SMEM layout copies
whole 8-row tiles of an array, so a long side whose length is no multiple of 8 (a CLS token
makes 4,001) comes into SMEM in plain rows and is retiled there (per-block family: read into
registers as wgmma's A operand), with no copy in HBM. The copies that remain are small and
only for lengths the recipes never have: the short side (l <= 256 rows) with zero rows up to
a multiple of 8, and rows of the key mask and of the query statistics (lse, delta), which TMA
needs with 16-byte strides, up to a multiple of 4.

Inputs are bfloat16, float16 or float32. wgmma multiplies 16-bit operands into float32 (its
only 32-bit type, TF32, can be neither transposed nor read from registers, and keeps 10
mantissa bits), so float32 runs as split bfloat16: each float32 operand x is `pieces` bfloat16
arrays, x1 = bf16(x), x2 = bf16(x - x1), x3 = bf16(x - x1 - x2), each 8 more of x's 24
significant bits, and a product sums the piece products above float32's rounding (i + j <
pieces): under jax.default_matmul_precision("highest") three pieces, six wgmmas per product,
float32 to its last bits (relative errors near 3e-7 in the tests, as IEEE dots); by default two,
three wgmmas, 2^-17 per operand (about 7e-6; more than TF32, XLA's default on a GPU); under
"bfloat16" one. The inputs are split once, outside the kernels (their pieces are new arrays,
made in whole 8-row tiles on both sides, so no plain SMEM rows); register tiles (probabilities,
dS) inside, as they are made. The pieces take up to 1.5x the SMEM of float32: where the blocks
above do not fit, C halves (down to 16), then the long side gets one TMA stage instead of two,
and the per-block family takes the short side in parts (_per_block).
"""

from __future__ import annotations

import dataclasses
import math
import sys

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from luna_lra.ops import _pallas_common as common
from luna_lra.ops import dropout as dropout_lib

if not hasattr(plgpu, "InterpretGPUParams"):  # the Mosaic GPU API these kernels are written for
    raise ImportError(f"luna_lra.ops.pallas_mgpu needs JAX >= 0.11 (Mosaic GPU with GPU "
                      f"interpret mode); this is jax {jax.__version__}")

NEG = common.NEG
DTYPES = (jnp.bfloat16, jnp.float16, jnp.float32)
ROWS = 64  # long rows of a block: wgmma's M for one warpgroup
_TARGET_PROGRAMS = 264  # two waves of one CTA per SM on a 132-SM H100; split below that
_STAGES = 2  # TMA pipelining depth over the long side
SMEM_BYTES = 227 * 1024  # shared memory a kernel may have on sm_90
_RESERVED = 4096  # of it, what Mosaic adds to our buffers (barriers, alignment; measured)
_PARAMS = plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Warpgroup)


# pack_attention(q, k, v, key_mask, *, dropout_rate, dropout_rng, dropout_seed, interpret,
# block_q, block_k, num_splits) and unpack_attention(...): see _pallas_common.entry_points.
pack_attention, unpack_attention = common.entry_points(sys.modules[__name__])


@dataclasses.dataclass(frozen=True)
class Plan(common.Plan):
    """common.Plan plus which side is long. Per kernel, BlockSizes(block_q, block_k) hold the
    long block's rows R and the short chunk's columns C (pack: (C, R); unpack: (R, C)); the
    long side is split into k_splits (pack) or q_splits (unpack) ranges, the other is 1."""

    kind: str = "pack"
    pieces: int = 1  # bfloat16 pieces of a float32 operand (module docstring); 16-bit: 1
    stages: int = _STAGES  # TMA buffers of each long array: 1 where 2 do not fit in SMEM


def make_plan(kind, b, h, lq, lk, d, dtype, rate, interpret, *, block_q, block_k, num_splits):
    if jnp.dtype(dtype) not in map(jnp.dtype, DTYPES):
        raise ValueError(f"the Mosaic GPU kernels take bfloat16, float16 or float32 inputs, "
                         f"got {jnp.dtype(dtype).name}")
    if d % 16:
        raise ValueError(f"the Mosaic GPU kernels need head_dim a multiple of 16, got {d}")
    long, short = (lk, lq) if kind == "pack" else (lq, lk)
    if short > 256:
        raise ValueError(f"the Mosaic GPU kernels take a short side of at most 256 rows (one "
                         f"TMA box), got {short}: use the Triton kernels (impl='triton')")
    rows = (block_k if kind == "pack" else block_q) or ROWS
    cols = block_q if kind == "pack" else block_k
    if rows % 64:
        raise ValueError(f"long-side block of {rows} rows: wgmma needs a multiple of 64")
    if cols is not None and (cols % 16 or cols > 256):
        raise ValueError(f"short-side chunk of {cols} columns: needs a multiple of 16, <= 256")
    pieces = _float32_pieces() if jnp.dtype(dtype) == jnp.float32 else 1
    budget = SMEM_BYTES - _RESERVED
    smem = lambda c, stages: _accumulating_smem(
        c, rows, d, pieces, stages + (not _long_tiled(long, dtype)))
    stages = _STAGES if smem(16, _STAGES) <= budget else 1  # 1 where even C = 16 needs it

    def chunk(registers):
        """C: as many columns as `registers` float32 accumulator elements allow (one warpgroup,
        128 threads of at most 255 registers: a [D, C] accumulator of 8,192 elements is 64 per
        thread beside the [R, C] tiles, so C = 8192 / D, 128 at head_dim 64 and 64 at 128,
        half that for dk/dv's two), halved until the SMEM fits."""
        if cols:
            return cols
        c = max(16, min(common.round_up(short, 16), registers // d // 16 * 16))
        while c > 16 and smem(c, stages) > budget:
            c = max(16, c // 32 * 16)
        return c

    blocks = lambda c: common.BlockSizes(c, rows) if kind == "pack" else common.BlockSizes(rows, c)
    splits = common.split(common.cdiv(long, rows), num_splits or common.auto_splits(
        b * h, common.cdiv(long, rows), _TARGET_PROGRAMS))[0]
    if interpret is True:
        interpret = plgpu.InterpretGPUParams()
    return Plan(fwd=blocks(chunk(8192)), dq=blocks(chunk(8192)), dkdv=blocks(chunk(4096)),
                q_splits=splits if kind == "unpack" else 1,
                k_splits=splits if kind == "pack" else 1, head_dim=d, scale=d**-0.5,
                rate=rate, interpret=interpret or False, kind=kind, pieces=pieces, stages=stages)


def _accumulating_smem(c, rows, d, pieces, long_copies):
    """SMEM bytes of an accumulating-family kernel (module docstring) at its most, C columns:
    two long arrays in long_copies buffers each (the pipeline's stages, and the tiled copies of
    plain rows), two short chunks and two [R, C] tiles (float32: in pieces), two float32
    [D, C] outputs."""
    return 4 * pieces * (long_copies * rows * d + c * d + rows * c) + 8 * d * c


# Pieces of a float32 operand by jax.default_matmul_precision: two (bfloat16 x 3, 2^-17 per
# operand, finer than TF32, XLA's default on a GPU) unless it asks for less or more
_PRECISION_PIECES = {"bfloat16": 1, "BF16_BF16_F32": 1, "highest": 3, "float32": 3,
                     "F32_F32_F32": 3, "BF16_BF16_F32_X6": 3, "BF16_BF16_F32_X9": 3}


def _float32_pieces():
    """bfloat16 pieces per float32 operand at the current matmul precision (module docstring):
    "highest" takes three (bfloat16 x 6 products), "bfloat16" one, the others two (x 3)."""
    return _PRECISION_PIECES.get(jax.config.jax_default_matmul_precision, 2)


# ------------------------------------------------------------------------------ layout

def _rows_cols(plan, blocks):
    """(R, C) of a kernel's BlockSizes."""
    return ((blocks.block_k, blocks.block_q) if plan.kind == "pack"
            else (blocks.block_q, blocks.block_k))


def _swizzle(cols, d, dtype):
    """The SMEM swizzle (bytes) of every wgmma operand of a kernel: wgmma takes one for A and
    B, and its tiles of swizzle/itemsize columns must divide each SMEM operand's minor and
    contraction dimensions (C and D; R is a multiple of 64)."""
    size = jnp.dtype(dtype).itemsize
    return next(s for s in (128, 64, 32) if cols % (s // size) == 0 and d % (s // size) == 0)


def _tiled(shape, dtype, swizzle):
    """An SMEM buffer in wgmma's layout: tiles of 8 rows by swizzle bytes, swizzled."""
    return plgpu.SMEM(shape, dtype, transforms=_tiling(dtype, swizzle))


def _tiling(dtype, swizzle):
    return (plgpu.TilingTransform((8, swizzle // jnp.dtype(dtype).itemsize)),
            plgpu.SwizzleTransform(swizzle))


def _plain(shape, dtype):
    """An SMEM buffer in rows, for TMA to and from arrays whose row count is no multiple of
    8: Mosaic copies into tiled SMEM only whole 8-row tiles of an array."""
    return plgpu.SMEM(shape, dtype, transforms=_row_tiling(shape[-1]))


def _row_tiling(cols):
    return (plgpu.TilingTransform((1, cols)),)


def _retile(pairs):
    """Plain SMEM -> wgmma's tiled layout, through registers ([64k, D] blocks: Mosaic finds
    no register layout for fewer rows); visible to wgmma after."""
    for plain, tiled in pairs:
        tiled[...] = plgpu.load(plain, optimized=False)
    plgpu.commit_smem()


def _row_pad(x, multiple, axis=-1):
    """x with zeros appended along `axis` up to a multiple of `multiple` (x if it is one)."""
    pad = -x.shape[axis] % multiple
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return jnp.pad(x, widths) if pad else x


# ------------------------------------------------------------------- per-tile math (in kernels)

def _pieces(x, dtype, count):
    """x (a float32 register tile, or an input array outside the kernels) as `count` wgmma
    operands in dtype, each the rounding of what the ones before leave of x (module
    docstring)."""
    pieces = [x.astype(dtype)]
    for _ in range(count - 1):
        x = x - pieces[-1].astype(jnp.float32)
        pieces.append(x.astype(dtype))
    return tuple(pieces)


def _t(pieces):
    """The pieces of an SMEM operand, transposed."""
    return tuple(x.T for x in pieces)


def _bcast(x, shape, axis):
    """A vector along `axis` of `shape` (Mosaic GPU broadcasts nothing implicitly)."""
    return lax.broadcast_in_dim(x, shape, [axis])


def _where(cond, x, fill):
    return jnp.where(cond, x, jnp.full_like(x, fill))


def _mm(a, b, shape, acc=None):
    """acc + a @ b on the tensor cores (wgmma), float32. a, b: the pieces of each operand
    (module docstring: one, or float32's pieces), a's SMEM refs or 16-bit register tiles,
    b's SMEM refs. Returns once the product is done (its SMEM operands may then be reused)."""
    terms = max(len(a), len(b))
    products = [(x, y) for i, x in enumerate(a) for j, y in enumerate(b) if i + j < terms]

    def run(acc_ref):
        for x, y in reversed(products):  # the small ones first
            plgpu.wgmma(acc_ref, x, y)
    init = jnp.zeros(shape, jnp.float32) if acc is None else acc
    return pl.run_state(run)(plgpu.ACC.init(init))


class _Tile:
    """Masks of one [R long rows, C short columns] score tile whose first element is
    (row0, col0): key validity from the key mask, and the dropout hash of
    (seed, b, h, query, key)."""

    def __init__(self, plan, seed, b, h, row0, col0, shape, key_mask):
        self.plan, self.shape = plan, shape
        self.key_axis = 0 if plan.kind == "pack" else 1  # pack: keys are the long rows
        self.q_axis = 1 - self.key_axis
        self.ok = _bcast(key_mask != 0, shape, self.key_axis)
        self.keep = None
        if plan.rate > 0.0:
            rows = row0 + lax.broadcasted_iota(jnp.int32, shape, 0)
            cols = col0 + lax.broadcasted_iota(jnp.int32, shape, 1)
            queries, keys = (cols, rows) if plan.kind == "pack" else (rows, cols)
            self.keep = dropout_lib.keep_mask(seed, b, h, queries, keys, plan.rate)

    def per_query(self, x):
        """A per-query vector broadcast over the tile."""
        return _bcast(x, self.shape, self.q_axis)

    def drop(self, x):
        """x with the dropped elements 0 and the kept ones scaled by 1 / (1 - rate)."""
        if self.keep is None:
            return x
        return _where(self.keep, x * (1.0 / (1.0 - self.plan.rate)), 0.0)


def _online_step(tile, carry, s, product):
    """One tile of the streaming softmax over the keys (as common.online_softmax_step).
    carry: (m, l) per query and acc, whose query axis is the tile's; product(p) is p @ V in
    acc's orientation. l sums the probabilities before dropout (the reference normalises,
    then drops)."""
    m, l, acc = carry
    s = _where(tile.ok, s, NEG)
    m_new = jnp.maximum(m, jnp.max(s, axis=tile.key_axis))
    alpha = jnp.exp(m - m_new)
    p = _where(tile.ok, jnp.exp(s - tile.per_query(m_new)), 0.0)  # m_new is NEG while no key is
    l = alpha * l + jnp.sum(p, axis=tile.key_axis)
    if tile.keep is not None:
        p = _where(tile.keep, p, 0.0)
    return m_new, l, _bcast(alpha, acc.shape, tile.q_axis) * acc + product(p)


def _finish(plan, q_axis, m, l, acc):
    """(output, logsumexp) per query; a query with no real key gets 0 and NEG."""
    real = l > 0.0
    safe = _where(real, l, 1.0)
    out = acc / _bcast(safe * (1.0 - plan.rate), acc.shape, q_axis)
    return (_where(_bcast(real, acc.shape, q_axis), out, 0.0),
            _where(real, m + jnp.log(safe), NEG))


def _backward_tile(tile, s, lse, delta, dp):
    """(dropped probabilities, dS) of a tile from its scaled scores, the queries' lse and
    delta and dP = dO V^T (as common.backward_tile). Queries past the end read q = dO = 0 and
    lse = delta = 0: P = 1 on real keys there, but dP = 0 and dS = 0, and dO = 0 in dV."""
    p = _where(tile.ok, jnp.exp(s - tile.per_query(lse)), 0.0)
    return tile.drop(p), p * (tile.drop(dp) - tile.per_query(delta))


# --------------------------------------------------------------------------- the kernels
#
# Roles: the score tile is long1 @ short1^T and dP is long2 @ short2^T, with (long1, long2) =
# (k, v) and (short1, short2) = (q, dO) in pack, the other way round in unpack. Row vectors of
# the long side (pack: the key mask; unpack: lse, delta) stream with its blocks; those of the
# short side come with it. Kernel bodies see one dict of refs (_call).

def _call(plan, body, grid, names, ins, outs, scratch):
    """plgpu.kernel over named arrays: body(refs) gets one dict of the input, output and
    scratch refs; returns the outputs by name."""
    in_names, out_names = list(ins), list(outs)

    def kernel(*refs, **scratch_refs):
        body(dict(zip(in_names + out_names, refs), **scratch_refs))

    res = plgpu.kernel(kernel, out_type=[outs[n] for n in out_names], scratch_types=scratch,
                       grid=grid, grid_names=names, compiler_params=_PARAMS,
                       interpret=plan.interpret or None)(*ins.values())
    return dict(zip(out_names, res))


def _geometry(plan, blocks, q, k):
    (b, lq, h, d), lk = q.shape, k.shape[1]
    rows, cols = _rows_cols(plan, blocks)
    long, short = (lk, lq) if plan.kind == "pack" else (lq, lk)
    splits, per = common.split(common.cdiv(long, rows),
                               plan.k_splits if plan.kind == "pack" else plan.q_splits)
    names = (("k", "v"), ("q", "do")) if plan.kind == "pack" else (("q", "do"), ("k", "v"))
    dtype = jnp.dtype(jnp.bfloat16) if q.dtype == jnp.float32 else q.dtype  # of the operands
    return dict(b=b, h=h, d=d, long=long, short=short, rows=rows, cols=cols, splits=splits,
                per=per, nc=common.cdiv(short, cols), swizzle=_swizzle(cols, d, dtype),
                dtype=dtype, pieces=plan.pieces, stages=plan.stages, long_names=names[0],
                short_names=names[1],
                long_tiled=_long_tiled(long, q.dtype))


def _plain_out(g):
    """Whether the per-block family's [R, D] outputs go out through plain SMEM rows: when
    the long side's length is no multiple of 8 (_plain)."""
    return g["long"] % 8 != 0


def _long_tiled(long, dtype):
    """Whether the long blocks come into SMEM in wgmma's tiles (else in plain rows: _plain):
    a length that is a multiple of 8, or float32, whose pieces _inputs makes as such."""
    return long % 8 == 0 or jnp.dtype(dtype) == jnp.float32


_OPERANDS = ("q", "k", "v", "do", "p", "ds")  # arrays and tiles that wgmma multiplies


def _piece_names(g, names):
    """The arrays or buffers behind `names`: a wgmma operand's pieces (float32: n, n_1, ...)."""
    return [m for n in names for m in ((n, *(f"{n}_{i}" for i in range(1, g["pieces"])))
                                       if n in _OPERANDS else (n,))]


def _ids(num_heads):
    bh = lax.axis_index("bh")
    return lax.div(bh, num_heads), lax.rem(bh, num_heads)


def _vec_at(ref, b, h):
    """Row b of a [B, L] key mask or row (b, h) of a [B, H, L] statistic."""
    return ref.at[b] if len(ref.shape) == 2 else ref.at[b, h]


def _load_short(g, r, b, h, at, names, vec_names):
    """TMA the short side's rows `at` (all, or one chunk) into SMEM and wait."""
    copies = ([(r[n].at[b, at, h], r["s_" + n]) for n in names]
              + [(_vec_at(r[n], b, h).at[at], r["s_" + n]) for n in vec_names])
    for i, (src, dst) in enumerate(copies):
        plgpu.copy_gmem_to_smem(src, dst, r["barriers"].at[i])
    for i in range(len(copies)):
        plgpu.barrier_wait(r["barriers"].at[i])


def _short_scratch(g, ins, names, vec_names, rows):
    return dict({"s_" + n: _tiled((rows, g["d"]), g["dtype"], g["swizzle"]) for n in names},
                **{"s_" + n: plgpu.SMEM((rows,), ins[n].dtype) for n in vec_names},
                barriers=plgpu.Barrier(num_barriers=len(names) + len(vec_names)))


def _long_pipeline(g, r, b, h, s, names, vec_names, step, init_carry=None):
    """emit_pipeline over the long blocks of split s (TMA prefetch of the next blocks while
    `step` works on one). step(block index, {name: wgmma operand}, {name: [R] value},
    [carry]); the operands are tiled SMEM blocks, or when the long side's length is no
    multiple of 8 and the blocks come in plain rows: their tiled copies in r["l_" + name]
    (the accumulating family, which transposes them) or register arrays (the per-block family
    uses them as wgmma's A only)."""
    rows, d, tiled = g["rows"], g["d"], g["long_tiled"]
    block = lambda j: s * g["per"] + j
    specs = ([plgpu.BlockSpec((rows, d), lambda j: (block(j), 0),
                              transforms=_tiling(g["dtype"], g["swizzle"]) if tiled
                              else _row_tiling(d)) for _ in names]
             + [plgpu.BlockSpec((rows,), lambda j: (block(j),)) for _ in vec_names])

    def body(idx, *refs):
        smems, vecs = refs[:len(names)], refs[len(names):len(names) + len(vec_names)]
        if not tiled:
            copies = [r.get("l_" + n) for n in names]
            if copies[0] is None:
                smems = [plgpu.load(x, optimized=False) for x in smems]
            else:
                _retile(zip(smems, copies))
                smems = copies
        return step(block(idx[0]), dict(zip(names, smems)),
                    {n: v[...] for n, v in zip(vec_names, vecs)}, *refs[len(specs):])

    pipeline = plgpu.emit_pipeline(body, grid=(g["per"],), in_specs=specs,
                                   max_concurrent_steps=g["stages"], init_carry=init_carry)
    return pipeline(*[r[n].at[b, :, h] for n in names], *[_vec_at(r[n], b, h) for n in vec_names])


def _smem_bytes(g, scratch, long_names, lvec_names):
    """SMEM of a kernel: its scratch and the pipeline's buffers (stages) of each long block
    (Mosaic's lowering counts it exactly and refuses more than SMEM_BYTES)."""
    size = lambda ref: math.prod(ref.shape) * jnp.dtype(ref.dtype).itemsize
    block = g["rows"] * (len(long_names) * g["d"] * g["dtype"].itemsize + len(lvec_names) * 4)
    return sum(size(x) for x in scratch.values() if hasattr(x, "dtype")) + g["stages"] * block


def _long_scratch(g, names):
    """Tiled copies of the long blocks when they come in plain rows (see _plain)."""
    return {} if g["long_tiled"] else {"l_" + n: _tiled((g["rows"], g["d"]), g["dtype"],
                                                        g["swizzle"]) for n in names}


def _store(copies):
    """(value, staging SMEM, gmem, plain): each value through its staging buffer (plain: in
    rows, see _plain) and a TMA store; a buffer is written once the last store has read it."""
    for value, smem, gmem, plain in copies:
        plgpu.wait_smem_to_gmem(0, wait_read_only=True)
        plgpu.store(smem, value.astype(smem.dtype), optimized=not plain)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(smem, gmem)


@dataclasses.dataclass
class _Block:
    """What a kernel body sees of one long block: SMEM refs of the block (`long`) and of the
    short side (`short`: whole or a part, in `chunks` chunks, or one chunk), their row
    vectors (`long_vec`: values; `short_vec`: SMEM refs), and the masks of its tiles
    (`tile`)."""

    plan: Plan
    g: dict
    seed: jax.Array
    b: jax.Array
    h: jax.Array
    row0: jax.Array
    col0: jax.Array
    long: dict
    long_vec: dict
    short: dict
    short_vec: dict
    chunks: int = 1  # of the short side in SMEM

    def tile(self, key_mask, c=0):
        """The tile against chunk c of the short side."""
        return _Tile(self.plan, self.seed, self.b, self.h, self.row0,
                     self.col0 + c * self.g["cols"], (self.g["rows"], self.g["cols"]), key_mask)

    def chunk(self, name, c=0):
        """Chunk c of a short array (its pieces: SMEM refs [C, D]) or row vector (its [C]
        values)."""
        at = pl.ds(c * self.g["cols"], self.g["cols"])
        if name in self.short:
            return tuple(self.short[n].at[at] for n in _piece_names(self.g, [name]))
        return self.short_vec[name].at[at][...]

    def block(self, name):
        """The long block of an array: its pieces (SMEM refs or register tiles [R, D])."""
        return tuple(self.long[n] for n in _piece_names(self.g, [name]))

    def pieces(self, x):
        """A float32 register tile [R, C] as wgmma's A operand."""
        return _pieces(x, self.g["dtype"], self.g["pieces"])

    def scores(self, c=0):
        """The scaled scores long1 @ short1^T [R, C] against chunk c, and dP = long2 @
        short2^T (None in the forward)."""
        (l1, l2), (s1, s2) = self.g["long_names"], self.g["short_names"]
        shape = (self.g["rows"], self.g["cols"])
        s = _mm(self.block(l1), _t(self.chunk(s1, c)), shape) * self.plan.scale
        if l2 in self.long and s2 in self.short:
            return s, _mm(self.block(l2), _t(self.chunk(s2, c)), shape)
        return s, None


def _per_block(plan, g, ins, short_names, svec_names, long_names, lvec_names, outs, block_fn):
    """The per-block family (module docstring), grid (batch*head, split). block_fn(blk) ->
    {output name: [R, D] value, and "lse": [R] value when an output}. The outputs come
    stacked over parts of the short side, [P, ...]: one part, unless the whole short side
    does not fit in SMEM (float32's pieces at the largest l and head_dim): then parts of whole
    chunks, their outputs partial results (key parts: (out, lse); query parts: sums) that
    the front end combines as it does splits."""
    rows, d, cols = g["rows"], g["d"], g["cols"]
    short_names, long_names = _piece_names(g, short_names), _piece_names(g, long_names)
    staged = [n for n in outs if n != "lse"]
    # One staging tile for the [R, D] outputs: pack dk/dv at l = 256, head_dim 128 fits
    # H100's 227 KiB of SMEM only so (211 KiB).
    out_dtype = outs[staged[0]].dtype
    stage = (_plain((rows, d), out_dtype) if _plain_out(g)
             else _tiled((rows, d), out_dtype, g["swizzle"]))
    scratch = lambda whole: dict(
        _short_scratch(g, ins, short_names, svec_names, whole), o_stage=stage,
        **({"o_lse": plgpu.SMEM((rows,), jnp.float32)} if "lse" in outs else {}))
    per = g["nc"]  # chunks per part
    while per > 1 and (_smem_bytes(g, scratch(per * cols), long_names, lvec_names)
                       > SMEM_BYTES - _RESERVED):
        per = common.cdiv(per, 2)
    parts = []
    for first in range(0, g["nc"], per):
        # the part in whole chunks; TMA reads zeros past the short side's end
        whole, at = min(per, g["nc"] - first) * cols, slice(first * cols, (first + per) * cols)
        short = (*short_names, *svec_names)
        part = ins if per == g["nc"] else {  # arrays [B, L, H, D], vectors [B, (H,) L]
            n: (x[:, at] if x.ndim == 4 else x[..., at]) if n in short else x
            for n, x in ins.items()}
        parts.append(_call(plan, _per_block_body(plan, g, short_names, svec_names, long_names,
                                                 lvec_names, outs, block_fn, first * cols, whole),
                           (g["b"] * g["h"], g["splits"]), ("bh", "s"), part, outs,
                           scratch(whole)))
    return {n: jnp.stack([res[n] for res in parts]) for n in outs}


def _per_block_body(plan, g, short_names, svec_names, long_names, lvec_names, outs, block_fn,
                    col0, whole):
    """The body of a _per_block kernel over the short side's columns col0 to col0 + whole."""
    rows = g["rows"]
    staged = [n for n in outs if n != "lse"]

    def body(r):
        b, h = _ids(g["h"])
        s = lax.axis_index("s")
        # Traced, a slice past the array's end needs a dynamic start (a static one is
        # rejected, though TMA reads the rows past the end as zeros).
        _load_short(g, r, b, h, pl.ds(s * 0, whole), short_names, svec_names)
        seed = r["seed"][0]

        def step(i, longs, long_vecs):
            blk = _Block(plan, g, seed, b, h, i * rows, col0, longs, long_vecs,
                         {n: r["s_" + n] for n in short_names},
                         {n: r["s_" + n] for n in svec_names}, whole // g["cols"])
            res, at = block_fn(blk), pl.ds(i * rows, rows)
            _store([(res[n], r["o_stage"], r[n].at[b, at, h], _plain_out(g))
                    for n in staged]
                   + [(res[n], r["o_lse"], r[n].at[b, h, at], False) for n in outs
                      if n == "lse"])

        _long_pipeline(g, r, b, h, s, long_names, lvec_names, step)
        plgpu.wait_smem_to_gmem(0)

    return body


def _accumulating(plan, g, ins, short_names, svec_names, long_names, lvec_names, outs, tiles,
                  init, step_fn, finish_fn):
    """The accumulating family (module docstring), grid (batch*head, short chunk, split).
    step_fn(blk, refs, carry) -> carry, over the long blocks of the split; finish_fn(carry) ->
    {output name: [D, C] value, and "lse": [C] value}. tiles: the [R, C] tiles that go
    through SMEM as wgmma's B operand (_to_b). Outputs: float32 partials [splits, B, H, D,
    short rounded up to chunks] (lse: [splits, B, H, ...])."""
    rows, cols, d = g["rows"], g["cols"], g["d"]
    short_names, long_names = _piece_names(g, short_names), _piece_names(g, long_names)

    def body(r):
        b, h = _ids(g["h"])
        c, s = lax.axis_index("c"), lax.axis_index("s")
        at = pl.ds(c * cols, cols)
        _load_short(g, r, b, h, at, short_names, svec_names)
        seed = r["seed"][0]

        def step(i, longs, long_vecs, carry):
            blk = _Block(plan, g, seed, b, h, i * rows, c * cols, longs, long_vecs,
                         {n: r["s_" + n] for n in short_names},
                         {n: r["s_" + n] for n in svec_names})
            return step_fn(blk, r, carry)

        res = finish_fn(_long_pipeline(g, r, b, h, s, long_names, lvec_names, step, init()))
        _store([(res[n], r["o_" + n], r[n].at[s, b, h, at] if n == "lse" else
                 r[n].at[s, b, h, :, at], n != "lse") for n in outs])
        plgpu.wait_smem_to_gmem(0)

    scratch = dict(
        _short_scratch(g, ins, short_names, svec_names, cols), **_long_scratch(g, long_names),
        **{"o_" + n: plgpu.SMEM((cols,), jnp.float32) if n == "lse" else
           _plain((d, cols), jnp.float32) for n in outs},
        **{"t_" + n: _tiled((rows, cols), g["dtype"], g["swizzle"])
           for n in _piece_names(g, tiles)})
    return _call(plan, body, (g["b"] * g["h"], g["nc"], g["splits"]), ("bh", "c", "s"), ins,
                 outs, scratch)


def _to_b(blk, r, name, x):
    """A float32 tile [R, C] into its SMEM buffers (its pieces), as the B operand of a wgmma
    (the accumulating family's products on the short side)."""
    bufs = [r["t_" + n] for n in _piece_names(blk.g, [name])]
    for buf, piece in zip(bufs, blk.pieces(x)):
        buf[...] = piece
    plgpu.commit_smem()
    return tuple(bufs)


def _partial(g, vector=False):
    """float32 partial results [splits, B, H, D, short in whole chunks] (vector: no D)."""
    return jax.ShapeDtypeStruct((g["splits"], g["b"], g["h"], *(() if vector else (g["d"],)),
                                 g["nc"] * g["cols"]), jnp.float32)


def _from_partial(x, short):
    """[S, B, H, D, short'] -> [S, B, short, H, D] (one copy, of the short side)."""
    return jnp.transpose(x[..., :short], (0, 1, 4, 2, 3))


def _inputs(g, names, q, k, v, mask, seed, do=None, lse=None, delta=None):
    """The named kernel inputs: rows of the key mask and of the statistics with 16-byte
    strides for TMA, and the short side's arrays in whole 8-row tiles (Mosaic's TMA into
    tiled SMEM copies whole tiles of an array): both padded copies (small) only for lengths
    that need them, which the recipes' never do."""
    arrays = dict(seed=seed, mask=_row_pad(mask, 4))
    for n, x in dict(q=q, k=k, v=v, do=do).items():
        if x is not None:  # float32 pieces are new arrays: in whole tiles on both sides
            x = _row_pad(x, 8, axis=1) if n in g["short_names"] or x.dtype == jnp.float32 else x
            arrays.update(zip(_piece_names(g, [n]), _pieces(x, g["dtype"], g["pieces"])))
    if lse is not None:
        arrays.update(lse=_row_pad(lse[..., 0], 4), delta=_row_pad(delta[..., 0], 4))
    return {n: arrays[n] for n in ("seed", *_piece_names(g, names))}


# ------------------------------------------------------------------------------- forward

def fwd(plan, q, k, v, mask, seed):
    g = _geometry(plan, plan.fwd, q, k)
    init = lambda shape, n: (jnp.full((n,), NEG, jnp.float32), jnp.zeros((n,), jnp.float32),
                             jnp.zeros(shape, jnp.float32))
    if plan.kind == "unpack":  # per block: the whole key side, an online softmax over chunks
        def block_fn(blk):
            carry = init((g["rows"], g["d"]), g["rows"])
            for c in range(blk.chunks):
                s, _ = blk.scores(c)
                carry = _online_step(blk.tile(blk.chunk("mask", c), c), carry, s, lambda p: _mm(
                    blk.pieces(p), blk.chunk("v", c), (g["rows"], g["d"])))
            out, lse = _finish(plan, 0, *carry)
            return dict(o=out, lse=lse)

        outs = dict(o=jax.ShapeDtypeStruct(q.shape, q.dtype),
                    lse=jax.ShapeDtypeStruct((g["b"], g["h"], common.round_up(g["long"], 4)),
                                             jnp.float32))
        res = _per_block(plan, g, _inputs(g, ("k", "v", "mask", "q"), q, k, v, mask, seed),
                         ("k", "v"), ("mask",), ("q",), (), outs, block_fn)
        return res["o"], res["lse"][..., :g["long"], None]

    def step(blk, r, carry):  # pack: out^T [D, C] accumulates over the key blocks
        s, _ = blk.scores()
        return _online_step(blk.tile(blk.long_vec["mask"]), carry, s, lambda p: _mm(
            _t(blk.block("v")), _to_b(blk, r, "p", p), (g["d"], g["cols"])))

    def finish(carry):
        out, lse = _finish(plan, 1, *carry)
        return dict(o=out, lse=lse)

    res = _accumulating(plan, g, _inputs(g, ("q", "k", "v", "mask"), q, k, v, mask, seed), ("q",),
                        (), ("k", "v"), ("mask",), dict(o=_partial(g), lse=_partial(g, True)),
                        ("p",), lambda: init((g["d"], g["cols"]), g["cols"]), step, finish)
    return _from_partial(res["o"], g["short"]), res["lse"][..., :g["short"], None]


# ------------------------------------------------------------------------------ backward

def dq(plan, q, k, v, mask, seed, do, lse, delta):
    g = _geometry(plan, plan.dq, q, k)
    if plan.kind == "unpack":  # per block: dq [R, D] = sum over the key chunks of dS K
        def block_fn(blk):
            acc = None
            for c in range(blk.chunks):
                s, dp = blk.scores(c)
                _, ds = _backward_tile(blk.tile(blk.chunk("mask", c), c), s,
                                       blk.long_vec["lse"], blk.long_vec["delta"], dp)
                acc = _mm(blk.pieces(ds), blk.chunk("k", c), (g["rows"], g["d"]), acc)
            return dict(dq=acc * plan.scale)

        ins = _inputs(g, ("k", "v", "mask", "q", "do", "lse", "delta"), q, k, v, mask, seed, do,
                      lse, delta)
        res = _per_block(plan, g, ins, ("k", "v"), ("mask",), ("q", "do"), ("lse", "delta"),
                         dict(dq=jax.ShapeDtypeStruct(q.shape, q.dtype)), block_fn)
        return res["dq"]

    def step(blk, r, acc):  # pack: dq^T [D, C] += K^T dS^T over the key blocks
        s, dp = blk.scores()
        _, ds = _backward_tile(blk.tile(blk.long_vec["mask"]), s, blk.chunk("lse"),
                               blk.chunk("delta"), dp)
        return _mm(_t(blk.block("k")), _to_b(blk, r, "ds", ds), (g["d"], g["cols"]), acc)

    ins = _inputs(g, ("q", "do", "lse", "delta", "k", "v", "mask"), q, k, v, mask, seed, do, lse,
                  delta)
    res = _accumulating(plan, g, ins, ("q", "do"), ("lse", "delta"), ("k", "v"), ("mask",),
                        dict(dq=_partial(g)), ("ds",),
                        lambda: jnp.zeros((g["d"], g["cols"]), jnp.float32), step,
                        lambda acc: dict(dq=acc * plan.scale))
    return _from_partial(res["dq"], g["short"])


def dkdv(plan, q, k, v, mask, seed, do, lse, delta):
    g = _geometry(plan, plan.dkdv, q, k)
    if plan.kind == "pack":  # per block: dk, dv [R, D] = sums over the query chunks
        def block_fn(blk):
            dk = dv = None
            for c in range(blk.chunks):
                s, dp = blk.scores(c)
                pd, ds = _backward_tile(blk.tile(blk.long_vec["mask"], c), s,
                                        blk.chunk("lse", c), blk.chunk("delta", c), dp)
                shape = (g["rows"], g["d"])
                dk = _mm(blk.pieces(ds), blk.chunk("q", c), shape, dk)
                dv = _mm(blk.pieces(pd), blk.chunk("do", c), shape, dv)
            return dict(dk=dk * plan.scale, dv=dv)

        ins = _inputs(g, ("q", "do", "lse", "delta", "k", "v", "mask"), q, k, v, mask, seed, do,
                      lse, delta)
        out = jax.ShapeDtypeStruct(k.shape, k.dtype)
        res = _per_block(plan, g, ins, ("q", "do"), ("lse", "delta"), ("k", "v"), ("mask",),
                         dict(dk=out, dv=out), block_fn)
        return res["dk"], res["dv"]

    def step(blk, r, carry):  # unpack: dk^T, dv^T [D, C] += Q^T dS, dO^T P over query blocks
        s, dp = blk.scores()
        pd, ds = _backward_tile(blk.tile(blk.chunk("mask")), s, blk.long_vec["lse"],
                                blk.long_vec["delta"], dp)
        shape = (g["d"], g["cols"])
        return (_mm(_t(blk.block("q")), _to_b(blk, r, "ds", ds), shape, carry[0]),
                _mm(_t(blk.block("do")), _to_b(blk, r, "p", pd), shape, carry[1]))

    ins = _inputs(g, ("k", "v", "mask", "q", "do", "lse", "delta"), q, k, v, mask, seed, do, lse,
                  delta)
    zeros = lambda: (jnp.zeros((g["d"], g["cols"]), jnp.float32),) * 2
    res = _accumulating(plan, g, ins, ("k", "v"), ("mask",), ("q", "do"), ("lse", "delta"),
                        dict(dk=_partial(g), dv=_partial(g)), ("ds", "p"), zeros, step,
                        lambda carry: dict(dk=carry[0] * plan.scale, dv=carry[1]))
    return _from_partial(res["dk"], g["short"]), _from_partial(res["dv"], g["short"])
