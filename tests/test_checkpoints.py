"""luna_lra.checkpoints: one manager, its keep policies, finite-only saves, verified restores."""

import errno
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from luna_lra import checkpoints as ckpt


def state(value):
    return {"params": {"w": jnp.full((3, 4), value, jnp.float32)},
            "step": jnp.asarray(int(value) if np.isfinite(value) else 0)}


def abstract():
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state(0.0))


def manager(tmp_path, keep=2):
    return ckpt.Checkpoints(str(tmp_path), keep=keep, every=10, last_step=100)


def accept(meta, where):
    return None


def test_save_then_restore_the_newest_verified(tmp_path):
    m = manager(tmp_path)
    for step in (10, 20):
        m.save(step, state(step), {"note": step}, None)
    m.wait()
    restored, meta = m.restore_latest(abstract(), accept)
    assert meta["note"] == 20 and float(restored["params"]["w"][0, 0]) == 20.0
    assert meta["state_sha256"] == ckpt.tree_digest(ckpt.to_host(state(20)))


def test_the_last_k_and_the_best_are_kept(tmp_path):
    m = manager(tmp_path, keep=2)
    for step, best in ((10, 0.5), (20, None), (30, 0.7), (40, None), (50, None), (60, None)):
        m.save(step, state(step), {}, best)
    m.wait()
    assert sorted(m.manager.all_steps()) == [30, 50, 60]
    assert m.manager.best_step() == 30
    np.testing.assert_array_equal(ckpt.load_params(str(tmp_path), best=True)["w"],
                                  np.full((3, 4), 30.0, np.float32))


def test_a_checksum_mismatch_is_set_aside_for_the_one_before(tmp_path, caplog):
    m = manager(tmp_path)
    for step in (10, 20):
        m.save(step, state(step), {}, None)
    m.wait()
    meta_dir = tmp_path / "checkpoints" / "20" / "meta"
    meta_file = next(p for p in meta_dir.rglob("*") if p.is_file())
    meta = json.loads(meta_file.read_text())
    meta["state_sha256"] = "0" * 64  # as if the arrays had changed on disk
    meta_file.write_text(json.dumps(meta))
    m = manager(tmp_path)
    restored, _ = m.restore_latest(abstract(), accept)
    assert float(restored["params"]["w"][0, 0]) == 10.0
    assert "checkpoints/20 is damaged: its arrays differ from what was saved" in caplog.text
    assert (tmp_path / "checkpoints_damaged" / "20").is_dir()
    m.save(20, state(20), {}, None)  # the step can be saved again
    m.wait()


def test_non_finite_state_is_never_saved(tmp_path):
    m = manager(tmp_path)
    with pytest.raises(ckpt.NonFiniteState, match="12 of 12 values of the state at step 10"):
        m.save(10, state(float("nan")), {}, None)
    m.wait()
    assert m.manager.all_steps() == []


def test_a_failed_write_is_one_line_with_the_cause(tmp_path, monkeypatch):
    m = manager(tmp_path)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(m.manager, "save", full)
    with pytest.raises(ckpt.CheckpointError) as e:
        m.save(10, state(1.0), {}, None)
    assert str(e.value) == (f"saving checkpoint {tmp_path}/checkpoints/10 failed: OSError: "
                            "[Errno 28] No space left on device")


def test_root_cause_walks_to_the_innermost_error():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("orbax: save failed\nlong details") from inner
    except RuntimeError as outer:
        assert ckpt.root_cause(outer) == "OSError: [Errno 28] No space left on device"
