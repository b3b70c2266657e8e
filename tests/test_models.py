"""The Luna model and the Transformer baseline: shapes, padding invariance, official structure."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from luna_lra.data import TaskInfo
from luna_lra.defaults import base_config
from luna_lra.models import build_model

TASK = TaskInfo(name="toy", num_classes=5, vocab_size=20, max_length=24)


def small_model_cfg(name="luna", **overrides):
    c = base_config(name).model
    c.emb_dim, c.num_heads, c.mlp_dim, c.num_layers = 16, 2, 32, 2
    if name == "luna":
        c.proj_len = 8
    c.classifier_dim = 16
    for k, v in overrides.items():
        c[k] = v
    return c


def _tokens(lengths, width, seed=0):
    rng = np.random.default_rng(seed)
    toks = rng.integers(1, TASK.vocab_size, size=(len(lengths), width))
    toks[np.arange(width)[None, :] >= np.asarray(lengths)[:, None]] = 0
    return jnp.asarray(toks, jnp.int32)


def _init_apply(model, toks, train=False, rng=0):
    mask = toks != 0
    params = jax.jit(model.init)(jax.random.key(0), toks, mask)["params"]
    apply = jax.jit(lambda t: model.apply({"params": params}, t, t != 0, train=train,
                                          rngs={"dropout": jax.random.key(rng)}))
    return params, apply


@pytest.mark.parametrize("name,overrides", [
    ("luna", {}),
    ("luna", {"tie_kv": True, "tie_layer_weights": True, "init": "bert"}),
    ("luna", {"pooling": "mean", "use_cls": False, "normalize_before": True,
              "embed_layer_norm": False}),
    ("luna", {"append_eos": True}),
    ("luna", {"append_eos": True, "use_cls": False, "pooling": "mean", "tie_kv": True}),
    ("luna", {"positions": "sinusoidal"}),
    ("luna", {"proj_len": 64}),  # l larger than every sequence
    ("transformer", {}),
    ("transformer", {"positions": "sinusoidal", "tie_layer_weights": True}),
    ("transformer", {"init": "lra", "qkv_dim": 8, "num_heads": 4, "gelu": "tanh",
                     "layer_norm_epsilon": 1e-6, "embed_layer_norm": False}),
])
def test_padding_never_changes_real_outputs(name, overrides):
    model = build_model(small_model_cfg(name, **overrides), TASK)
    toks = _tokens([5, 12, 1, 16], 16)
    params, apply = _init_apply(model, toks)
    logits = apply(toks)
    assert logits.shape == (4, TASK.num_classes)
    wider = jnp.pad(toks, ((0, 0), (0, 8)))  # more padding
    np.testing.assert_allclose(apply(wider), logits, rtol=2e-5, atol=2e-5)
    # Whatever sits under the mask does not matter either.
    noisy = jnp.where(toks == 0, 7, toks)
    out = model.apply({"params": params}, noisy, toks != 0, train=False)
    np.testing.assert_allclose(out, logits, rtol=2e-5, atol=2e-5)


def test_examples_in_a_batch_do_not_interact():
    model = build_model(small_model_cfg(), TASK)
    toks = _tokens([5, 12, 3], 12, seed=1)
    _, apply = _init_apply(model, toks)
    together = apply(toks)
    for i in range(3):
        np.testing.assert_allclose(apply(toks[i:i + 1]), together[i:i + 1], rtol=2e-5, atol=2e-5)


def test_official_parameter_structure():
    model = build_model(small_model_cfg(), TASK)
    params, _ = _init_apply(model, _tokens([4], 6))
    enc = params["encoder"]
    assert enc["packed_init"].shape == (8, 16)
    att = enc["layer_0"]["attention"]
    assert set(att) == {"pack_query", "pack_key", "pack_value", "unpack_query", "unpack_key",
                        "unpack_value", "out"}
    layer = enc["layer_0"]
    assert set(layer) == {"attention", "attention_norm", "packed_norm", "ffn_norm", "ffn"}
    assert "packed_embed_norm" in enc and "layer_norm" in params["embed"]
    # Xavier-uniform with gain 1/sqrt(2) on the projections: bound = sqrt(3/(fan_in+fan_out)).
    k = np.asarray(att["pack_query"]["kernel"])
    assert np.abs(k).max() <= np.sqrt(3.0 / 32) + 1e-6 and np.abs(k).max() > 0.8 * np.sqrt(3.0 / 32)
    assert np.std(np.asarray(enc["packed_init"])) == pytest.approx(16**-0.5, rel=0.35)
    # Tied key/value and tied layers.
    tied = build_model(small_model_cfg(tie_kv=True, tie_layer_weights=True, num_layers=3), TASK)
    params, _ = _init_apply(tied, _tokens([4], 6))
    assert [k for k in params["encoder"] if k.startswith("layer_")] == ["layer_0"]
    assert set(params["encoder"]["layer_0"]["attention"]) == {
        "pack_query", "pack_context", "unpack_query", "unpack_context", "out"}


def test_bert_init_scale():
    model = build_model(small_model_cfg(init="bert", emb_dim=64, num_heads=4), TASK)
    params, _ = _init_apply(model, _tokens([4], 6))
    k = np.asarray(params["encoder"]["layer_0"]["ffn"]["fc1"]["kernel"])
    assert np.std(k) == pytest.approx(0.02, rel=0.1)


def test_effective_packed_length_and_masks():
    cfg = small_model_cfg(proj_len=8)
    model = build_model(cfg, TASK)
    toks = _tokens([2, 5], 5)
    params, _ = _init_apply(model, toks)
    x, mask = model.apply({"params": params}, toks, toks != 0, method=lambda m, t, k: m.embed(
        t, k, deterministic=True))
    _, p, p_mask = model.apply({"params": params}, x, mask, method=lambda m, a, b: m.encoder(
        a, b, deterministic=True))
    assert p.shape == (2, 6, 16)  # min(proj_len=8, 5 tokens + CLS)
    np.testing.assert_array_equal(p_mask, [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])


def test_dropout_is_active_in_training_only():
    model = build_model(small_model_cfg(), TASK)
    toks = _tokens([6, 9], 10)
    params, _ = _init_apply(model, toks)
    run = lambda train, seed: model.apply({"params": params}, toks, toks != 0, train=train,
                                          rngs={"dropout": jax.random.key(seed)})
    np.testing.assert_array_equal(run(False, 0), run(False, 1))
    assert not np.allclose(run(True, 0), run(True, 1))


def test_two_towers_share_one_encoder():
    task = dataclasses.replace(TASK, two_tower=True)
    for combine, width in (("concat", 32), ("concat_mul_sub", 64)):
        model = build_model(small_model_cfg(tower_combine=combine), task)
        a, b = _tokens([4, 7], 8, seed=2), _tokens([8, 3], 8, seed=3)
        params = model.init(jax.random.key(0), a, a != 0, b, b != 0)["params"]
        assert params["head"]["hidden_0"]["kernel"].shape[0] == width
        out = model.apply({"params": params}, a, a != 0, b, b != 0)
        assert out.shape == (2, TASK.num_classes)


def test_bad_model_config_names_the_field():
    with pytest.raises(ValueError, match="model.name='rnn': no such model"):
        small_model_cfg("rnn")
    with pytest.raises(ValueError, match="model.qkv_dim: model 'luna' has no such field"):
        build_model(small_model_cfg(qkv_dim=8), TASK)
    with pytest.raises(ValueError, match="model.pooling"):
        build_model(small_model_cfg(use_cls=False), TASK)
    for field, value in (("init", "xavier"), ("positions", "rope"), ("dtype", "float16"),
                         ("attention_impl", "cudnn"), ("num_heads", 3)):
        with pytest.raises(ValueError, match=f"model.{field}"):
            build_model(small_model_cfg(**{field: value}), TASK)
    with pytest.raises(ValueError, match="model.embed_layer_norm"):
        build_model(small_model_cfg(normalize_before=True), TASK)


# ------------------------------------------------------------------ numbers of the fused layer

def _ln(x, p):  # nn.LayerNorm as flax computes it (fast variance)
    mean = x.mean(-1, keepdims=True)
    var = jnp.maximum((x * x).mean(-1, keepdims=True) - mean * mean, 0.0)
    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * p["scale"] + p["bias"]


def _dense(x, p):
    return x @ p["kernel"] + p.get("bias", 0.0)


def _reference_logits(params, toks, mask, heads):
    """The post-LN Luna classifier written out unfused from its parameters: one nn.Dense per
    projection, flax's LayerNorm, jax.nn.gelu's erfc form, the pure-jnp attention of
    luna_lra.ops.reference (6785641's layer, as a formula)."""
    from luna_lra.ops import reference

    e, enc = params["embed"], params["encoder"]
    b = toks.shape[0]
    x = e["tokens"]["embedding"][toks]
    x = jnp.concatenate([jnp.broadcast_to(e["cls"], (b, 1, x.shape[-1])), x], axis=1)
    mask = jnp.concatenate([jnp.ones((b, 1), bool), mask], axis=1)
    x = _ln(x + e["positions"][None, : x.shape[1]], e["layer_norm"])
    x = jnp.where(mask[..., None], x, 0.0)
    l = min(enc["packed_init"].shape[0], x.shape[1])
    p = _ln(enc["packed_init"][:l], enc["packed_embed_norm"])
    p_mask = jnp.arange(l)[None] < mask.sum(1)[:, None]
    p = jnp.where(p_mask[..., None], jnp.broadcast_to(p, (b,) + p.shape), 0.0)
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, -1)
    for i in range(sum(k.startswith("layer_") for k in enc)):
        lp = enc[f"layer_{i}"]
        a = lp["attention"]
        packed = reference.attention(split(_dense(p, a["pack_query"])),
                                     split(_dense(x, a["pack_key"])),
                                     split(_dense(x, a["pack_value"])), mask).reshape(p.shape)
        y = reference.attention(split(_dense(x, a["unpack_query"])),
                                split(_dense(packed, a["unpack_key"])),
                                split(_dense(packed, a["unpack_value"])), p_mask)
        x = _ln(x + _dense(y.reshape(x.shape), a["out"]), lp["attention_norm"])
        p = _ln(p + packed, lp["packed_norm"])
        h = jax.nn.gelu(_dense(x, lp["ffn"]["fc1"]), approximate=False)
        x = _ln(x + _dense(h, lp["ffn"]["fc2"]), lp["ffn_norm"])
    hd = params["head"]
    return _dense(jax.nn.relu(_dense(x[:, 0], hd["hidden_0"])), hd["logits"])


