"""`python -m luna_lra.benchmark official`: one-line failures without PyTorch or the official
code, the table from given timings; and, where PyTorch and a fairseq-apollo snapshot are
present (FAIRSEQ_APOLLO=<clone or bare snapshot>), a quick run end to end whose first steps
must give the same loss and gradient norm in both codes."""

import importlib.util
import json
import os
import subprocess

import pytest

from luna_lra.benchmark import __main__ as cli
from luna_lra.benchmark import official


def test_without_torch_it_fails_in_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(SystemExit) as e:
        official.check_torch()
    assert "PyTorch is not installed" in str(e.value) and "\n" not in str(e.value)


def test_a_folder_without_the_release_fails_in_one_line(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with pytest.raises(SystemExit) as e:
        official.extract_official(str(tmp_path), official.RELEASE, str(tmp_path / "out"))
    assert f"no commit {official.RELEASE}" in str(e.value) and "\n" not in str(e.value)


def test_table_ratios_checks_and_bars():
    spec = official.SPEC
    names = list(official.bases(spec))
    assert names == ["luna16-dropout0.3", "luna16-nodropout", "luna256-dropout0.3",
                     "luna256-nodropout"]
    secs = {"official": 1.0, "cls-row": 0.5, "every-row": 0.9}
    times = {n: {k: [v, v * 1.1, v * 0.9] for k, v in secs.items()} for n in names}
    ours = {"settings": {f"{n}-{k}": dict(loss=0.7, grad_norm=2.0)
                         for n in names for k in official.KINDS[1:]}}
    theirs = {"settings": {n: dict(loss=0.7 * (1 + 1e-7), grad_norm=2.0) for n in names}}
    assert official.turn_steps([1, 2, 3, 4, 5, 6], 3) == ([1, 4], [2, 3, 5, 6])
    assert "official_first_s" not in official.summarise(spec, times, ours, theirs, 1)[0]
    rows = official.summarise(spec, times, ours, theirs, 3)
    for r in rows:
        assert r["ratio_cls_row"] == pytest.approx(2.0)
        assert r["ratio_every_row"] == pytest.approx(1 / 0.9)
        assert r["every-row_first_s"] == pytest.approx(0.9)  # turns of 3: the first step, 0.9
        assert r["every-row_later_s"] == pytest.approx(0.9)  # median of 0.99 and 0.81
        assert r["ratio_every_row_later"] == pytest.approx(1 / 0.9)
        assert ("loss_rel_diff" in r) == r["setting"].endswith("nodropout")
    assert rows[1]["loss_rel_diff"] == pytest.approx(1e-7, rel=1e-3)
    assert official.bars(rows) == dict(every_row=True, cls_row=True)
    meta = dict(spec=spec, machine="m", load_start=3.0, load_end=0.1, commit="abc", threads=2,
                jax_version="0", official_commit="6135e5b",
                official=dict(torch="2", threads=2, glibc_tunables=""),
                ours=dict(glibc_tunables="glibc.malloc.hugetlb=1"), command="c", rounds=3,
                steps_per_round=1)
    md = official.to_markdown(meta, rows)
    assert "ours `glibc.malloc.hugetlb=1`, official ``" in md
    assert "| luna16-nodropout |" in md and "**2.00x**" in md and "**1.11x**" in md
    assert "| luna16-nodropout | 1.000 / 1.000 | 0.900 / 0.900 | 1.11x |" in md
    assert "[ ] issue 22's bar" in md and "machine was busy" in md and "not judged" in md
    quiet = dict(meta, load_start=0.2, load_end=2.3)  # at the end the workers' own 2 count
    assert "[x] issue 22's bar" in official.to_markdown(quiet, rows)
    assert not official.is_busy(quiet) and official.is_busy(dict(quiet, load_end=3.1))
    rows[0]["ratio_cls_row"] = 1.2
    assert official.bars(rows) == dict(every_row=True, cls_row=False)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs PyTorch")
@pytest.mark.skipif(not os.environ.get("FAIRSEQ_APOLLO"),
                    reason="needs FAIRSEQ_APOLLO=<a fairseq-apollo clone with 6135e5b>")
def test_quick_run_against_the_official_code(tmp_path):
    cli.main(["official", "--quick", "--fairseq", os.environ["FAIRSEQ_APOLLO"], "--rounds", "2",
              "--steps", "1", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "cpu_step_official.json").read_text())
    assert [r["setting"] for r in data["rows"]] == list(official.bases(official.QUICK))
    for r in data["rows"]:
        assert r["steps_each"] == 2 and all(r[f"{k}_s"] > 0 for k in official.KINDS)
        if "loss_rel_diff" in r:  # our parameters in the official model: the same numbers
            assert r["loss_rel_diff"] < 1e-5 and r["grad_norm_rel_diff"] < 1e-4
    assert data["meta"]["official_commit"].startswith(official.RELEASE)
