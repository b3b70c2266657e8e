"""Token embeddings, positions, the CLS and eos tokens, and the initialisers models share."""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from luna_lra.models.config import ModelConfig
from luna_lra.models.layers import Dropout, LayerNorm, add_positions

# PyTorch's nn.Linear default (kaiming_uniform with a=sqrt(5)) is U(+-1/sqrt(fan_in)): variance
# 1/(3 fan_in). The official code leaves its feed-forward and classifier layers at that default.
TORCH_LINEAR_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# LunarMultiheadAttention: xavier-uniform with gain 1/sqrt(2) on the q/k/v projections, plain
# xavier-uniform on the output projection.
ATTENTION_PROJ_INIT = nn.initializers.variance_scaling(0.5, "fan_avg", "uniform")
ATTENTION_OUT_INIT = nn.initializers.xavier_uniform()
BERT_INIT = nn.initializers.normal(0.02)  # fairseq's init_bert_params
ZEROS = nn.initializers.zeros_init()
# model.init="lra", LRA's Flax Transformer (lra_benchmarks/models/transformer/transformer.py,
# models/layers/common_layers.py): xavier-uniform q/k/v/out kernels without biases, MlpBlock
# kernels xavier-uniform with normal(1e-6) biases, the classifier head at flax nn.Dense's
# defaults (lecun_normal kernels, zero biases, the logits layer with its bias), tokens
# normal(1.0), CLS zeros, learned positions normal(0.02).
LRA_DENSE = {"proj": (nn.initializers.xavier_uniform(), None),
             "out": (nn.initializers.xavier_uniform(), None),
             "ffn": (nn.initializers.xavier_uniform(), nn.initializers.normal(1e-6)),
             "head": (nn.initializers.lecun_normal(), ZEROS)}
# fairseq's padding index: its positions count from padding_idx + 1
FAIRSEQ_POSITION_OFFSET = 2


def dense_init(init: str, kind: str):
    """Kernel initialiser for a dense layer of `kind` ('proj', 'out', 'ffn', 'head': the
    classifier) under the scheme `init`."""
    if init == "lra":
        return LRA_DENSE[kind][0]
    if init == "bert":
        return BERT_INIT
    return {"proj": ATTENTION_PROJ_INIT, "out": ATTENTION_OUT_INIT, "ffn": TORCH_LINEAR_INIT,
            "head": TORCH_LINEAR_INIT}[kind]


def bias_init(init: str, kind: str):
    """Bias initialiser for a dense layer of `kind` under `init`; None: the layer has no bias.
    The classifier's logits layer is kind 'logits': biased under 'lra' only."""
    if init == "lra":
        return ZEROS if kind == "logits" else LRA_DENSE[kind][1]
    return None if kind == "logits" else ZEROS


def embed_init(init: str, dim: int):
    """Token (and eos) embeddings."""
    return {"bert": BERT_INIT, "lra": nn.initializers.normal(1.0)}.get(
        init, nn.initializers.normal(dim**-0.5))


def cls_init(init: str, dim: int):
    return ZEROS if init == "lra" else embed_init(init, dim)


def position_init(init: str, dim: int):
    """Learned positions."""
    return nn.initializers.normal(0.02) if init == "lra" else embed_init(init, dim)


def sinusoidal_positions(length: int, dim: int):
    """LRA's fixed table [length, dim] (common_layers.sinusoidal_init): sin on even, cos on odd
    features, positions from 0; computed in float64 as LRA's numpy code does, then float32."""
    pos = np.arange(length, dtype=np.float64)[:, None]
    freq = np.exp(np.arange(0, dim, 2, dtype=np.float64) * (-np.log(10000.0) / dim))
    table = np.zeros((length, dim), np.float32)
    table[:, 0::2] = np.sin(pos * freq)
    table[:, 1::2] = np.cos(pos * freq[: dim // 2])
    return jnp.asarray(table)


def fairseq_sinusoidal_positions(length: int, dim: int, offset: int = 0):
    """fairseq's table (SinusoidalPositionalEmbedding, get_sinusoidal_positional_embedding):
    sin in the first half of the features, cos in the second, frequencies
    10000^(-i/(dim/2 - 1)); rows for positions offset .. offset + length - 1."""
    half = dim // 2
    freq = np.exp(np.arange(half, dtype=np.float32) * -(math.log(10000) / (half - 1)))
    angle = np.arange(offset, offset + length, dtype=np.float32)[:, None] * freq[None]
    table = np.concatenate([np.sin(angle), np.cos(angle), np.zeros((length, dim % 2))], axis=1)
    return jnp.asarray(table, jnp.float32)


def last_token_index(mask):
    """[batch] index one past each example's last real token (0 for an empty example)."""
    n = mask.shape[1]
    return jnp.max(jnp.where(mask, jnp.arange(1, n + 1)[None, :], 0), axis=1)


class Embed(nn.Module):
    """tokens [batch, n] -> (x [batch, n', dim], mask [batch, n']), n' = n + use_cls +
    append_eos.

    Token embedding; a learned CLS vector at position 0 (the bos token the official data
    prepends); with append_eos a learned eos vector right after each example's last real token
    (fairseq-preprocess appends </s>), counted in the mask; positions; optional LayerNorm;
    dropout; padded rows zeroed.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, tokens, mask, *, deterministic: bool):
        cfg = self.config
        if tokens.shape[1] > cfg.max_length:
            raise ValueError(
                f"sequence length {tokens.shape[1]} exceeds model.max_length {cfg.max_length}")
        e_init = embed_init(cfg.init, cfg.emb_dim)
        x = nn.Embed(cfg.vocab_size, cfg.emb_dim, embedding_init=e_init, name="tokens")(tokens)
        b = x.shape[0]
        if cfg.use_cls:
            cls = self.param("cls", cls_init(cfg.init, cfg.emb_dim), (1, 1, cfg.emb_dim))
            x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, cfg.emb_dim)), x], axis=1)
            mask = jnp.concatenate([jnp.ones((b, 1), bool), mask], axis=1)
        if cfg.append_eos:
            eos = self.param("eos", e_init, (1, 1, cfg.emb_dim))
            at = last_token_index(mask)
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 0)))
            is_eos = jnp.arange(x.shape[1])[None, :] == at[:, None]
            x = jnp.where(is_eos[..., None], eos, x)
            mask = jnp.pad(mask, ((0, 0), (0, 1))) | is_eos
        if cfg.fairseq_positions:
            x = x * np.float32(math.sqrt(cfg.emb_dim))
        x = add_positions(x, self.positions(x.shape[1]))
        if cfg.embed_layer_norm:
            x = LayerNorm(epsilon=cfg.layer_norm_epsilon, name="layer_norm")(x)
        x = Dropout(cfg.dropout_rate, name="Dropout_0")(x, deterministic=deterministic)
        x = jnp.where(mask[..., None], x, 0.0).astype(cfg.compute_dtype)
        return x, mask

    def positions(self, n: int):
        """[n, dim] added to the embedded tokens (which official_sinusoidal first scales)."""
        cfg = self.config
        if cfg.positions == "learned":
            table = self.param("positions", position_init(cfg.init, cfg.emb_dim),
                               (cfg.num_positions, cfg.emb_dim))
            return table[:n]
        if cfg.fairseq_positions:
            return fairseq_sinusoidal_positions(n, cfg.emb_dim, FAIRSEQ_POSITION_OFFSET)
        return sinusoidal_positions(cfg.num_positions, cfg.emb_dim)[:n]