def test_fused_model_gives_the_unfused_layers_logits_and_gradients():
    model = build_model(small_model_cfg(num_layers=1), TASK)
    toks = _tokens([16, 9, 3, 1], 16, seed=4)
    params, _ = _init_apply(model, toks)
    assert_matches_written_out(model, params, toks,
                               lambda p: _reference_logits(p, toks, toks != 0, 2))


def assert_matches_written_out(model, params, toks, reference_logits):
    """The model's logits and cross-entropy gradients equal those of `reference_logits(params)`
    (a model written out by hand) to float32 rounding, at parameters moved away from their
    zero/one initial values (biases, CLS, LayerNorms)."""
    params = jax.tree.map(lambda a: a + 0.05 * np.sin(np.arange(a.size).reshape(a.shape)),
                          params)
    y = jnp.arange(toks.shape[0]) % model.config.num_classes

    def loss_and_grads(logits_fn):
        def loss(p):
            logits = logits_fn(p)
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y]), logits
        return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

    with jax.default_matmul_precision("highest"):
        (_, out), g_ours = loss_and_grads(lambda p: model.apply({"params": p}, toks, toks != 0))
        (_, want), g_ref = loss_and_grads(reference_logits)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_ref))
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)


def test_dropout_masks_are_flax_bit_for_bit():
    """models.layers.Dropout (unrolled threefry) against nn.Dropout and jax.random.bernoulli."""
    import flax.linen as nn

    from luna_lra.models import layers

    x = jnp.ones((3, 37, 5))
    for seed in range(2):
        rng = jax.random.fold_in(jax.random.key(seed), 11)
        for rate in (0.1, 0.3):
            run = lambda m: jax.jit(lambda r: m.apply({}, x, deterministic=False,
                                                      rngs={"dropout": r}))(rng)
            want, got = run(nn.Dropout(rate)), run(layers.Dropout(rate))
            np.testing.assert_array_equal(got, want)
        raw = jax.random.key_data(rng)
        for shape in ((7,), (2, 3, 17, 5)):
            np.testing.assert_array_equal(jax.jit(layers.bernoulli, static_argnums=(1, 2))(
                raw, 0.9, shape), jax.random.bernoulli(raw, 0.9, shape))
    keep = jax.jit(layers.bernoulli, static_argnums=(1, 2))(rng, 0.9, (20000,))
    assert 0.88 < float(jnp.mean(keep)) < 0.92


