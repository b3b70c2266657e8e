"""Token embeddings, learned positions, the CLS token, and the initialisers both models share."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

# PyTorch's nn.Linear default (kaiming_uniform with a=sqrt(5)) is U(+-1/sqrt(fan_in)): variance
# 1/(3 fan_in). The official code leaves its feed-forward and classifier layers at that default.
TORCH_LINEAR_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# LunarMultiheadAttention: xavier-uniform with gain 1/sqrt(2) on the q/k/v projections, plain
# xavier-uniform on the output projection.
ATTENTION_PROJ_INIT = nn.initializers.variance_scaling(0.5, "fan_avg", "uniform")
ATTENTION_OUT_INIT = nn.initializers.xavier_uniform()
BERT_INIT = nn.initializers.normal(0.02)  # fairseq's init_bert_params


def dense_init(init: str, kind: str):
    """Kernel initialiser for a dense layer of `kind` ('proj', 'out', 'ffn') under `init`."""
    if init == "bert":
        return BERT_INIT
    if init != "official":
        raise ValueError(f"config field model.init: expected 'official' or 'bert', got {init!r}")
    return {"proj": ATTENTION_PROJ_INIT, "out": ATTENTION_OUT_INIT, "ffn": TORCH_LINEAR_INIT}[kind]


def embed_init(init: str, dim: int):
    return BERT_INIT if init == "bert" else nn.initializers.normal(dim**-0.5)


def sinusoidal_positions(length: int, dim: int):
    """Fixed sin/cos position table [length, dim] (sin on even, cos on odd features)."""
    pos = jnp.arange(length, dtype=jnp.float32)[:, None]
    freq = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32) * (-jnp.log(10000.0) / dim))
    table = jnp.zeros((length, dim), jnp.float32)
    table = table.at[:, 0::2].set(jnp.sin(pos * freq))
    return table.at[:, 1::2].set(jnp.cos(pos * freq[: dim // 2]))


class Embed(nn.Module):
    """tokens [batch, n] -> (x [batch, n', dim], mask [batch, n']) with n' = n (+1 with CLS).

    Token embedding, an optional learned CLS vector at position 0 (the bos token the official
    code prepends), learned absolute positions, optional LayerNorm, dropout, padded rows zeroed.
    """

    vocab_size: int
    dim: int
    max_length: int  # without the CLS token
    use_cls: bool
    init_scheme: str = "official"
    layer_norm: bool = True
    dropout_rate: float = 0.1
    positions: str = "learned"  # "learned" | "sinusoidal" (fixed)
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens, mask, *, deterministic: bool):
        if tokens.shape[1] > self.max_length:
            raise ValueError(
                f"sequence length {tokens.shape[1]} exceeds model.max_length {self.max_length}")
        e_init = embed_init(self.init_scheme, self.dim)
        x = nn.Embed(self.vocab_size, self.dim, embedding_init=e_init, name="tokens")(tokens)
        if self.use_cls:
            cls = self.param("cls", e_init, (1, 1, self.dim))
            x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.dim)), x], axis=1)
            mask = jnp.concatenate([jnp.ones((mask.shape[0], 1), bool), mask], axis=1)
        n_pos = self.max_length + int(self.use_cls)
        if self.positions == "learned":
            pos = self.param("positions", e_init, (n_pos, self.dim))
        elif self.positions == "sinusoidal":
            pos = sinusoidal_positions(n_pos, self.dim)
        else:
            raise ValueError(f"config field model.positions: expected 'learned' or 'sinusoidal', "
                             f"got {self.positions!r}")
        x = x + pos[None, : x.shape[1]]
        if self.layer_norm:
            x = nn.LayerNorm(epsilon=1e-5, name="layer_norm")(x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
        x = jnp.where(mask[..., None], x, 0.0).astype(self.dtype)
        return x, mask
