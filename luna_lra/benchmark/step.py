"""`python -m luna_lra.benchmark step --baseline DIR [--out results]`: the Luna training step
(forward, backward and the AdamW update of luna_lra.trainer) of this tree against a baseline
checkout, side by side in one run.

Each tree runs step_worker.py in its own process (working directory = the tree, so its own
luna_lra is imported); both build the same model from the same seed and the same batch. The
coordinator then alternates: a few steps of one, a few of the other, round after round, so
both see the same machine load; speeds are medians over all rounds. Writes OUT/cpu_step.md and
.json with the machine, both commits, the command and both trees' first-step losses (which
must agree: same parameters, data and dropout bits).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from luna_lra.benchmark import measure

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "step_worker.py")
# Issue 14's step: batch 8, 1,001 tokens (1,000 + CLS), emb 128, 4 heads, FFN 512, 2 layers,
# Luna-16, float32.
SPEC = dict(batch=8, n=1000, vocab=257, classes=2, model=dict(
    name="luna", emb_dim=128, num_heads=4, mlp_dim=512, num_layers=2, proj_len=16,
    classifier_dim=512, dtype="float32", attention_impl="xla"),
    settings={"no-dropout": dict(dropout_rate=0.0, attention_dropout_rate=0.0),
              "dropout-0.1": dict(dropout_rate=0.1, attention_dropout_rate=0.1)})
QUICK = dict(SPEC, batch=2, n=64, model=dict(SPEC["model"], emb_dim=32, mlp_dim=64,
                                              num_layers=1))


class Worker:
    """A worker (step_worker.py by default) in `tree` as a child process, spoken to line by
    line. script: another worker file with the same protocol; cpus: the CPUs it may run on
    (XLA:CPU sizes its thread pool to them); env: its environment."""

    def __init__(self, tree: str, spec: dict, script: str = WORKER, cpus=None, env=None):
        code = f"import runpy; runpy.run_path({script!r}, run_name='__main__')"
        pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
        self.proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)], cwd=tree,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     preexec_fn=pin, env=env)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"step worker died (rc {self.proc.wait()}); see its stderr")
        return json.loads(line)

    def ask(self, *words) -> dict:
        self.proc.stdin.write(" ".join(map(str, words)) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def run(self, setting: str, steps: int) -> list:
        return self.ask("run", setting, steps)["times"]

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def interleave(workers: dict, settings, rounds: int, steps: int) -> dict:
    """{setting: {tree: [step seconds]}}, alternating trees (and which goes first) per round."""
    times = {s: {name: [] for name in workers} for s in settings}
    names = list(workers)
    for r in range(rounds):
        for s in settings:
            for name in (names if r % 2 == 0 else names[::-1]):
                times[s][name] += workers[name].run(s, steps)
    return times


def summarise(times: dict, infos: dict) -> list:
    rows = []
    for setting, by_tree in times.items():
        old, new = (statistics.median(by_tree[k]) for k in ("baseline", "this tree"))
        li = {k: infos[k]["settings"][setting] for k in infos}
        loss_rel = abs(li["this tree"]["loss"] - li["baseline"]["loss"]) / abs(
            li["baseline"]["loss"])
        gn_rel = abs(li["this tree"]["grad_norm"] - li["baseline"]["grad_norm"]) / abs(
            li["baseline"]["grad_norm"])
        rows.append(dict(setting=setting, baseline_s=old, new_s=new, speedup=old / new,
                         steps_each=len(by_tree["baseline"]), loss_rel_diff=loss_rel,
                         grad_norm_rel_diff=gn_rel,
                         baseline_iqr_s=_iqr(by_tree["baseline"]),
                         new_iqr_s=_iqr(by_tree["this tree"])))
    return rows


def _iqr(xs):
    q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
    return [q[0], q[2]]


def to_markdown(meta: dict, rows: list) -> str:
    s = meta["spec"]
    m = s["model"]
    out = [f"# Luna training step on the CPU: this tree vs {meta['baseline_commit']}", "",
           f"- machine: {meta['machine']}; load average (1 min) {meta['load_start']:.2f} at "
           f"the start, {meta['load_end']:.2f} at the end",
           f"- this tree: {_describe_commit(meta['commit'])}; baseline: "
           f"{meta['baseline_tree']} at commit {meta['baseline_commit']}; jax "
           f"{meta['jax_version']}",
           f"- command: `{meta['command']}`",
           f"- step: luna_lra.trainer.make_steps' train step (forward, backward, AdamW "
           f"update), jit-compiled; batch {s['batch']}, {s['n'] + 1} tokens ({s['n']} + CLS, "
           f"padding: example 0 full, the others up to n/8 shorter), emb {m['emb_dim']}, "
           f"{m['num_heads']} heads, FFN {m['mlp_dim']}, {m['num_layers']} layers, "
           f"Luna-{m['proj_len']}, {m['dtype']}, XLA attention",
           "- model.last_layer_cls_only (the last layer computes the X stream at the CLS row "
           "only, the one the head reads: the same logits and gradients): "
           + ", ".join(f"{name} {w.get('last_layer_cls_only', False)}"
                       for name, w in meta["workers"].items()),
           "- malloc: GLIBC_TUNABLES (luna_lra.host_memory, as the trainer starts): "
           + ", ".join(f"{name} `{w.get('glibc_tunables', '')}`"
                       for name, w in meta["workers"].items()),
           "- dropout-0.1: model.dropout_rate = model.attention_dropout_rate = 0.1 "
           "(activation dropout 0); no-dropout: all 0",
           f"- timing: {meta['rounds']} rounds of {meta['steps_per_round']} steps per tree "
           "and setting, the trees alternating (and swapping which goes first) each round, "
           "each step ended by block_until_ready; median (inter-quartile range) per tree",
           "- numbers: both trees initialise the same parameters from seed 0 and train on the "
           "same batch; the first step's loss and gradient norm must agree to float32 "
           "rounding (columns on the right)", "",
           "| setting | baseline s/step | this tree s/step | speed-up | loss rel. diff | "
           "grad-norm rel. diff |", "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['setting']} | {r['baseline_s']:.3f} ({r['baseline_iqr_s'][0]:.3f}–"
                   f"{r['baseline_iqr_s'][1]:.3f}) | {r['new_s']:.3f} ({r['new_iqr_s'][0]:.3f}–"
                   f"{r['new_iqr_s'][1]:.3f}) | **{r['speedup']:.2f}x** | "
                   f"{r['loss_rel_diff']:.1e} | {r['grad_norm_rel_diff']:.1e} |")
    bar = all(r["speedup"] >= 1.4 for r in rows)
    out += ["", f"- [{'x' if bar else ' '}] issue 14's bar: at least 1.4x faster in every "
                "setting", ""]
    return "\n".join(out)


def _describe_commit(commit: str) -> str:
    if commit.endswith("-dirty"):
        return f"uncommitted changes on top of commit {commit[:-len('-dirty')]}"
    return f"commit {commit}"


def run_step(args) -> dict:
    spec = QUICK if args.quick else SPEC
    trees = {"baseline": os.path.abspath(args.baseline),
             "this tree": os.path.dirname(os.path.dirname(os.path.dirname(WORKER)))}
    load_start = measure.load_average()
    workers = {}
    try:
        for name, tree in trees.items():
            workers[name] = Worker(tree, spec)
            print(f"[step] {name}: {workers[name].info}", flush=True)
        times = interleave(workers, spec["settings"], args.rounds, args.steps)
    finally:
        for w in workers.values():
            w.close()
    infos = {k: w.info for k, w in workers.items()}
    rows = summarise(times, infos)
    meta = dict(measure.provenance_meta(), spec=spec, rounds=args.rounds,
                steps_per_round=args.steps, baseline_tree=trees["baseline"],
                baseline_commit=infos["baseline"]["commit"], workers=infos,
                load_start=(load_start or [0])[0], load_end=(measure.load_average() or [0])[0])
    meta["commit"] = infos["this tree"]["commit"]
    base = measure.write_table(args.out, "cpu_step", to_markdown(meta, rows),
                               dict(meta=meta, rows=rows, times=times))
    for r in rows:
        print(f"[step] {r['setting']}: {r['baseline_s']:.3f} s -> {r['new_s']:.3f} s "
              f"({r['speedup']:.2f}x), loss rel. diff {r['loss_rel_diff']:.1e}", flush=True)
    print(f"[step] wrote {base}.md and .json", flush=True)
    return dict(meta=meta, rows=rows)


def add_parser(sub):
    p = sub.add_parser("step", help="the Luna training step of this tree vs a baseline "
                                    "checkout, side by side (results/cpu_step.md)")
    p.add_argument("--baseline", required=True,
                   help="a checkout to compare with, e.g. `git worktree add "
                        "/work/baseline_6785641 6785641`")
    p.add_argument("--rounds", type=int, default=8, help="alternations (default 8)")
    p.add_argument("--steps", type=int, default=3, help="steps per tree per round (default 3)")
    p.add_argument("--quick", action="store_true", help="a tiny model: a smoke test")
    p.add_argument("--out", default="results", help="output directory (default results/)")
    p.set_defaults(func=run_step)