def test_layer_norm_and_gelu_match_flax_and_jax():
    import flax.linen as nn

    from luna_lra.models import layers

    x = jax.random.normal(jax.random.key(1), (4, 9, 32)) * 3 + 1
    params = {"scale": jnp.linspace(0.5, 2, 32), "bias": jnp.linspace(-1, 1, 32)}
    loss = lambda m: lambda x, p: jnp.sum(jnp.tanh(m.apply({"params": p}, x)) ** 2)
    ours, flax_ln = loss(layers.LayerNorm()), loss(nn.LayerNorm(epsilon=1e-5))
    np.testing.assert_allclose(layers.LayerNorm().apply({"params": params}, x),
                               nn.LayerNorm(epsilon=1e-5).apply({"params": params}, x),
                               rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(jax.grad(ours, argnums=(0, 1))(x, params)),
                    jax.tree.leaves(jax.grad(flax_ln, argnums=(0, 1))(x, params))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    h = jnp.linspace(-8, 8, 2001)
    for approximate in (False, True):  # exact erf (PyTorch) and tanh (flax nn.gelu's default)
        np.testing.assert_allclose(layers.gelu(h, approximate),
                                   jax.nn.gelu(h, approximate=approximate), atol=2e-6)
        np.testing.assert_allclose(layers.gelu_grad(h, approximate), jax.grad(
            lambda h: jax.nn.gelu(h, approximate).sum())(h), atol=2e-6)
    assert float(jnp.max(jnp.abs(layers.gelu(h, True) - layers.gelu(h)))) > 1e-4  # they differ


@pytest.mark.parametrize("approximate", [False, True])
def test_feed_forward_matches_its_autodiff_with_dropout(approximate):
    """layers.feed_forward's hand-written backward pass against autodiff of its formula."""
    from luna_lra.models import layers

    ks = jax.random.split(jax.random.key(2), 6)
    x = jax.random.normal(ks[0], (3, 5, 8))
    w1, w2 = jax.random.normal(ks[1], (8, 16)) * 0.3, jax.random.normal(ks[2], (16, 8)) * 0.3
    b1, b2 = jax.random.normal(ks[3], (16,)), jax.random.normal(ks[4], (8,))
    for keep, rate in ((None, 0.0), (jax.random.bernoulli(ks[5], 0.7, (3, 5, 16)), 0.3)):
        def plain(x, w1, b1, w2, b2):
            a = jax.nn.gelu(x @ w1 + b1, approximate=approximate)
            a = a if keep is None else jnp.where(keep, a / (1 - rate), 0.0)
            return jnp.sum(jnp.sin(a @ w2 + b2))
        fused = lambda *p: jnp.sum(jnp.sin(layers.feed_forward(*p, keep, rate, approximate)))
        args = (x, w1, b1, w2, b2)
        np.testing.assert_allclose(fused(*args), plain(*args), rtol=1e-5)
        for a, b in zip(jax.grad(fused, argnums=range(5))(*args),
                        jax.grad(plain, argnums=range(5))(*args)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_weight_grad_runs_as_a_plain_matmul_on_the_cpu():
    """layers.weight_grad is x^T g, and on XLA:CPU it compiles to a dot over x's minor axis
    (x copied to a transposed layout first: a matmul YNNPACK runs), where x^T g as written
    compiles to one over its major axis, on the transposed operand."""
    from luna_lra.models import layers

    kx, kg = jax.random.split(jax.random.key(3))
    x, g = jax.random.normal(kx, (7, 8)), jax.random.normal(kg, (7, 5))
    np.testing.assert_allclose(layers.weight_grad(x, g), x.T @ g, rtol=1e-6, atol=1e-6)
    contracted = lambda f: re.findall(r" dot\(.*lhs_contracting_dims=\{(\d)\}",
                                      jax.jit(f).lower(x, g).compile().as_text())
    assert contracted(lambda x, g: x.T @ g) == ["0"]
    assert contracted(layers.weight_grad) == ["1"]


def test_bfloat16_compute_stays_near_float32():
    toks = _tokens([12, 5], 12, seed=5)
    f32 = build_model(small_model_cfg(), TASK)
    params, apply32 = _init_apply(f32, toks)
    bf16 = build_model(small_model_cfg(dtype="bfloat16"), TASK)
    out = bf16.apply({"params": params}, toks, toks != 0)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, apply32(toks), atol=5e-2)


# ------------------------------------------------------------------ faithfulness options

def _embed(model, params, toks):
    return model.apply({"params": params}, toks, toks != 0,
                       method=lambda m, t, k: m.embed(t, k, deterministic=True))


def test_append_eos_places_a_learned_vector_after_the_last_token():
    model = build_model(small_model_cfg(append_eos=True, embed_layer_norm=False), TASK)
    toks = _tokens([3, 6, 0], 6)
    params, _ = _init_apply(model, toks)
    e = params["embed"]
    assert e["eos"].shape == (1, 1, 16) and e["positions"].shape == (24 + 2, 16)
    x, mask = _embed(model, params, toks)
    assert x.shape == (3, 8, 16)  # CLS + 6 + eos
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 1, 0, 0, 0], [1] * 8,
                                         [1, 1, 0, 0, 0, 0, 0, 0]])
    for row, at in ((0, 4), (1, 7), (2, 1)):  # right after CLS + the example's tokens
        np.testing.assert_allclose(x[row, at], e["eos"][0, 0] + e["positions"][at], rtol=1e-6)
    # P's length mask counts CLS and eos: min(proj_len 8, n') slots, lengths 5, 8, 2
    _, _, p_mask = model.apply({"params": params}, x, mask,
                               method=lambda m, a, b: m.encoder(a, b, deterministic=True))
    np.testing.assert_array_equal(p_mask.sum(1), [5, 8, 2])


