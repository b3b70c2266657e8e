"""benchmark kernels: the issue's bars computed from timing rows, the --quick smoke run, and
tokamax (the comparator, Python >= 3.12) against the oracle."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernel_checks import rel
from luna_lra.benchmark import __main__ as cli, kernels
from luna_lra.ops import reference


def _row(op, n, impl, ms, mib, bw_share, flop_share, l=256):
    return dict(op=op, n=n, l=l, impl=impl, status="ok", fwdbwd_ms=ms, fwdbwd_program_mib=mib,
                fwdbwd_bw_share=bw_share, fwdbwd_flop_share=flop_share)


def test_bars_pass_and_fail():
    rows = [
        _row("pack", 4096, "xla", 10.0, 1000.0, 0.1, 0.05),
        _row("pack", 4096, "pallas", 4.0, 400.0, 0.2, 0.5),  # 2.5x, 0.4, 2x the floor: pass
        _row("pack", 8192, "xla", 10.0, 1000.0, 0.1, 0.05),
        _row("pack", 8192, "pallas", 6.0, 600.0, 0.1, 0.2),  # 1.67x, 0.6, 5x the floor
        _row("pack", 2048, "pallas", 1.0, 1.0, 1.0, 1.0),  # n < 4K: not a bar
        _row("pack", 4096, "pallas", 1.0, 1.0, 1.0, 1.0, l=128),  # l != 256: not a bar
    ]
    bars = {(b["op"], b["n"]): b for b in kernels.kernel_bars(rows)}
    assert set(bars) == {("pack", 4096), ("pack", 8192), ("unpack", 4096), ("unpack", 8192)}
    assert bars["pack", 4096]["verdict"] == "pass"
    assert abs(bars["pack", 4096]["speedup"] - 2.5) < 1e-9
    assert abs(bars["pack", 4096]["time_over_floor"] - 2.0) < 1e-9
    assert bars["pack", 8192]["verdict"] == (
        "FAIL: speed-up < 2, memory > 1/2, time > 3x floor")
    assert bars["unpack", 4096]["verdict"] == "not measured"


def test_quick_run_writes_tables(tmp_path):
    cli.main(["kernels", "--quick", "--out", str(tmp_path)])
    (md,) = tmp_path.glob("kernels_*.md")
    data = json.loads(md.with_suffix(".json").read_text())
    assert {r["impl"] for r in data["rows"]} == set(kernels.impls(interpret=True))
    assert all(r["status"] == "ok" for r in data["rows"]), data["rows"]
    assert {c["impl"] for c in data["checks"]} == set(kernels.kernel_impls(interpret=True))
    for c in data["checks"]:  # the interpreted kernels against the float32 reference
        assert c["status"] == "ok"
        tol = {"bfloat16": 1e-2, "float16": 2.5e-3}.get(c["dtype"], 1e-5)
        assert max(c[f"{x}_max_rel"] for x in ("out", "dq", "dk", "dv")) < tol, c
    assert "## Bars" in md.read_text()


@pytest.mark.parametrize("kind", ["pack", "unpack"])
def test_tokamax_matches_the_oracle(kind):
    # The comparator the benchmark times, with tokamax's XLA implementation on the CPU: out and
    # the gradients equal the oracle's at ragged lengths (padding masks; every example keeps a
    # real key: tokamax has no rule for a row with none, the oracle's gives zeros).
    pytest.importorskip("tokamax", reason="tokamax is installed with Python >= 3.12 only")
    rng = np.random.default_rng(3)
    lq, lk = (16, 100) if kind == "pack" else (100, 16)
    q, k, v, g = (jnp.asarray(rng.normal(size=(2, m, 2, 64)), jnp.float32)
                  for m in (lq, lk, lk, lq))
    mask = jnp.arange(lk)[None, :] < jnp.array([lk - 5, 3])[:, None]

    def fwd_bwd(f):
        out, vjp = jax.vjp(lambda q, k, v: f(q, k, v, mask), q, k, v)
        return (out, *vjp(g))

    with jax.default_matmul_precision("highest"):
        got = fwd_bwd(kernels.tokamax_attention("xla"))
        want = fwd_bwd(reference.attention)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        assert rel(a, b) < 1e-5, name
