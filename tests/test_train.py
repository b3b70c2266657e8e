"""The trainer: learning, result.json, resuming, schedules, and the errors a user can act on."""

import json
import os
import types

import numpy as np
import pytest

from conftest import run_train
from luna_lra import data as data_lib, host_memory, trainer
from luna_lra.data import TaskInfo, pipeline
from luna_lra.defaults import base_config



def toy_task_module(n_train=1024, length=12):
    """A learnable toy task: the label is the first token mod 4."""
    mod = types.ModuleType("toy")
    mod.TASK = TaskInfo("toy", 4, 10, length)

    def load_splits(cfg):
        rng = np.random.default_rng(0)

        def make(n):
            x = rng.integers(1, 10, size=(n, length))
            lengths = rng.integers(2, length + 1, size=n)
            x[np.arange(length)[None] >= lengths[:, None]] = 0
            return {"inputs": x.astype(np.int32), "targets": (x[:, 0] % 4).astype(np.int32)}

        return {"train": make(n_train), "val": make(100), "test": make(90)}

    mod.load_splits = load_splits
    return mod


def toy_config(num_steps=60):
    c = base_config()
    c.data.task, c.data.max_length, c.data.batch_size, c.data.eval_batch_size = "toy", 12, 32, 32
    c.model.emb_dim, c.model.num_heads, c.model.mlp_dim, c.model.num_layers = 16, 2, 32, 1
    c.model.proj_len, c.model.classifier_dim = 4, 16
    c.model.dropout_rate = c.model.attention_dropout_rate = 0.1
    c.optim.learning_rate, c.optim.warmup_steps = 3e-3, 10
    c.train.num_steps, c.train.eval_every, c.train.log_every = num_steps, 20, 10
    c.train.checkpoint_every, c.train.progress_bar, c.train.results_dir = 20, False, ""
    return c


@pytest.fixture
def toy(monkeypatch):
    mod = toy_task_module()
    monkeypatch.setitem(data_lib.TASK_MODULES, "toy", "toy")
    monkeypatch.setattr(data_lib, "get_task_module", lambda name: mod)
    return mod


def _metrics(workdir, split):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


def test_loss_falls_and_result_is_written(toy, tmp_path):
    result = trainer.train_and_evaluate(toy_config(120), str(tmp_path))
    train = _metrics(tmp_path, "train")
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    assert result["val_accuracy"] > 0.8 and result["test_accuracy"] > 0.8
    saved = json.load(open(tmp_path / "result.json"))
    for key in ("test_accuracy", "val_accuracy", "step", "config", "majority_baseline_test_accuracy"):
        assert key in saved
    assert saved["config"]["data"]["task"] == "toy"
    assert saved["attention_ran"] == {"pack": "xla (folded)", "unpack": "xla (folded)"}
    assert saved["step"] in (20, 40, 60, 80, 100, 120)
    assert os.listdir(tmp_path / "tensorboard")


def test_resumed_run_ends_where_an_uninterrupted_one_does(toy, tmp_path):
    full = trainer.train_and_evaluate(toy_config(60), str(tmp_path / "full"))
    trainer.train_and_evaluate(toy_config(40), str(tmp_path / "split"))  # "stopped" at 40
    resumed = trainer.train_and_evaluate(toy_config(60), str(tmp_path / "split"))
    for key in ("test_accuracy", "val_accuracy", "step"):
        assert resumed[key] == full[key]
    assert _metrics(tmp_path / "split", "train") == _metrics(tmp_path / "full", "train")


def test_resuming_with_another_config_is_refused(toy, tmp_path):
    trainer.train_and_evaluate(toy_config(20), str(tmp_path))
    other = toy_config(40)
    other.model.emb_dim = 32
    with pytest.raises(trainer.Refused, match=r"model\.emb_dim: 16 vs 32"):
        trainer.train_and_evaluate(other, str(tmp_path))


def test_non_finite_loss_stops_the_run(toy, tmp_path):
    c = toy_config(40)
    c.optim.learning_rate = 1e30
    c.optim.warmup_steps = 0
    with pytest.raises(trainer.Diverged, match="non-finite loss or weights at step"):
        trainer.train_and_evaluate(c, str(tmp_path))


def test_inverse_sqrt_schedule_matches_fairseq():
    c = base_config().optim
    c.learning_rate, c.warmup_steps, c.warmup_init_lr = 1e-3, 100, 1e-7
    s = trainer.make_schedule(c, 1000)
    assert float(s(0)) == pytest.approx(1e-7)
    assert float(s(50)) == pytest.approx(1e-7 + 0.5 * (1e-3 - 1e-7))
    assert float(s(100)) == pytest.approx(1e-3)
    assert float(s(400)) == pytest.approx(1e-3 * 0.5)
    c.schedule = "cosine"
    c.end_lr = 0.0
    s = trainer.make_schedule(c, 1100)
    assert float(s(100)) == pytest.approx(1e-3) and float(s(1100)) == pytest.approx(0.0, abs=1e-9)


