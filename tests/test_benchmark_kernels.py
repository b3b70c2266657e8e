"""benchmark kernels: the issue's bars computed from timing rows, and the --quick smoke run."""

import json

from luna_lra.benchmark import __main__ as cli, kernels


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
    assert {r["impl"] for r in data["rows"]} == set(kernels.IMPLS)
    assert all(r["status"] == "ok" for r in data["rows"]), data["rows"]
    for c in data["checks"]:  # the interpreted kernels against the float32 reference
        assert c["status"] == "ok"
        tol = 1e-2 if c["dtype"] == "bfloat16" else 1e-5
        assert max(c[f"{x}_max_rel"] for x in ("out", "dq", "dk", "dv")) < tol, c
    assert "## Bars" in md.read_text()
