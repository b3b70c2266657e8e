"""Luna: Linear Unified Nested Attention (Ma et al., NeurIPS 2021), following the official
fairseq-apollo code (LunarMultiheadAttention, LunaSentenceEncoderLayer, LunaLRAEncoder).

Each layer carries two streams: X [batch, n, dim] (the tokens) and P [batch, l, dim] (the
packed sequence, l = proj_len). Pack: P attends over X, giving Y_p [batch, l, dim]. Unpack:
X attends over Y_p, giving Y_x [batch, n, dim]. Cost O(n l) instead of O(n^2).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from luna_lra import ops
from luna_lra.models.embed import dense_init
from luna_lra.models.transformer import FeedForward


class LunaAttention(nn.Module):
    """Pack then unpack, with the official projections:

    pack:   query = pack_query(P); key, value = pack_key(X), pack_value(X)
            (one shared pack_context(X) when tie_kv)
    unpack: query = unpack_query(X); key, value = unpack_key(Y_p), unpack_value(Y_p)
            (one shared unpack_context(Y_p) when tie_kv); then the output projection.
    Y_p is returned as it comes out of the attention: no projection, no activation.
    """

    num_heads: int
    init_scheme: str = "official"
    tie_kv: bool = False
    attention_dropout_rate: float = 0.1
    impl: str = "xla"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, p, x_mask, p_mask, *, deterministic: bool):
        b, n, d = x.shape
        l = p.shape[1]
        h, hd = self.num_heads, d // self.num_heads
        if hd * h != d:
            raise ValueError(f"model.emb_dim {d} is not divisible by model.num_heads {h}")
        proj = lambda name: nn.Dense(d, kernel_init=dense_init(self.init_scheme, "proj"), dtype=self.dtype,
                                     name=name)
        split = lambda t: t.reshape(t.shape[0], t.shape[1], h, hd)
        use_dropout = not deterministic and self.attention_dropout_rate > 0.0
        rate = self.attention_dropout_rate if use_dropout else 0.0

        if self.tie_kv:
            pk = pv = split(proj("pack_context")(x))
        else:
            pk, pv = split(proj("pack_key")(x)), split(proj("pack_value")(x))
        packed = ops.pack_attention(
            split(proj("pack_query")(p)), pk, pv, x_mask, dropout_rate=rate,
            dropout_rng=self.make_rng("dropout") if use_dropout else None, impl=self.impl)
        packed = packed.reshape(b, l, d)

        if self.tie_kv:
            k = v = split(proj("unpack_context")(packed))
        else:
            k, v = split(proj("unpack_key")(packed)), split(proj("unpack_value")(packed))
        y = ops.unpack_attention(
            split(proj("unpack_query")(x)), k, v, p_mask, dropout_rate=rate,
            dropout_rng=self.make_rng("dropout") if use_dropout else None, impl=self.impl)
        y = nn.Dense(d, kernel_init=dense_init(self.init_scheme, "out"), dtype=self.dtype, name="out")(
            y.reshape(b, n, d))
        return y, packed


class LunaLayer(nn.Module):
    """LunaSentenceEncoderLayer. Post-LN by default (the official LRA setting):
    X: x = LN(x + drop(Y_x)); x = LN(x + drop(FFN(x)))
    P: p = LN_p(p + drop(Y_p))   (no feed-forward on the P stream)
    """

    num_heads: int
    mlp_dim: int
    init_scheme: str = "official"
    tie_kv: bool = False
    normalize_before: bool = False
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    activation_dropout_rate: float = 0.0
    impl: str = "xla"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, p, x_mask, p_mask, *, deterministic: bool):
        drop = lambda t: nn.Dropout(self.dropout_rate)(t, deterministic=deterministic)
        norm_x = nn.LayerNorm(epsilon=1e-5, name="attention_norm")
        norm_p = nn.LayerNorm(epsilon=1e-5, name="packed_norm")
        norm_ffn = nn.LayerNorm(epsilon=1e-5, name="ffn_norm")

        x_res, p_res = x, p
        if self.normalize_before:
            x, p = norm_x(x), norm_p(p)
        y, packed = LunaAttention(self.num_heads, self.init_scheme, self.tie_kv,
                                  self.attention_dropout_rate, self.impl, self.dtype,
                                  name="attention")(x, p, x_mask, p_mask, deterministic=deterministic)
        x, p = x_res + drop(y), p_res + drop(packed)
        if not self.normalize_before:
            x, p = norm_x(x), norm_p(p)

        x_res = x
        if self.normalize_before:
            x = norm_ffn(x)
        x = x_res + drop(FeedForward(self.mlp_dim, self.init_scheme, self.activation_dropout_rate,
                                     self.dtype, name="ffn")(x, deterministic=deterministic))
        if not self.normalize_before:
            x = norm_ffn(x)
        return x, p


class LunaEncoder(nn.Module):
    """LunaLRAEncoder after the token embedding: x [batch, n, dim] (embedded), mask [batch, n]
    -> (x [batch, n, dim], p [batch, l_eff, dim], p_mask [batch, l_eff]).

    The initial P is learned, [proj_len, dim] ~ normal(0, dim**-0.5), with its own LayerNorm and
    dropout. The official code cuts P to min(proj_len, longest sequence in the batch) and masks
    the slots at or past each example's length. Under jit the longest sequence is not known, so
    this cuts P to min(proj_len, n) for the padded length n: the slots in between are masked for
    every example, so the outputs of real tokens are the same.
    """

    proj_len: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    init_scheme: str = "official"
    tie_kv: bool = False
    tie_layer_weights: bool = False
    normalize_before: bool = False
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    activation_dropout_rate: float = 0.0
    impl: str = "xla"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool):
        b, n, d = x.shape
        l_eff = min(self.proj_len, n)
        p0 = self.param("packed_init", nn.initializers.normal(d**-0.5), (self.proj_len, d))
        p = nn.LayerNorm(epsilon=1e-5, name="packed_embed_norm")(p0[:l_eff])
        p = jnp.broadcast_to(p[None], (b, l_eff, d))
        p = nn.Dropout(self.dropout_rate)(p, deterministic=deterministic)
        lengths = jnp.sum(mask, axis=1)
        p_mask = jnp.arange(l_eff)[None, :] < lengths[:, None]
        p = jnp.where(p_mask[..., None], p, 0.0).astype(self.dtype)

        make = lambda i: LunaLayer(
            self.num_heads, self.mlp_dim, self.init_scheme, self.tie_kv, self.normalize_before,
            self.dropout_rate, self.attention_dropout_rate, self.activation_dropout_rate,
            self.impl, self.dtype, name=f"layer_{i}")
        layers = [make(0)] * self.num_layers if self.tie_layer_weights else [
            make(i) for i in range(self.num_layers)]
        for layer in layers:
            x, p = layer(x, p, mask, p_mask, deterministic=deterministic)
        if self.normalize_before:
            x = nn.LayerNorm(epsilon=1e-5, name="final_norm")(x)
            p = nn.LayerNorm(epsilon=1e-5, name="final_packed_norm")(p)
        return x, p, p_mask
