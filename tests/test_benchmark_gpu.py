"""`python -m luna_lra.benchmark gpu --dry-run`: the GPU script's every part on the CPU at tiny
sizes (kernels interpreted), the bars it computes, and the three files it leaves."""

import json
import os
import subprocess
import sys
import tarfile

import pytest

from luna_lra.benchmark import gpu


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


def test_bars_from_part_tables(tmp_path):
    parts = str(tmp_path)
    _write(f"{parts}/kernels/kernels_h200.json", {"bars": [dict(
        op="pack", n=4096, speedup=2.5, memory_ratio=0.4, time_over_floor=2.0, verdict="pass")]})
    ok = lambda model, sps, mib: dict(model=model, n=4096, status="ok", steps_per_s=sps,
                                      memory_mib=mib)
    _write(f"{parts}/model/efficiency.json", {"rows": [
        ok("transformer", 1.0, 1000.0), ok("luna16", 5.0, 150.0),
        ok("transformer-cudnn", 2.5, 400.0)]})
    losses = [0.7, 0.69, 0.68]
    _write(f"{parts}/train/train.json", dict(
        runs={"xla": dict(status="ok", steps_per_s=10.0, losses=losses),
              "pallas": dict(status="ok", steps_per_s=12.0, losses=losses)},
        tolerance=0.02, common_steps=3, max_abs_diff_first20=0.0, max_abs_diff_all=0.0))
    bars = dict(gpu.kernel_bar_rows(parts) + gpu.model_bar_rows(parts)
                + gpu.train_bar_rows(parts))
    assert bars["kernels pack n=4096: >= 2x XLA, <= 1/2 memory, <= 3x floor"].endswith("pass")
    values = list(bars.values())
    assert "speed 5.00x, memory 0.150" in values  # luna16 vs the XLA Transformer
    assert "speed 2.00x, memory 0.375" in values  # luna16 vs cuDNN
    assert sum(v == "not measured" for v in values) == 3  # luna256, the two Pallas rows
    assert any(v.startswith("10.00 vs 12.00 steps/s: pass") for v in values)


@pytest.mark.slow
def test_dry_run_exercises_every_part(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "luna_lra.benchmark", "gpu", "--dry-run",
                           "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["parts.tar.gz", "summary.json", "summary.md"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["dry_run"] and summary["meta"]["commit"]
    assert {k: p["status"] for k, p in summary["parts"].items()} == {
        "tests": "ok", "kernels": "ok", "model": "ok", "train": "ok"}
    with tarfile.open(out / "parts.tar.gz") as tar:
        names = tar.getnames()
        train = json.load(tar.extractfile("parts/train/train.json"))
    assert {k: r["status"] for k, r in train["runs"].items()} == {"xla": "ok", "pallas": "ok"}
    # the interpreted kernels train like the reference: same params, data and dropout masks
    assert train["max_abs_diff_first20"] <= train["tolerance"]
    assert "parts/kernels/kernels_cpu.md" in names and "parts/model/efficiency.json" in names
    assert "parts/logs/tests.log" in names
    assert "| bar | result |" in proc.stdout  # the table comes last
