"""Luna: Linear Unified Nested Attention (Ma et al., NeurIPS 2021), following the official
fairseq-apollo code of the 2021 release (LunarMultiheadAttention in
fairseq/modules/luna_attention.py, LunaSentenceEncoderLayer in luna_sentence_encoder.py,
LunaLRAEncoder in fairseq/models/luna_lra/luna_lra_encoder.py).

Each layer carries two streams: X [batch, n, dim] (the tokens) and P [batch, l, dim] (the
packed sequence, l = proj_len). Pack: P attends over X, giving Y_p [batch, l, dim]. Unpack:
X attends over Y_p, giving Y_x [batch, n, dim]. Cost O(n l) instead of O(n^2).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from luna_lra import ops
from luna_lra.checks import ConfigError
from luna_lra.models.config import Model, ModelConfig, choice, flag, positive
from luna_lra.models.embed import dense_init, fairseq_sinusoidal_positions
from luna_lra.models.layers import DenseKernel, Dropout, LayerNorm, fused_dense, linear
from luna_lra.models.transformer import FeedForward


@dataclasses.dataclass(frozen=True)
class LunaConfig(ModelConfig):
    """Luna's fields (beside the shared ones); its defaults are the official code's."""

    name: str = "luna"
    proj_len: int = positive(256, "l, the packed sequence's length")
    tie_kv: bool = flag(False, "one projection for key and value (official option)")
    tie_layer_weights: bool = flag(False, "one set of layer weights for every layer")
    normalize_before: bool = flag(False, "pre-LN; the official LRA runs are post-LN")
    # LunarMultiheadAttention's schemes only: "lra" is LRA's Transformer scheme
    init: str = choice("official", "bert")
    attention_impl: str = choice("xla", "pallas", "mosaic", "triton", "auto",
                                 doc="luna_lra.ops: the XLA path; this device's Pallas kernels; "
                                 "Mosaic's or Triton's, forced; the kernels where they apply")

    @property
    def fairseq_positions(self) -> bool:
        """LunaLRAEncoder's sinusoidal path: X and P scaled by sqrt(dim), fairseq's table on X
        (from position 2) and on P (from 0)."""
        return self.positions == "sinusoidal"

    def check(self) -> None:
        super().check()
        if self.normalize_before and self.embed_layer_norm:
            # LunaLRAEncoder: `assert not layernorm_embedding or not normalize_before`
            raise ConfigError("config fields model.normalize_before=True and "
                              "model.embed_layer_norm=True: the official Luna encoder forbids "
                              "the embedding LayerNorm with pre-LN; set "
                              "model.embed_layer_norm=False")


def first_rows(t, batch: int, rows: int | None):
    """t [batch * n, ...] -> its first `rows` positions of each example, [batch * rows, ...]
    (all of t for rows=None)."""
    if rows is None:
        return t
    return t.reshape((batch, -1) + t.shape[1:])[:, :rows].reshape((batch * rows,) + t.shape[1:])


class LunaAttention(nn.Module):
    """Pack then unpack, with the official projections:

    pack:   query = pack_query(P); key, value = pack_key(X), pack_value(X)
            (one shared pack_context(X) when tie_kv)
    unpack: query = unpack_query(X); key, value = unpack_key(Y_p), unpack_value(Y_p)
            (one shared unpack_context(Y_p) when tie_kv); then the output projection.
    Y_p is returned as it comes out of the attention: no projection, no activation.
    The projections that read X run as one matmul, and so do the two that read Y_p (each
    keeps its own nn.Dense parameters). Where the XLA form runs on the CPU and it saves work
    (ops.folds: Luna-16), the projections of X and the output projection are folded into
    the attention instead (ops.pack_folded, ops.unpack_folded): the same parameters and
    numbers, to float32 rounding.

    x: [batch * n, dim] (the X stream is kept 2-D: one layout for every consumer, where
    [batch, n, dim] views of the same value made XLA write it twice); p: [batch, l, dim].
    rows: unpack (and so Y_x) only for the first `rows` positions of each example, all of X
    still packed. Returns (Y_x [batch * rows, dim], Y_p [batch, l, dim]).
    """

    config: LunaConfig

    @nn.compact
    def __call__(self, x, p, x_mask, p_mask, *, deterministic: bool, rows=None):
        cfg = self.config
        d = x.shape[-1]
        kernel = lambda name: DenseKernel(d, dense_init(cfg.init, "proj"), name=name)(d)
        # (kernel, bias) pairs, created in the order of the unfused layer
        if cfg.tie_kv:
            pack_k = pack_v = kernel("pack_context")
            unpack_q, pack_q = kernel("unpack_query"), kernel("pack_query")
        else:
            pack_k, pack_v, pack_q = kernel("pack_key"), kernel("pack_value"), kernel("pack_query")
            unpack_q = kernel("unpack_query")
        unpack_kv = ([kernel("unpack_context")] if cfg.tie_kv
                     else [kernel("unpack_key"), kernel("unpack_value")])
        out = DenseKernel(d, dense_init(cfg.init, "out"), name="out")(d)

        b, l = x_mask.shape[0], p.shape[1]
        dtype = cfg.compute_dtype
        (pq,) = fused_dense(p, [pack_q], dtype)
        heads = functools.partial(self.heads, batch=b)
        kw = dict(impl=cfg.attention_impl, interpret=cfg.interpret)
        if ops.folds(cfg.num_heads, l, d, **kw):
            packed = ops.pack_folded(heads(pq), x.reshape(b, -1, d), pack_k[0], pack_v[0],
                                     pack_v[1], x_mask, **self.dropout(deterministic))
            uk, uv = self.unpack_kv(packed.reshape(b, l, d), unpack_kv)
            y = ops.unpack_folded(first_rows(x, b, rows).reshape(b, -1, d), *unpack_q, uk, uv,
                                  *out, p_mask, **self.dropout(deterministic))
            return y.reshape(-1, d), packed.reshape(b, l, d)

        kv, uq = self.project_x(x, [pack_k] if cfg.tie_kv else [pack_k, pack_v], unpack_q, b,
                                rows)
        pk, pv = kv * (2 // len(kv))
        packed = ops.pack_attention(heads(pq), heads(pk), heads(pv), x_mask, **kw,
                                    **self.dropout(deterministic))
        uk, uv = self.unpack_kv(packed.reshape(b, l, d), unpack_kv)
        y = ops.unpack_attention(heads(uq), uk, uv, p_mask, **kw,
                                 **self.dropout(deterministic)).reshape(uq.shape)
        return linear(y.astype(dtype), *(t.astype(dtype) for t in out)), packed.reshape(b, l, d)

    def heads(self, t, batch: int):
        """[batch, len, dim] or [batch * len, dim] -> [batch, len, heads, head_dim]."""
        return t.reshape(batch, -1, self.config.num_heads, self.config.head_dim)

    def dropout(self, deterministic: bool) -> dict:
        """The attention dropout arguments of one pack or unpack call (its own rng)."""
        rate = self.config.attention_dropout_rate
        if deterministic or rate == 0.0:
            return dict(dropout_rate=0.0, dropout_rng=None)
        return dict(dropout_rate=rate, dropout_rng=self.make_rng("dropout"))

    def unpack_kv(self, packed, kernels):
        """The unpack keys and values of Y_p [batch, l, dim], each [batch, l, heads, head_dim]
        (one tensor twice when tie_kv)."""
        kv = fused_dense(packed, kernels, self.config.compute_dtype)
        return [self.heads(t, packed.shape[0]) for t in kv * (2 // len(kv))]

    def project_x(self, x, pack_kernels, unpack_query, batch, rows):
        """The pack keys/values of all of X and the unpack queries of its first `rows`: one
        matmul when those are all rows."""
        dtype = self.config.compute_dtype
        if rows is None:
            *kv, q = fused_dense(x, pack_kernels + [unpack_query], dtype)
            return kv, q
        (q,) = fused_dense(first_rows(x, batch, rows), [unpack_query], dtype)
        return fused_dense(x, pack_kernels, dtype), q


class LunaLayer(nn.Module):
    """LunaSentenceEncoderLayer. Post-LN by default (the official LRA setting):
    X: x = LN(x + drop(Y_x)); x = LN(x + drop(FFN(x)))
    P: p = LN_p(p + drop(Y_p))   (no feed-forward on the P stream)

    x [batch * n, dim] (see LunaAttention), p [batch, l, dim]. With `rows`, the X stream
    comes out for the first `rows` positions of each example only, [batch * rows, dim]; its
    dropout masks are those of the full stream at those positions.
    """

    config: LunaConfig

    @nn.compact
    def __call__(self, x, p, x_mask, p_mask, *, deterministic: bool, rows=None):
        cfg = self.config
        b, n = x_mask.shape
        pre_ln = cfg.normalize_before
        drop = lambda name, t, full=None: Dropout(cfg.dropout_rate, name=name)(
            t, deterministic=deterministic, full_shape=full)
        full = None if rows is None else (b, n, x.shape[-1])  # the X stream's whole shape
        norm_x = LayerNorm(epsilon=cfg.layer_norm_epsilon, name="attention_norm")
        norm_p = LayerNorm(epsilon=cfg.layer_norm_epsilon, name="packed_norm")
        norm_ffn = LayerNorm(epsilon=cfg.layer_norm_epsilon, name="ffn_norm")

        x_res, p_res = first_rows(x, b, rows), p
        if pre_ln:
            x, p = norm_x(x), norm_p(p)
        y, packed = LunaAttention(cfg, name="attention")(
            x, p, x_mask, p_mask, deterministic=deterministic, rows=rows)
        x, p = x_res + drop("Dropout_0", y, full), p_res + drop("Dropout_1", packed)
        if not pre_ln:
            x, p = norm_x(x), norm_p(p)

        x_res = x
        if pre_ln:
            x = norm_ffn(x)
        ffn = FeedForward(cfg, name="ffn")(x, deterministic=deterministic,
                                           full_rows=None if rows is None else (b, n))
        x = x_res + drop("Dropout_2", ffn, full)
        if not pre_ln:
            x = norm_ffn(x)
        return x, p


class LunaEncoder(nn.Module):
    """LunaLRAEncoder after the token embedding: x [batch, n, dim] (embedded), mask [batch, n]
    -> (x [batch, n, dim], p [batch, l_eff, dim], p_mask [batch, l_eff]). With `rows`, the
    last layer computes X only for the first `rows` positions of each example (x [batch,
    rows, dim]): what CLS pooling reads; the rows it skips are never used.

    The initial P is learned, [proj_len, dim] ~ normal(0, dim**-0.5); with the embedding
    LayerNorm on (which the official code forbids with pre-LN) it gets its own LayerNorm; then
    dropout. The official code cuts P to min(proj_len, longest sequence in the batch) and masks
    the slots at or past each example's length (CLS and eos included). Under jit the longest
    sequence is not known, so this cuts P to min(proj_len, n) for the padded length n: the
    slots in between are masked for every example, so the outputs of real tokens are the same.
    """

    config: LunaConfig

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool, rows=None):
        cfg = self.config
        b, n, d = x.shape
        l_eff = min(cfg.proj_len, n)
        p = self.param("packed_init", nn.initializers.normal(d**-0.5), (cfg.proj_len, d))[:l_eff]
        if cfg.fairseq_positions:
            p = p * np.float32(math.sqrt(d)) + fairseq_sinusoidal_positions(l_eff, d)
        if cfg.embed_layer_norm:
            p = LayerNorm(epsilon=cfg.layer_norm_epsilon, name="packed_embed_norm")(p)
        p = jnp.broadcast_to(p[None], (b, l_eff, d))
        p = Dropout(cfg.dropout_rate, name="Dropout_0")(p, deterministic=deterministic)
        lengths = jnp.sum(mask, axis=1)
        p_mask = jnp.arange(l_eff)[None, :] < lengths[:, None]
        p = jnp.where(p_mask[..., None], p, 0.0).astype(cfg.compute_dtype)

        layers = [LunaLayer(cfg, name=f"layer_{i}")
                  for i in range(1 if cfg.tie_layer_weights else cfg.num_layers)]
        x = x.reshape(b * n, d)
        for i in range(cfg.num_layers):
            last = i == cfg.num_layers - 1
            x, p = layers[i % len(layers)](x, p, mask, p_mask, deterministic=deterministic,
                                           rows=rows if last else None)
        x = x.reshape(b, -1, d)
        if cfg.normalize_before:
            x = LayerNorm(epsilon=cfg.layer_norm_epsilon, name="final_norm")(x)
            p = LayerNorm(epsilon=cfg.layer_norm_epsilon, name="final_packed_norm")(p)
        return x, p, p_mask


MODEL = Model(config=LunaConfig, encoder=LunaEncoder, label="Luna-{proj_len}",
              variants={f"luna{l}": {"proj_len": l} for l in (16, 128, 256)})
