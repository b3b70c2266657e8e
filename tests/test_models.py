"""The Luna model and the Transformer baseline: shapes, padding invariance, official structure."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from luna_lra.data import TaskInfo
from luna_lra.defaults import base_config
from luna_lra.models import build_model

TASK = TaskInfo(name="toy", num_classes=5, vocab_size=20, max_length=24)


def small_model_cfg(name="luna", **overrides):
    c = base_config().model
    c.name = name
    c.emb_dim, c.num_heads, c.mlp_dim, c.num_layers = 16, 2, 32, 2
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
    params = model.init(jax.random.key(0), toks, mask)["params"]
    return params, lambda t: model.apply({"params": params}, t, t != 0, train=train,
                                         rngs={"dropout": jax.random.key(rng)})


@pytest.mark.parametrize("name,overrides", [
    ("luna", {}),
    ("luna", {"tie_kv": True, "tie_layer_weights": True, "init": "bert"}),
    ("luna", {"pooling": "mean", "use_cls": False, "normalize_before": True}),
    ("luna", {"proj_len": 64}),  # l larger than every sequence
    ("transformer", {}),
    ("transformer", {"positions": "sinusoidal", "tie_layer_weights": True}),
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
    with pytest.raises(ValueError, match="model.name"):
        build_model(small_model_cfg("rnn"), TASK)
    with pytest.raises(ValueError, match="model.pooling"):
        build_model(small_model_cfg(use_cls=False), TASK)
    model = build_model(small_model_cfg(init="xavier"), TASK)
    with pytest.raises(ValueError, match="model.init"):
        _init_apply(model, _tokens([3], 4))
