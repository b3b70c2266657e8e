"""The LRA Transformer's model-level options (qkv_dim, init='lra', gelu='tanh',
layer_norm_epsilon, pooling='mean_all', classifier_halving) against LRA's Flax model written
out from its parameters (lra_benchmarks/models/transformer/transformer.py and
models/layers/common_layers.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from luna_lra.data import TaskInfo
from luna_lra.defaults import base_config
from luna_lra.models import build_model
from test_models import _tokens  # tokens 1..19 (vocabulary 20, as TASK here), 0 = padding
from test_models import assert_matches_written_out

TASK = TaskInfo(name="toy", num_classes=3, vocab_size=20, max_length=12)
LRA = dict(init="lra", gelu="tanh", layer_norm_epsilon=1e-6,
           embed_layer_norm=False, positions="sinusoidal")


def lra_cfg(**overrides):
    c = base_config(overrides.pop("name", "transformer")).model
    fields = dict(LRA, emb_dim=16, qkv_dim=8, num_heads=2, mlp_dim=24, num_layers=2,
                  classifier_dim=24, dropout_rate=0.0, attention_dropout_rate=0.0)
    for k, v in {**fields, **overrides}.items():
        if k in c:  # Luna has no qkv_dim
            c[k] = v
    return c


def _init(model, toks):
    return jax.jit(model.init)(jax.random.key(0), toks, toks != 0)["params"]


def _lra_layer_norm(x, p, eps=1e-6):  # flax's LayerNorm (fast variance), epsilon 1e-6
    mean = x.mean(-1, keepdims=True)
    var = jnp.maximum((x * x).mean(-1, keepdims=True) - mean * mean, 0.0)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def _lra_logits(params, toks, heads):
    """LRA's TransformerEncoder(classifier=True, classifier_pool='CLS') from our parameters:
    q/k/v/out without biases, query / sqrt(head_dim), tanh GELU in the MlpBlock, flax
    LayerNorms, encoder_norm, classifier_head's mlp + ReLU + logits (with its bias)."""
    from luna_lra.models.embed import sinusoidal_positions

    e, enc, head = params["embed"], params["encoder"], params["head"]
    b, n = toks.shape
    x = e["tokens"]["embedding"][toks]
    x = jnp.concatenate([jnp.broadcast_to(e["cls"], (b, 1, x.shape[-1])), x], axis=1)
    x = x + sinusoidal_positions(n + 1, x.shape[-1])[None]
    key_ok = jnp.concatenate([jnp.ones((b, 1), bool), toks != 0], axis=1)
    split = lambda t: t.reshape(b, n + 1, heads, -1)
    for i in range(sum(k.startswith("layer_") for k in enc)):
        lp = enc[f"layer_{i}"]
        y = _lra_layer_norm(x, lp["attention_norm"])
        q, k, v = (split(y @ lp[name]["kernel"]) for name in ("query", "key", "value"))
        s = jnp.einsum("bqhd,bkhd->bhqk", q / np.sqrt(q.shape[-1]), k)
        s = jnp.where(key_ok[:, None, None, :], s, -1e10)
        o = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)
        x = x + o.reshape(b, n + 1, -1) @ lp["out"]["kernel"]
        y = _lra_layer_norm(x, lp["ffn_norm"])
        f = lp["ffn"]
        h = jax.nn.gelu(y @ f["fc1"]["kernel"] + f["fc1"]["bias"], approximate=True)
        x = x + h @ f["fc2"]["kernel"] + f["fc2"]["bias"]
    x = _lra_layer_norm(x, enc["final_norm"])[:, 0]
    x = jax.nn.relu(x @ head["hidden_0"]["kernel"] + head["hidden_0"]["bias"])
    return x @ head["logits"]["kernel"] + head["logits"]["bias"]


def test_matches_lras_transformer_written_out():
    model = build_model(lra_cfg(), TASK)
    toks = _tokens([12, 7, 1], 12, seed=1)
    assert_matches_written_out(model, _init(model, toks), toks,
                               lambda p: _lra_logits(p, toks, heads=2))


def test_qkv_dim_sets_the_attention_width_only():
    model = build_model(lra_cfg(), TASK)
    layer = _init(model, _tokens([4], 6))["encoder"]["layer_0"]
    for name in ("query", "key", "value"):
        assert set(layer[name]) == {"kernel"} and layer[name]["kernel"].shape == (16, 8)
    assert set(layer["out"]) == {"kernel"} and layer["out"]["kernel"].shape == (8, 16)
    assert layer["ffn"]["fc1"]["kernel"].shape == (16, 24)  # the model width elsewhere
    default = build_model(lra_cfg(qkv_dim=0), TASK)
    assert _init(default, _tokens([4], 6))["encoder"]["layer_0"]["query"]["kernel"].shape == (
        16, 16)


def _xavier_bound(kernel):
    return np.sqrt(6.0 / sum(kernel.shape))


