"""`python -m luna_lra.benchmark step`: the worker protocol, the interleaving, the table; this
tree against itself (no baseline checkout in CI), so the losses agree to float32 rounding."""

import json
import os

import pytest

from luna_lra import host_memory
from luna_lra.benchmark import __main__ as cli
from luna_lra.benchmark import step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quick_step_against_itself(tmp_path):
    cli.main(["step", "--quick", "--baseline", ROOT, "--rounds", "2", "--steps", "1",
              "--out", str(tmp_path)])
    data = json.loads((tmp_path / "cpu_step.json").read_text())
    assert [r["setting"] for r in data["rows"]] == list(step.QUICK["settings"])
    for r in data["rows"]:
        assert r["steps_each"] == 2 and r["baseline_s"] > 0 and r["new_s"] > 0
        # two processes of one tree: XLA:CPU's threaded reductions may round differently
        assert r["loss_rel_diff"] < 1e-6 and r["grad_norm_rel_diff"] < 1e-5
    for times in data["times"].values():  # every step of both trees was timed
        assert {k: len(v) for k, v in times.items()} == {"baseline": 2, "this tree": 2}
    meta = data["meta"]
    assert meta["baseline_commit"] == meta["commit"] and meta["machine"] and meta["command"]
    # each worker started itself again as the trainer does (malloc's huge pages, where glibc
    # has them), and says with what
    assert [w["huge_pages"] for w in meta["workers"].values()] == [host_memory.available()] * 2
    assert [host_memory.TUNABLE + "=1" in w["glibc_tunables"].split(":")
            for w in meta["workers"].values()] == [host_memory.available()] * 2
    md = (tmp_path / "cpu_step.md").read_text()
    assert "| no-dropout |" in md and "| dropout-0.1 |" in md and "issue 14's bar" in md
