"""Luna: Linear Unified Nested Attention (Ma et al., NeurIPS 2021), following the official
fairseq-apollo code of the 2021 release (LunarMultiheadAttention in
fairseq/modules/luna_attention.py, LunaSentenceEncoderLayer in luna_sentence_encoder.py,
LunaLRAEncoder in fairseq/models/luna_lra/luna_lra_encoder.py).

Each layer carries two streams: X [batch, n, dim] (the tokens) and P [batch, l, dim] (the
packed sequence, l = proj_len). Pack: P attends over X, giving Y_p [batch, l, dim]. Unpack:
X attends over Y_p, giving Y_x [batch, n, dim]. Cost O(n l) instead of O(n^2).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from luna_lra import ops
from luna_lra.models.config import ModelConfig
from luna_lra.models.embed import dense_init, fairseq_sinusoidal_positions, official_sinusoidal
from luna_lra.models.layers import Dense, DenseKernel, Dropout, LayerNorm, fused_dense
from luna_lra.models.transformer import FeedForward


class LunaAttention(nn.Module):
    """Pack then unpack, with the official projections:

    pack:   query = pack_query(P); key, value = pack_key(X), pack_value(X)
            (one shared pack_context(X) when tie_kv)
    unpack: query = unpack_query(X); key, value = unpack_key(Y_p), unpack_value(Y_p)
            (one shared unpack_context(Y_p) when tie_kv); then the output projection.
    Y_p is returned as it comes out of the attention: no projection, no activation.
    The projections that read X run as one matmul, and so do the two that read Y_p (each
    keeps its own nn.Dense parameters).
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, x, p, x_mask, p_mask, *, deterministic: bool):
        cfg = self.config
        b, n, d = x.shape
        l = p.shape[1]
        kernel = lambda name: DenseKernel(d, dense_init(cfg.init, "proj"), name=name)(d)
        heads = lambda t: t.reshape(t.shape[0], t.shape[1], cfg.num_heads, cfg.head_dim)
        use_dropout = not deterministic and cfg.attention_dropout_rate > 0.0
        rate = cfg.attention_dropout_rate if use_dropout else 0.0
        attend = lambda op, q, k, v, mask: op(
            heads(q), heads(k), heads(v), mask, dropout_rate=rate,
            dropout_rng=self.make_rng("dropout") if use_dropout else None,
            impl=cfg.attention_impl, interpret=cfg.interpret)

        # Created in the order of the unfused layer, so parameters initialise as before.
        if cfg.tie_kv:
            pack_kv, unpack_q = kernel("pack_context"), kernel("unpack_query")
            (pq,) = fused_dense(p, [kernel("pack_query")], cfg.dtype)
            pk, uq = fused_dense(x, [pack_kv, unpack_q], cfg.dtype)
            pv = pk
        else:
            pack_k, pack_v, pack_q = kernel("pack_key"), kernel("pack_value"), kernel("pack_query")
            (pq,) = fused_dense(p, [pack_q], cfg.dtype)
            unpack_q = kernel("unpack_query")
            pk, pv, uq = fused_dense(x, [pack_k, pack_v, unpack_q], cfg.dtype)
        packed = attend(ops.pack_attention, pq, pk, pv, x_mask).reshape(b, l, d)

        if cfg.tie_kv:
            (uk,) = fused_dense(packed, [kernel("unpack_context")], cfg.dtype)
            uv = uk
        else:
            uk, uv = fused_dense(packed, [kernel("unpack_key"), kernel("unpack_value")], cfg.dtype)
        y = attend(ops.unpack_attention, uq, uk, uv, p_mask).reshape(b, n, d)
        y = Dense(d, kernel_init=dense_init(cfg.init, "out"), dtype=cfg.dtype, name="out")(y)
        return y, packed


class LunaLayer(nn.Module):
    """LunaSentenceEncoderLayer. Post-LN by default (the official LRA setting):
    X: x = LN(x + drop(Y_x)); x = LN(x + drop(FFN(x)))
    P: p = LN_p(p + drop(Y_p))   (no feed-forward on the P stream)
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, x, p, x_mask, p_mask, *, deterministic: bool):
        cfg = self.config
        pre_ln = cfg.normalize_before
        drop = lambda name, t: Dropout(cfg.dropout_rate, name=name)(
            t, deterministic=deterministic)
        norm_x = LayerNorm(epsilon=1e-5, name="attention_norm")
        norm_p = LayerNorm(epsilon=1e-5, name="packed_norm")
        norm_ffn = LayerNorm(epsilon=1e-5, name="ffn_norm")

        x_res, p_res = x, p
        if pre_ln:
            x, p = norm_x(x), norm_p(p)
        y, packed = LunaAttention(cfg, name="attention")(
            x, p, x_mask, p_mask, deterministic=deterministic)
        x, p = x_res + drop("Dropout_0", y), p_res + drop("Dropout_1", packed)
        if not pre_ln:
            x, p = norm_x(x), norm_p(p)

        x_res = x
        if pre_ln:
            x = norm_ffn(x)
        x = x_res + drop("Dropout_2", FeedForward(cfg, name="ffn")(x, deterministic=deterministic))
        if not pre_ln:
            x = norm_ffn(x)
        return x, p


class LunaEncoder(nn.Module):
    """LunaLRAEncoder after the token embedding: x [batch, n, dim] (embedded), mask [batch, n]
    -> (x [batch, n, dim], p [batch, l_eff, dim], p_mask [batch, l_eff]).

    The initial P is learned, [proj_len, dim] ~ normal(0, dim**-0.5); with the embedding
    LayerNorm on (which the official code forbids with pre-LN) it gets its own LayerNorm; then
    dropout. The official code cuts P to min(proj_len, longest sequence in the batch) and masks
    the slots at or past each example's length (CLS and eos included). Under jit the longest
    sequence is not known, so this cuts P to min(proj_len, n) for the padded length n: the
    slots in between are masked for every example, so the outputs of real tokens are the same.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool):
        cfg = self.config
        b, n, d = x.shape
        l_eff = min(cfg.proj_len, n)
        p = self.param("packed_init", nn.initializers.normal(d**-0.5), (cfg.proj_len, d))[:l_eff]
        if official_sinusoidal(cfg):
            p = p * np.float32(math.sqrt(d)) + fairseq_sinusoidal_positions(l_eff, d)
        if cfg.embed_layer_norm:
            p = LayerNorm(epsilon=1e-5, name="packed_embed_norm")(p)
        p = jnp.broadcast_to(p[None], (b, l_eff, d))
        p = Dropout(cfg.dropout_rate, name="Dropout_0")(p, deterministic=deterministic)
        lengths = jnp.sum(mask, axis=1)
        p_mask = jnp.arange(l_eff)[None, :] < lengths[:, None]
        p = jnp.where(p_mask[..., None], p, 0.0).astype(cfg.dtype)

        layers = [LunaLayer(cfg, name=f"layer_{i}")
                  for i in range(1 if cfg.tie_layer_weights else cfg.num_layers)]
        for i in range(cfg.num_layers):
            x, p = layers[i % len(layers)](x, p, mask, p_mask, deterministic=deterministic)
        if cfg.normalize_before:
            x = LayerNorm(epsilon=1e-5, name="final_norm")(x)
            p = LayerNorm(epsilon=1e-5, name="final_packed_norm")(p)
        return x, p, p_mask