def test_luna_sinusoidal_is_the_official_scaled_path_and_the_transformer_keeps_lra():
    from luna_lra.models.embed import fairseq_sinusoidal_positions, sinusoidal_positions

    toks = _tokens([5, 3], 5)
    luna = build_model(small_model_cfg(positions="sinusoidal", embed_layer_norm=False), TASK)
    params, _ = _init_apply(luna, toks)
    assert "positions" not in params["embed"]
    x, _ = _embed(luna, params, toks)
    tok = params["embed"]["tokens"]["embedding"][toks[0]]
    table = fairseq_sinusoidal_positions(6, 16, offset=2)
    np.testing.assert_allclose(x[0, 1:], tok * 4.0 + table[1:], rtol=1e-5, atol=1e-6)
    # fairseq's formula, written out: sin | cos halves, 10000^(-i / (half - 1)), position 2..
    i = np.arange(8)
    angle = np.arange(2, 8)[:, None] * np.exp(-i * np.log(10000) / 7)[None]
    np.testing.assert_allclose(table, np.concatenate([np.sin(angle), np.cos(angle)], 1),
                               rtol=1e-5, atol=1e-6)
    tr = build_model(small_model_cfg("transformer", positions="sinusoidal",
                                     embed_layer_norm=False), TASK)
    params, _ = _init_apply(tr, toks)
    x, _ = _embed(tr, params, toks)
    tok = params["embed"]["tokens"]["embedding"][toks[0]]
    np.testing.assert_allclose(x[0, 1:], tok + sinusoidal_positions(25, 16)[1:6], rtol=1e-5,
                               atol=1e-6)


