"""`python -m luna_lra.benchmark model`: the log-log slope fit, the report (tables, OOM and skipped
cells, the issue's bar), the OOM path of a capped worker, and the --quick smoke run end to end."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from luna_lra.benchmark import measure, model, model_report


# ------------------------------------------------------------------------------ slope fit

def test_fit_slope_recovers_power_laws():
    ns = [1024, 2048, 4096, 8192, 16384]
    assert model_report.fit_slope(ns, [3e-3 * n for n in ns]) == pytest.approx(1.0)
    assert model_report.fit_slope(ns, [5e-9 * n**2 for n in ns]) == pytest.approx(2.0)
    # linear + quadratic: the fit lies between, and the curve's local slopes bound it
    mixed = [1e-3 * n + 1e-7 * n**2 for n in ns]
    assert 1.0 < model_report.fit_slope(ns, mixed) < 2.0
    # least squares, not the end points: noise on the inner points moves it a little
    rng = np.random.default_rng(0)
    noisy = [n * math.exp(rng.normal(0, 0.05)) for n in ns]
    assert model_report.fit_slope(ns, noisy) == pytest.approx(1.0, abs=0.1)
    x, y = np.log(ns), np.log(noisy)
    assert model_report.fit_slope(ns, noisy) == pytest.approx(np.polyfit(x, y, 1)[0])


def test_fit_slope_skips_missing_points():
    assert model_report.fit_slope([1024, 2048, 4096], [1.0, None, 4.0]) == pytest.approx(1.0)
    assert model_report.fit_slope([1024, 2048], [1.0, float("nan")]) is None
    assert model_report.fit_slope([1024], [1.0]) is None
    assert model_report.fit_slope([1024, 1024], [1.0, 2.0]) is None
    assert model_report.fit_slope([], []) is None


def test_lengths_parse_and_print():
    assert [model._parse_length(x) for x in "1K,2k,3072,16K".split(",")] == \
        [1024, 2048, 3072, 16384]
    assert measure.length_name(16384) == "16K" and measure.length_name(1000) == "1000"


# ------------------------------------------------------------------------------ report

def _synthetic():
    ns = [1024, 2048, 4096, 8192, 16384]
    rows = []
    for n in ns:
        rows.append(dict(model="luna16", n=n, status="ok", step_s=1e-4 * n, steps_per_s=1e4 / n,
                         memory_mib=0.25 * n, compile_s=3.0))
        if n <= 4096:
            rows.append(dict(model="transformer", n=n, status="ok", step_s=1e-7 * n**2,
                             steps_per_s=1e7 / n**2, memory_mib=1e-3 * n**2, compile_s=2.0))
        elif n == 8192:
            rows.append(dict(model="transformer", n=n, status="OOM (measured)",
                             estimate_gib=38.2))
        else:
            rows.append(dict(model="transformer", n=n, status="skipped: OOM at 8K"))
    meta = dict(mode="cpu", machine="test machine", device_kind="cpu", backend="cpu",
                jax_version="x", commit="abc", command="python -m luna_lra.benchmark model",
                model_desc="m", batch=2, dtype="float32", dropout_desc="zero", steps=3, warmup=1,
                memory="rss", memory_desc=model.MEMORY_MEASURES["rss"], isolation_desc="i",
                oom_desc="o", lengths=ns, models=["transformer", "luna16"], wall_s=1.0,
                labels={v: model.row_label(v) for v in ("transformer", "luna16")})
    return meta, rows


def test_markdown_tables_relative_cells_oom_and_bar():
    meta, rows = _synthetic()
    slopes = model_report.model_slopes(rows, meta["models"])
    assert slopes["luna16"]["time"] == pytest.approx(1.0)
    assert slopes["transformer"]["time"] == pytest.approx(2.0)
    assert slopes["transformer"]["lengths"] == [1024, 2048, 4096]
    md = model_report.model_markdown(meta, rows, slopes)
    lines = md.splitlines()
    speed = next(l for l in lines if l.startswith("| Luna-16 (XLA) |"))
    cells = [c.strip() for c in speed.strip("|").split("|")]
    assert cells[0] == "Luna-16 (XLA)" and len(cells) == 1 + 5 + 1
    # at 1K: Luna 9.77 steps/s vs the Transformer's 9.54: 1.02x; 4K: 4.1x; beyond: no baseline
    assert cells[1] == "9.77 (1.02x)" and cells[3] == "2.44 (4.10x)" and cells[4] == "1.22"
    assert cells[6].startswith("1.00 (1K–16K, 5 points)")
    tr = next(l for l in lines if l.startswith("| Transformer (XLA) |"))
    assert "OOM (measured) (est. 38.2 GiB)" in tr and "skipped: OOM at 8K" in tr
    assert "2.00 (1K–4K, 3 points)" in tr
    mem = [l for l in lines if l.startswith("| Luna-16 (XLA) |")][1]
    assert "256 (0.244)" in mem  # 0.25 * 1024 MiB vs 1e-3 * 1024**2 MiB
    assert "- [x] Luna-16 (XLA) step-time slope < 1.15" in md
    assert "- [x] Transformer (XLA) step-time slope > 1.6" in md
    assert "- [x] Transformer out of memory at 16K where Luna-16 runs" in md


def test_bar_fails_when_luna_grows_too_fast():
    meta, rows = _synthetic()
    for r in rows:
        if r["model"] == "luna16":
            r["step_s"] = 1e-7 * r["n"] ** 1.5
    checks = model_report.model_checks(rows, model_report.model_slopes(rows, meta["models"]),
                                    meta["lengths"])
    assert [ok for _, ok, _ in checks] == [False, True, True]


# ------------------------------------------------------------------------------ workers

@pytest.mark.slow
def test_capped_worker_reports_oom_not_crash():
    """A step that needs more than the worker's RLIMIT_AS headroom: XLA's allocation fails in
    the worker, which reports 'OOM (measured)'; the caller gets a row."""
    spec = dict(variant="transformer", n=2048, batch=2, size="tiny", dtype="float32",
                dropout="zero", steps=1, warmup=1, memory="rss", mem_cap_bytes=1 << 20, seed=0)
    row = model.run_model_isolated(spec, timeout_s=120)
    assert row["status"].startswith("OOM (measured)"), row
    assert row["model"] == "transformer" and row["n"] == 2048


@pytest.mark.slow
def test_quick_run_writes_markdown_json_png(tmp_path):
    out = tmp_path / "bench"
    env = dict(os.environ, JAX_PLATFORMS="cpu")  # the installed package (pip install -e .)
    proc = subprocess.run([sys.executable, "-m", "luna_lra.benchmark", "model", "--quick",
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    data = json.loads((out / "efficiency.json").read_text())
    meta, rows = data["meta"], data["rows"]
    assert meta["mode"] == "quick" and meta["lengths"] == [128, 256]
    assert meta["models"] == ["transformer", "luna16"] and meta["memory"] == "rss"
    assert meta["jax_version"] and meta["commit"] and "--quick" in meta["command"]
    assert {(r["model"], r["n"]) for r in rows} == {
        (m, n) for m in meta["models"] for n in meta["lengths"]}
    for r in rows:
        assert r["status"] == "ok", r
        assert r["step_s"] > 0 and len(r["step_times_s"]) == 1 and r["compile_s"] > 0
        assert r["memory_mib"] > 0 and r["memory_measure"] == "rss"
        assert r["rss_peak_mib"] >= r["rss_before_mib"] and math.isfinite(r["loss"])
    for v in meta["models"]:
        assert data["slopes"][v]["time"] is not None and data["slopes"][v]["memory"] is not None

    md = (out / "efficiency.md").read_text()
    assert md.startswith("# Training-step efficiency")
    assert "--quick" in md and meta["commit"] in md and "jax " + meta["jax_version"] in md
    for title in ("## Speed: steps per second", "## Peak memory: MiB",
                  "## Step time (ms) and compile time (s)"):
        assert title in md
    speed, memory, times = [[c.strip() for c in l.strip().strip("|").split("|")]
                            for l in md.splitlines() if l.startswith("| Luna-16 (XLA) |")]
    assert len(speed) == len(memory) == 4 and len(times) == 3  # label, 128, 256 (, slope)
    assert speed[1].endswith("x)") and memory[1].endswith(")") and times[1].endswith(" s")
    assert speed[3].endswith("(128–256, 2 points)")

    png = (out / "efficiency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    image = plt.imread(str(out / "efficiency.png"))
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400


def test_failures_are_told_apart():
    assert measure.failure(RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating")) == \
        "OOM (measured)"
    assert measure.failure(MemoryError()) == "OOM (measured)"
    internal = RuntimeError("INTERNAL: YNNPACK operation failed")
    assert measure.failure(internal, capped=True) == "OOM (measured)"
    assert measure.failure(internal) == "error: RuntimeError: INTERNAL: YNNPACK operation failed"
    assert measure.failure(ValueError("bad shape\nmore")) == "error: ValueError: bad shape"