def test_lra_init_statistics():
    """tokens normal(1), CLS zeros, learned positions normal(0.02), xavier-uniform attention and
    MLP kernels, MLP biases normal(1e-6), lecun-normal classifier kernels, zero head biases."""
    cfg = lra_cfg(emb_dim=64, qkv_dim=32, mlp_dim=128, classifier_dim=128, positions="learned")
    task = dataclasses.replace(TASK, vocab_size=256, max_length=200)
    p = _init(build_model(cfg, task), _tokens([4], 6))
    e, layer, head = p["embed"], p["encoder"]["layer_0"], p["head"]
    assert np.std(e["tokens"]["embedding"]) == pytest.approx(1.0, rel=0.05)
    assert not np.any(e["cls"])
    assert np.std(e["positions"]) == pytest.approx(0.02, rel=0.05)
    for kernel in (layer["query"]["kernel"], layer["out"]["kernel"],
                   layer["ffn"]["fc1"]["kernel"], layer["ffn"]["fc2"]["kernel"]):
        k = np.asarray(kernel)
        assert 0.95 * _xavier_bound(k) < np.abs(k).max() <= _xavier_bound(k)
        assert np.std(k) == pytest.approx(_xavier_bound(k) / np.sqrt(3), rel=0.1)
    for bias in (layer["ffn"]["fc1"]["bias"], layer["ffn"]["fc2"]["bias"]):
        assert 0 < np.std(bias) == pytest.approx(1e-6, rel=0.35)
    # lecun_normal: normal truncated at 2 sigma, sigma = fan_in**-0.5 / 0.8796 (variance 1/fan_in)
    k, cut = np.asarray(head["hidden_0"]["kernel"]), 2 * 64**-0.5 / 0.87962566
    assert np.std(k) == pytest.approx(64**-0.5, rel=0.1)
    assert 0.95 * cut < np.abs(k).max() <= cut * (1 + 1e-6)
    assert not np.any(head["hidden_0"]["bias"]) and not np.any(head["logits"]["bias"])


def test_default_init_keeps_biases_and_the_bias_free_logits():
    p = _init(build_model(lra_cfg(init="official"), TASK), _tokens([4], 6))
    assert set(p["encoder"]["layer_0"]["query"]) == {"kernel", "bias"}
    assert set(p["head"]["logits"]) == {"kernel"}


def test_mean_all_pools_every_position_padding_included():
    from luna_lra.models.heads import pool

    model = build_model(lra_cfg(pooling="mean_all", use_cls=False), TASK)
    toks = _tokens([12, 5], 12, seed=2)
    params = _init(model, toks)

    def encoded(m, t, k):
        x, mask = m.embed(t, k, deterministic=True)
        return m.encoder(x, mask, deterministic=True), mask

    out, mask = model.apply({"params": params}, toks, toks != 0, method=encoded)
    mean_all, masked = pool(out, mask, "mean_all"), pool(out, mask, "mean")
    np.testing.assert_allclose(mean_all, out.mean(axis=1), rtol=1e-6)
    # the full example agrees with the masked mean; the padded one does not
    np.testing.assert_allclose(mean_all[0], masked[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(mean_all[1], masked[1], atol=1e-3)
    logits = model.apply({"params": params}, toks, toks != 0)
    want = model.apply({"params": params}, mean_all, method=lambda m, v: m.head(v))
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6)


def test_classifier_halving_is_lras_dual_head():
    task = dataclasses.replace(TASK, two_tower=True)
    cfg = lra_cfg(classifier_layers=2, classifier_dim=24, classifier_halving=True)
    model = build_model(cfg, task)
    a, b = _tokens([4, 7], 8, seed=3), _tokens([8, 3], 8, seed=4)
    head = model.init(jax.random.key(0), a, a != 0, b, b != 0)["params"]["head"]
    assert head["hidden_0"]["kernel"].shape == (32, 24)  # [u, v] of two 16-wide towers
    assert head["hidden_1"]["kernel"].shape == (24, 12)
    assert head["logits"]["kernel"].shape == (12, 3)
    plain = build_model(lra_cfg(classifier_layers=2, classifier_dim=24), task)
    head = plain.init(jax.random.key(0), a, a != 0, b, b != 0)["params"]["head"]
    assert head["hidden_1"]["kernel"].shape == (24, 24)


def test_sinusoidal_table_is_lras_float64_formula():
    from luna_lra.models.embed import sinusoidal_positions

    n, d = 4001, 32
    pos = np.arange(n)[:, None]
    div = np.exp(np.arange(0, d, 2) * -(np.log(10000.0) / d))
    want = np.zeros((n, d), np.float32)
    want[:, 0::2], want[:, 1::2] = np.sin(pos * div), np.cos(pos * div)
    np.testing.assert_array_equal(sinusoidal_positions(n, d), want)


@pytest.mark.parametrize("overrides,field", [
    ({"name": "luna", "init": "lra"}, "model.init"),
    ({"qkv_dim": 9}, "model.qkv_dim"),
    ({"qkv_dim": -1}, "model.qkv_dim"),
    ({"gelu": "sigmoid"}, "model.gelu"),
    ({"layer_norm_epsilon": 0.0}, "model.layer_norm_epsilon"),
    ({"pooling": "max"}, "model.pooling"),
    ({"classifier_halving": True, "classifier_layers": 3, "classifier_dim": 2},
     "model.classifier_halving"),
])
def test_bad_options_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        build_model(lra_cfg(**overrides), TASK)
