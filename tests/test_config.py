"""Config files: the one loader, the checks before any data is read, and what makes two runs
the same run."""

import glob
import os

import pytest

from conftest import REPO, run_train
from luna_lra import config as config_lib
from luna_lra.defaults import recipe

CONFIG_FILES = sorted(os.path.relpath(p, REPO) for p in glob.glob(f"{REPO}/configs/*.py"))
VARIANTS = ("luna16", "luna128", "luna256", "transformer", "tiny")  # every config file's


@pytest.fixture(autouse=True)
def _from_repo(monkeypatch):
    monkeypatch.chdir(REPO)


@pytest.mark.parametrize("path", CONFIG_FILES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_loads_and_passes_the_checks(path, variant):
    c = config_lib.load(f"{path}:{variant}")
    config_lib.check(c)
    assert c.variant == variant and c.config_file == path
    if variant.startswith("luna"):
        assert c.model.name == "luna" and c.model.proj_len == int(variant[4:])
    if variant == "transformer":  # LRA's MlpBlock: the model's dropout after the GELU too
        assert c.model.name == "transformer"
        assert c.model.activation_dropout_rate == c.model.dropout_rate


def test_overrides_are_parsed_by_the_field_type():
    c = config_lib.load("configs/listops.py:tiny", {
        "train.num_steps": "7", "optim.learning_rate": "3e-4", "train.progress_bar": "false",
        "data.data_dir": "/x", "model.proj_len": 8})
    assert c.train.num_steps == 7 and c.optim.learning_rate == 3e-4
    assert c.train.progress_bar is False and c.data.data_dir == "/x" and c.model.proj_len == 8


@pytest.mark.parametrize("spec, overrides, message", [
    ("configs/nope.py:tiny", {}, "no file 'configs/nope.py'"),
    ("configs/listops.py:luna512", {}, "unknown variant 'luna512'"),
    ("configs/listops", {}, "expected configs/<task>.py:<variant>"),
    ("configs/listops.py:tiny", {"model.emb_size": "3"}, "no field 'emb_size' under model"),
    ("configs/listops.py:tiny", {"train.num_steps": "ten"}, "train.num_steps='ten': expected a"),
    ("configs/listops.py:tiny", {"train.num_steps": 2.5}, "train.num_steps=2.5: expected a"),
    ("configs/listops.py:tiny", {"model": "x"}, "is a section"),
])
def test_loader_mistakes_name_the_field(spec, overrides, message):
    with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config_lib.load(spec, overrides)


def test_a_recipe_cannot_set_a_field_that_does_not_exist():
    with pytest.raises(ValueError, match="model.emb_size .model 'luna' has no such field"):
        recipe("x.py", "luna16", data={}, recipes={"luna": {"model": {"name": "luna",
                                                                     "emb_size": 3}}})
    with pytest.raises(ValueError, match="model.qkv_dim .model 'luna'"):  # the Transformer's
        recipe("x.py", "luna", data={}, recipes={"luna": {"model": {"name": "luna",
                                                                   "qkv_dim": 3}}})


def test_model_name_override_switches_the_model_fields():
    c = config_lib.load("configs/listops.py:tiny", {"model.name": "transformer",
                                                    "model.qkv_dim": "32"})
    assert c.model.name == "transformer" and c.model.qkv_dim == 32 and "proj_len" not in c.model
    assert c.model.emb_dim == 64 and c.model.num_layers == 2  # shared fields keep the recipe's
    config_lib.check(c)
    with pytest.raises(config_lib.ConfigError, match="model.name='no_such_model': no such"):
        config_lib.load("configs/listops.py:tiny", {"model.name": "no_such_model"})


BAD = [  # (overrides, what the one line must name)
    ({"model.emb_dim": "62"}, "model.emb_dim=62: must be a multiple of model.num_heads=4"),
    ({"model.emb_dim": "-64"}, "model.emb_dim=-64: expected an integer >= 1"),
    ({"model.num_heads": "0"}, "model.num_heads=0"),
    ({"model.proj_len": "0"}, "model.proj_len=0"),
    ({"data.batch_size": "0"}, "data.batch_size=0"),
    ({"train.log_every": "0"}, "train.log_every=0"),
    ({"train.eval_every": "-5"}, "train.eval_every=-5"),
    ({"train.num_steps": "0"}, "train.num_steps=0"),
    ({"train.keep_checkpoints": "0"}, "train.keep_checkpoints=0"),
    ({"model.dropout_rate": "1.0"}, "model.dropout_rate=1.0: expected a number >= 0 and < 1"),
    ({"optim.learning_rate": "0"}, "optim.learning_rate=0.0: expected a number > 0"),
    ({"optim.schedule": "linear"}, "optim.schedule='linear': expected one of"),
    ({"model.dtype": "float16"}, "model.dtype='float16'"),
    ({"model.attention_impl": "flash"}, "model.attention_impl='flash'"),
    ({"model.attention_impl": "pallas"}, "needs a GPU or TPU"),
    ({"model.pooling": "cls", "model.use_cls": "false"}, "model.pooling='cls': needs"),
    ({"data.task": ""}, "data.task is empty"),
    ({"data.task": "foo"}, "data.task='foo': expected one of"),
]


@pytest.mark.parametrize("overrides, message", BAD)
def test_configs_that_cannot_run_are_refused_in_one_line(overrides, message):
    c = config_lib.load("configs/listops.py:tiny", overrides)
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.check(c, backend="cpu")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_batches_must_divide_over_devices_and_processes():
    c = config_lib.load("configs/listops.py:tiny", {"data.batch_size": "60"})
    with pytest.raises(config_lib.ConfigError, match="data.batch_size=60: must be a multiple "
                                                     "of the 8 devices"):
        config_lib.check(c, devices=8)
    c = config_lib.load("configs/listops.py:tiny", {"data.batch_size": "63",
                                                    "data.eval_batch_size": "63"})
    with pytest.raises(config_lib.ConfigError, match="the 2 processes"):
        config_lib.check(c, processes=2)


def test_the_transformer_without_attention_dropout_kernels_is_checked():
    c = config_lib.load("configs/text.py:transformer", {"model.attention_impl": "cudnn"})
    with pytest.raises(config_lib.ConfigError, match="no attention dropout"):
        config_lib.check(c)


def test_bookkeeping_fields_do_not_make_another_run():
    a = config_lib.to_dict(config_lib.load("configs/listops.py:tiny"))
    b = config_lib.to_dict(config_lib.load("configs/listops.py:tiny", {
        "data.data_dir": "/moved", "data.eval_batch_size": "32", "model.attention_impl": "auto",
        "train.checkpoint_every": "7", "train.log_every": "3", "train.keep_checkpoints": "5"}))
    assert config_lib.differences(a, b) == []
    c = config_lib.to_dict(config_lib.load("configs/listops.py:tiny", {"seed": "1"}))
    assert config_lib.differences(a, c) == ["seed: 0 vs 1"]


def test_a_run_may_be_extended_not_shortened_nor_changed():
    short = config_lib.to_dict(config_lib.load("configs/listops.py:tiny",
                                               {"train.num_steps": "100"}))
    long = config_lib.to_dict(config_lib.load("configs/listops.py:tiny"))
    assert config_lib.extension_blockers(short, long) == []
    assert "a run can be made longer, not shorter" in config_lib.extension_blockers(long, short)[0]
    other = config_lib.to_dict(config_lib.load("configs/listops.py:tiny", {"seed": "3"}))
    assert config_lib.extension_blockers(short, other)
    # A cosine schedule depends on num_steps: a longer run is another run.
    cos = lambda n: config_lib.to_dict(config_lib.load("configs/image.py:transformer",
                                                       {"train.num_steps": str(n)}))
    assert config_lib.extension_blockers(cos(100), cos(200))


def _cli(*argv):
    return run_train(argv, check=False, timeout=120)


@pytest.mark.parametrize("extra, message", [
    (["--config.model.emb_dim=62"], "model.emb_dim=62"),
    (["--config.train.log_every=0"], "train.log_every=0"),
    (["--config.model.attention_impl=pallas"], "needs a GPU or TPU"),
])
def test_cli_mistakes_exit_2_with_one_line_and_no_traceback(tmp_path, extra, message):
    out = _cli("--config", "configs/listops.py:tiny", "--workdir", str(tmp_path / "w"), *extra)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and message in out.stderr
    assert not (tmp_path / "w").exists()  # refused before the workdir or any data


def test_cli_refuses_a_workdir_it_cannot_write(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = _cli("--config", "configs/listops.py:tiny", "--workdir", str(blocker / "w"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"--workdir {blocker / 'w'}: cannot write there" in out.stderr


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_luna_recipes_see_the_official_inputs(path):
    """<CLS> x </s>, as fairseq-preprocess and the LRA task give them; Image's max_positions
    cuts the eos away, so it has none."""
    for variant in ("luna16", "luna256", "tiny"):
        m = config_lib.load(f"{path}:{variant}").model
        assert m.use_cls and m.append_eos == ("image" not in path), (path, variant)
    assert not config_lib.load(f"{path}:transformer").model.append_eos