def test_luna_sinusoidal_adds_scaled_positions_to_p():
    from luna_lra.models.embed import fairseq_sinusoidal_positions

    from luna_lra.models import Classifier, model_config

    cfg = model_config(small_model_cfg(positions="sinusoidal", embed_layer_norm=False), TASK)
    model = Classifier(dataclasses.replace(cfg, num_layers=0))  # the initial P, no layer
    toks = _tokens([9], 9)
    params, _ = _init_apply(model, toks)
    x, mask = _embed(model, params, toks)
    _, p, _ = model.apply({"params": params}, x, mask,
                          method=lambda m, a, b: m.encoder(a, b, deterministic=True))
    want = params["encoder"]["packed_init"] * 4.0 + fairseq_sinusoidal_positions(8, 16)
    np.testing.assert_allclose(p[0], want, rtol=1e-5, atol=1e-6)


def test_pre_ln_follows_the_official_rule():
    model = build_model(small_model_cfg(normalize_before=True, embed_layer_norm=False), TASK)
    params, _ = _init_apply(model, _tokens([4], 6))
    assert "packed_embed_norm" not in params["encoder"] and "layer_norm" not in params["embed"]
    assert {"final_norm", "final_packed_norm"} <= set(params["encoder"])


# ------------------------------------------------------------------ the CLS row of the last layer

def _logits_all_rows(model, params, toks, train, rng):
    """The classifier's logits with the encoder computing every position of its last layer."""
    def full(m, t, k):
        x, mask = m.embed(t, k, deterministic=not train)
        out = m.encoder(x, mask, deterministic=not train)
        return m.head(out[0][:, 0] if isinstance(out, tuple) else out[:, 0])
    return model.apply({"params": params}, toks, toks != 0, method=full,
                       rngs={"dropout": jax.random.key(rng)})