def test_train_batches_are_a_function_of_the_step():
    split = {"inputs": np.arange(100).reshape(50, 2), "targets": np.arange(50)}
    a = pipeline.TrainBatches(split, 8, seed=3)
    b = pipeline.TrainBatches(split, 8, seed=3)
    seen = np.concatenate([a(s)["targets"] for s in range(6)])
    assert len(set(seen)) == 48  # one epoch without repeats; the remainder is dropped
    np.testing.assert_array_equal(a(13)["targets"], b(13)["targets"])
    halves = [pipeline.TrainBatches(split, 8, 3, i, 2)(13)["targets"] for i in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), a(13)["targets"])


def test_eval_batches_count_every_example_once_across_hosts():
    split = {"inputs": np.ones((23, 3), np.int32), "targets": np.arange(23)}
    for hosts in (1, 2):
        seen = []
        for host in range(hosts):
            for batch in pipeline.eval_batches(split, 8, host, hosts):
                seen += list(batch["targets"][batch["weights"] > 0])
        assert sorted(seen) == list(range(23))


def _cli(*args):
    return run_train(args, check=False, timeout=120)


def test_cli_names_unknown_fields_and_variants(tmp_path):
    out = _cli("--config", "configs/listops.py:tiny", "--config.model.emb_size=3",
               "--workdir", str(tmp_path))
    assert out.returncode == 2 and "model.emb_size" in out.stderr
    assert "'emb_dim'" in out.stderr  # the fields that do exist
    out = _cli("--config", "configs/listops.py:luna512", "--workdir", str(tmp_path))
    assert out.returncode == 2 and "unknown variant 'luna512'" in out.stderr
    out = _cli("--config", "configs/nope.py:tiny", "--workdir", str(tmp_path))
    assert out.returncode == 2 and "configs/nope.py" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_cli_trains_on_the_release_layout_and_writes_result_json(tmp_path):
    from luna_lra.data import listops_generator as generator

    release = tmp_path / "lra_release"
    generator.generate(str(release / "listops-1000"), num_train=200, num_val=40, num_test=40,
                       min_length=5, max_length=48, max_depth=5, max_args=5, seed=0,
                       show_progress=False)
    workdir = tmp_path / "run"
    out = _cli("--config", "configs/listops.py:tiny", "--workdir", str(workdir),
               f"--config.data.data_dir={release}", "--config.data.generate_if_missing=False",
               "--config.data.max_length=48", "--config.train.num_steps=6",
               "--config.train.eval_every=3", "--config.train.log_every=3",
               "--config.train.checkpoint_every=3", "--config.train.results_dir=",
               "--config.model.num_layers=1")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.load(open(workdir / "result.json"))
    for key in ("test_accuracy", "val_accuracy", "step", "config"):
        assert key in result
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["step"] in (3, 6)
    assert result["config"]["data"]["data_dir"] == str(release)
    assert "test accuracy" in out.stdout.lower() or "Test acc." in out.stdout
    # the trainer started itself again with malloc's huge pages on, where glibc has them
    assert result["huge_pages"] is host_memory.available()
    assert (f"{host_memory.TUNABLE}=1" in result["glibc_tunables"].split(":")) is (
        host_memory.available())


def test_cli_reports_a_missing_data_directory(tmp_path):
    out = _cli("--config", "configs/listops.py:luna16", "--workdir", str(tmp_path / "w"),
               f"--config.data.data_dir={tmp_path / 'nowhere'}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{tmp_path / 'nowhere'}" in out.stderr and "basic_train.tsv" in out.stderr


@pytest.mark.parametrize("free_bytes, refused", [(5 << 40, False), (64 << 10, True)])
def test_the_disk_check_agrees_across_processes_on_any_disk(monkeypatch, tmp_path, free_bytes,
                                                            refused):
    """Process 0's free-space figure goes to every process through a device array, where JAX
    without x64 keeps 32 bits: a 5 TiB disk must not wrap into a negative (full) one."""
    import jax
    from jax.experimental import multihost_utils
    monkeypatch.setattr(trainer.shutil, "disk_usage", lambda _: types.SimpleNamespace(
        free=free_bytes))
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "broadcast_one_to_all",
                        lambda x: np.asarray(jax.device_get(jax.numpy.asarray(x))))
    run = types.SimpleNamespace(workdir=str(tmp_path), checkpoints=types.SimpleNamespace(
        newest_size=lambda: 1 << 20))
    if refused:
        with pytest.raises(trainer.TrainingError, match=r"64 KiB free, about 2304 KiB needed"):
            trainer.check_space(run, state={})
    else:
        trainer.check_space(run, state={})