@pytest.mark.parametrize("name,overrides", [
    ("luna", {}),
    ("luna", {"normalize_before": True, "embed_layer_norm": False, "tie_kv": True,
              "activation_dropout_rate": 0.2}),
    ("transformer", {"activation_dropout_rate": 0.2}),
])
def test_cls_pooling_computes_only_the_cls_row_but_the_same_numbers(name, overrides):
    """model.last_layer_cls_only: the last layer computes X for position 0 only; logits and
    gradients (training, dropout on: the same masks) equal those of the full computation."""
    model = build_model(small_model_cfg(name, last_layer_cls_only=True, **overrides), TASK)
    toks = _tokens([16, 9, 3], 16, seed=6)
    params, _ = _init_apply(model, toks)
    for train in (False, True):
        def loss(p, fn):
            return jnp.sum(jnp.sin(fn(p)))
        pruned = lambda p: model.apply({"params": p}, toks, toks != 0, train=train,
                                       rngs={"dropout": jax.random.key(3)})
        full = lambda p: _logits_all_rows(model, p, toks, train, 3)
        with jax.default_matmul_precision("highest"):
            np.testing.assert_allclose(pruned(params), full(params), rtol=1e-5, atol=1e-6)
            g1 = jax.grad(loss)(params, pruned)
            g2 = jax.grad(loss)(params, full)
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_dropout_mask_of_the_first_rows_is_that_of_the_whole():
    from luna_lra.models import layers

    rng = jax.random.fold_in(jax.random.key(4), 2)
    for shape, rows in (((3, 11, 5), 1), ((2, 7, 4, 3), 4)):
        np.testing.assert_array_equal(layers.bernoulli(rng, 0.8, shape, rows),
                                      jax.random.bernoulli(rng, 0.8, shape)[:, :rows])


def test_cls_row_only_in_the_pallas_kernels():
    """The unpack kernel with one query row (interpret mode) gives the full model's logits and
    gradients, dropout on (the kernels' counter-hash mask has the same bits at row 0)."""
    toks = _tokens([16, 9, 3], 16, seed=7)
    results = []
    for cls_only in (True, False):
        cfg = small_model_cfg("luna", attention_impl="pallas", last_layer_cls_only=cls_only,
                              dropout_rate=0.1, attention_dropout_rate=0.1)
        model = build_model(cfg, TASK, interpret=True)
        params = model.init(jax.random.key(0), toks, toks != 0)["params"]
        loss = lambda p: jnp.sum(jnp.sin(model.apply(
            {"params": p}, toks, toks != 0, train=True, rngs={"dropout": jax.random.key(5)})))
        with jax.default_matmul_precision("highest"):
            results.append(jax.value_and_grad(loss)(params))
    (v1, g1), (v2, g2) = results
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("overrides", [
    {},
    {"tie_kv": True, "last_layer_cls_only": True, "normalize_before": True,
     "embed_layer_norm": False},
])
def test_folded_attention_gives_the_projected_ones_logits_and_gradients(overrides, monkeypatch):
    """Luna with the projections folded into pack and unpack (ops.folds: what the CPU runs
    at these sizes) against the projections then the attention: the same logits and
    gradients, training with dropout on (the same mask bits)."""
    from luna_lra import ops

    model = build_model(small_model_cfg(dropout_rate=0.1, attention_dropout_rate=0.2,
                                        **overrides), TASK)
    toks = _tokens([16, 9, 3], 16, seed=8)
    params, _ = _init_apply(model, toks)
    params = jax.tree.map(lambda a: a + 0.05 * np.cos(np.arange(a.size).reshape(a.shape)),
                          params)  # biases away from 0
    loss = lambda p: jnp.sum(jnp.sin(model.apply({"params": p}, toks, toks != 0, train=True,
                                                 rngs={"dropout": jax.random.key(2)})))
    results = []
    for fold in (True, False):
        with ops.record_choices() as ran, jax.default_matmul_precision("highest"):
            monkeypatch.setattr(ops, "folds", lambda *a, fold=fold, **k: fold)
            results.append(jax.value_and_grad(loss)(params))
        assert {impl for _, impl in ran} == {"xla (folded)" if fold else "xla"}
    (v1, g1), (v2, g2) = results
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g2))
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)
