"""`python -m luna_lra.benchmark official --fairseq DIR [--out results]`: our Luna training step
against the official PyTorch Luna (fairseq-apollo's 2021 release), side by side in one run.

The official code is read from DIR (a clone or a bare snapshot of XuezheMax/fairseq-apollo) at
--commit (the release, 6135e5b): only the files the Luna encoder imports are extracted into a
temporary folder, with package __init__ files that import just those (fairseq's own import
all of fairseq and its dependencies); three names of fairseq/utils.py's imports that Luna never
reaches get empty stand-ins. Nothing of it enters this repository. PyTorch must be installed
(`pip install torch`); neither is imported outside the functions that need them.

Two worker processes, both pinned to the same --threads CPUs: step_worker.py (ours, with and
without model.last_layer_cls_only) and official_worker.py (PyTorch, torch.set_num_threads).
Ours exports its initial parameters and batch; the official model loads them, so without
dropout both first steps must give the same loss and gradient norm (checked in the table).
Then, round after round, each setting runs a few steps of each of the three in turn (the order
rotating per round); speeds are medians over all rounds. Writes OUT/cpu_step_official.md and
.json.
"""

from __future__ import annotations

import importlib.util
import io
import os
import statistics
import subprocess
import tarfile
import tempfile

from luna_lra.benchmark import measure, step
from luna_lra.defaults import base_config

OFFICIAL_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "official_worker.py")
RELEASE = "6135e5b"  # fairseq-apollo's Luna release (README: "The model")
# What LunaLRAEncoder imports, directly or not, at the release.
OFFICIAL_FILES = [f"fairseq/{f}.py" for f in (
    "utils", "incremental_decoding_utils", "modules/gelu", "modules/fairseq_dropout",
    "modules/quant_noise", "modules/layer_norm", "modules/layer_drop",
    "modules/positional_embedding", "modules/learned_positional_embedding",
    "modules/sinusoidal_positional_embedding", "modules/luna_attention",
    "modules/luna_sentence_encoder", "models/luna_lra/luna_lra_encoder")]
# Package files: fairseq.modules exports what luna_sentence_encoder.py and fairseq/utils.py
# import from it; the stand-ins are fairseq/utils.py's imports that Luna never uses.
PACKAGE_FILES = {
    "fairseq/__init__.py": "",
    "fairseq/models/__init__.py": "",
    "fairseq/models/luna_lra/__init__.py": "",
    "fairseq/modules/__init__.py": (
        "from .gelu import gelu, gelu_accurate\n"
        "from .layer_drop import LayerDropModuleList\n"
        "from .layer_norm import LayerNorm\n"
        "from .positional_embedding import PositionalEmbedding\n"
        "from .luna_attention import LunarMultiheadAttention\n"),
    "fairseq/data/__init__.py": "",
    "fairseq/data/iterators.py": "",
    "fairseq/logging/__init__.py": "",
    "fairseq/logging/meters.py": "safe_round = None\n",
    "fairseq/modules/multihead_attention.py": "MultiheadAttention = None\n",
}

# Issue 22's step: step.SPEC's model (batch 8, 1,001 tokens, emb 128, 4 heads, FFN 512, 2
# layers, float32) at l = 16 and 256, dropout 0.3 (hidden and attention; activation 0) and 0.
SPEC = dict(step.SPEC, proj_lens=(16, 256), dropouts=(0.3, 0.0))
QUICK = dict(step.QUICK, proj_lens=(4,), dropouts=(0.3, 0.0))
KINDS = ("official", "cls-row", "every-row")  # ours with / without the last-layer shortcut
BUSY_LOAD = 0.5  # per thread, of other processes: above it the table says the machine was busy


def bases(spec: dict) -> dict:
    """{name: (proj_len, dropout)}: one per model and dropout, e.g. luna16-dropout0.3."""
    return {f"luna{l}-{'dropout' + str(d) if d else 'nodropout'}": (l, d)
            for l in spec["proj_lens"] for d in spec["dropouts"]}


def ours_spec(spec: dict) -> dict:
    settings = {}
    for name, (l, d) in bases(spec).items():
        for kind in KINDS[1:]:
            settings[f"{name}-{kind}"] = dict(
                proj_len=l, dropout_rate=d, attention_dropout_rate=d,
                activation_dropout_rate=0.0, last_layer_cls_only=kind == "cls-row")
    keep = ("batch", "n", "vocab", "classes", "model")
    return dict({k: spec[k] for k in keep}, settings=settings)


def official_spec(spec: dict, params: dict, threads: int) -> dict:
    m, o = spec["model"], base_config().optim
    model = dict(vocab=spec["vocab"], classes=spec["classes"], n=spec["n"],
                 **{k: m[k] for k in ("emb_dim", "num_heads", "mlp_dim", "num_layers",
                                      "classifier_dim")})
    optim = {k: o[k] for k in ("learning_rate", "b1", "b2", "eps", "weight_decay")}
    settings = {name: dict(proj_len=l, dropout=d, params=params[name])
                for name, (l, d) in bases(spec).items()}
    return dict(threads=threads, model=model, optim=optim, settings=settings)


def check_torch() -> None:
    if importlib.util.find_spec("torch") is None:
        raise SystemExit("benchmark official: PyTorch is not installed; `pip install torch` "
                         "(CPU wheel) runs the official Luna")


def extract_official(repo: str, commit: str, dest: str) -> str:
    """The official Luna's files at `commit` of the git repository `repo` under dest; returns
    the commit's full hash. One-line errors for a missing repository or commit."""
    git = lambda *a, **kw: subprocess.run(["git", "-C", repo, *a], capture_output=True, **kw)
    rev = git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}", text=True)
    if rev.returncode != 0:
        raise SystemExit(f"benchmark official: --fairseq {repo}: no commit {commit} there; "
                         "expected a clone of XuezheMax/fairseq-apollo that has the release")
    tar = git("archive", "--format=tar", commit, *OFFICIAL_FILES)
    if tar.returncode != 0:
        raise SystemExit(f"benchmark official: --fairseq {repo} at {commit}: "
                         f"{tar.stderr.decode().strip().splitlines()[0]}")
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as t:
        t.extractall(dest, filter="data")
    for path, text in PACKAGE_FILES.items():
        os.makedirs(os.path.dirname(os.path.join(dest, path)), exist_ok=True)
        with open(os.path.join(dest, path), "w") as f:
            f.write(text)
    return rev.stdout.strip()


def pinned_cpus(threads: int) -> set:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < threads:
        raise SystemExit(f"benchmark official: --threads {threads} but this process may run "
                         f"on {len(cpus)} CPUs")
    return set(cpus[:threads])


def interleave(ours, official, names, rounds: int, steps: int) -> dict:
    """{base: {kind: [step seconds]}}; within each round and setting the three kinds take
    turns, the first of them rotating from round to round."""
    times = {name: {kind: [] for kind in KINDS} for name in names}
    for r in range(rounds):
        for name in names:
            for i in range(len(KINDS)):
                kind = KINDS[(i + r) % len(KINDS)]
                worker = official if kind == "official" else ours
                times[name][kind] += worker.run(name if kind == "official" else
                                                f"{name}-{kind}", steps)
    return times


def turn_steps(times: list, steps: int) -> tuple:
    """(each turn's first step, the others) of one code's step times, turns of `steps`."""
    return times[::steps], [t for i, t in enumerate(times) if i % steps]


def summarise(spec: dict, times: dict, ours_info: dict, official_info: dict,
              steps: int) -> list:
    """A row per setting. With turns of 2 or more steps, also the medians of each turn's
    first step and of the others (`later`): what switching codes costs each of them."""
    rows, dropout = [], {name: d for name, (_, d) in bases(spec).items()}
    for name, by_kind in times.items():
        med = {k: statistics.median(v) for k, v in by_kind.items()}
        theirs = official_info["settings"][name]
        row = dict(setting=name, steps_each=len(by_kind["official"]),
                   **{f"{k}_s": med[k] for k in KINDS},
                   **{f"{k}_iqr_s": step._iqr(v) for k, v in by_kind.items()},
                   ratio_cls_row=med["official"] / med["cls-row"],
                   ratio_every_row=med["official"] / med["every-row"])
        if steps >= 2:
            for k, v in by_kind.items():
                first, later = turn_steps(v, steps)
                row.update({f"{k}_first_s": statistics.median(first),
                            f"{k}_later_s": statistics.median(later)})
            row["ratio_every_row_later"] = row["official_later_s"] / row["every-row_later_s"]
        if not dropout[name]:  # with dropout the two codes draw different bits
            ours = [ours_info["settings"][f"{name}-{kind}"] for kind in KINDS[1:]]
            rel = lambda key: max(abs(o[key] / theirs[key] - 1) for o in ours)
            row.update(loss_rel_diff=rel("loss"), grad_norm_rel_diff=rel("grad_norm"))
        rows.append(row)
    return rows


def bars(rows: list) -> dict:
    return dict(every_row=all(r["ratio_every_row"] >= 1.0 for r in rows),
                cls_row=all(r["ratio_cls_row"] >= 1.3 for r in rows))


def is_busy(meta: dict) -> bool:
    """Other processes' load above BUSY_LOAD per thread: the 1-minute load average before the
    workers start, or at the end less the workers' own (up to one per thread)."""
    t = meta["threads"]
    return meta["load_start"] > BUSY_LOAD * t or meta["load_end"] > (1 + BUSY_LOAD) * t


def to_markdown(meta: dict, rows: list) -> str:
    s, m = meta["spec"], meta["spec"]["model"]
    span = lambda r, k: (f"{r[k + '_s']:.3f} ({r[k + '_iqr_s'][0]:.3f}–"
                         f"{r[k + '_iqr_s'][1]:.3f})")
    diff = lambda r: (f"{r['loss_rel_diff']:.1e} / {r['grad_norm_rel_diff']:.1e}"
                      if "loss_rel_diff" in r else "— (other dropout bits)")
    out = ["# Luna training step on the CPU: ours (JAX, XLA) vs the official PyTorch Luna", "",
           f"- machine: {meta['machine']}; load average (1 min) {meta['load_start']:.2f} at "
           f"the start, {meta['load_end']:.2f} at the end",
           f"- ours: {step._describe_commit(meta['commit'])}, jax {meta['jax_version']}; "
           f"official: XuezheMax/fairseq-apollo at {meta['official_commit']} "
           f"(LunaLRAEncoder, LunaSentenceEncoderLayer, LunarMultiheadAttention; LRAModel's "
           f"head), torch {meta['official']['torch']}",
           f"- command: `{meta['command']}`",
           f"- threads: both processes pinned to the same {meta['threads']} CPUs; torch "
           f"{meta['official']['threads']} intra-op threads, XLA:CPU sized to the CPUs",
           f"- malloc: GLIBC_TUNABLES (luna_lra.host_memory: huge pages; `python -m "
           f"luna_lra.benchmark` starts itself again with them, as the trainer does, and both "
           f"workers inherit them): ours "
           f"`{meta['ours'].get('glibc_tunables', '')}`, official "
           f"`{meta['official'].get('glibc_tunables', '')}`",
           f"- step: forward, backward, gradient norm, AdamW update (ours: "
           f"luna_lra.trainer's train step, jit-compiled; official: torch.optim.AdamW, eager); "
           f"batch {s['batch']}, {s['n'] + 1} tokens ({s['n']} + CLS; example 0 full, the "
           f"others up to n/8 shorter, padded), emb {m['emb_dim']}, {m['num_heads']} heads, "
           f"FFN {m['mlp_dim']}, {m['num_layers']} layers, classifier {m['classifier_dim']}, "
           f"float32; ours with the XLA attention",
           "- settings: luna<l>: Luna-l; dropout0.3: dropout and attention dropout 0.3 "
           "(activation dropout 0, as the official LRA models); nodropout: all 0",
           "- ours, CLS-row shortcut: model.last_layer_cls_only=True (the last layer computes "
           "the X stream at the CLS row only, the one the head reads; the same logits and "
           "gradients); every row: False (every position of every layer, as the official code)",
           f"- timing: {meta['rounds']} rounds of {meta['steps_per_round']} steps per code and "
           "setting, the three taking turns (the first rotating) each round, every step "
           "waited for; median (inter-quartile range) per code",
           "- numbers: the official model loads our initial parameters and batch; without "
           "dropout the first step's loss and gradient norm of both must agree (largest "
           "relative difference, loss / gradient norm)", "",
           "| setting | official s/step | ours, CLS-row shortcut | ours, every row | "
           "official / ours (shortcut) | official / ours (every row) | loss / grad-norm "
           "rel. diff |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['setting']} | {span(r, 'official')} | {span(r, 'cls-row')} | "
                   f"{span(r, 'every-row')} | **{r['ratio_cls_row']:.2f}x** | "
                   f"**{r['ratio_every_row']:.2f}x** | {diff(r)} |")
    if "ratio_every_row_later" in rows[0]:
        out += ["", "Each turn's first step and the others (medians; the first follows the other "
                    "codes' turns, and on a VM that returns freed memory to its host, such as "
                    "this one, it maps the step's temporaries afresh: README, \"The CPU step\"):",
                "", "| setting | official: first / later | ours, every row: first / later | "
                    "official / ours (every row), later steps |", "|---|---|---|---|"]
        out += [f"| {r['setting']} | {r['official_first_s']:.3f} / {r['official_later_s']:.3f} "
                f"| {r['every-row_first_s']:.3f} / {r['every-row_later_s']:.3f} | "
                f"{r['ratio_every_row_later']:.2f}x |" for r in rows]
    ok, busy = bars(rows), is_busy(meta)
    mark = lambda b: " " if busy or not b else "x"
    note = " (not judged: the machine was busy)" if busy else ""
    if busy:
        out += ["", "**The machine was busy** (other processes' load above half the threads): "
                    "PyTorch's OpenMP threads lose far more than XLA's to other processes, so "
                    "these ratios overstate ours; rerun on a quiet machine."]
    out += ["", f"- [{mark(ok['every_row'])}] issue 22's bar: every setting at least 1.0x the "
                f"official step with every row computed{note}",
            f"- [{mark(ok['cls_row'])}] issue 22's bar: every setting at least 1.3x with the "
            f"CLS-row shortcut{note}", ""]
    return "\n".join(out)


def run_official(args) -> dict:
    check_torch()
    spec = QUICK if args.quick else SPEC
    tree = os.path.dirname(os.path.dirname(os.path.dirname(OFFICIAL_WORKER)))
    cpus = pinned_cpus(args.threads)
    load_start = measure.load_average()
    with tempfile.TemporaryDirectory(prefix="luna_official_") as tmp:
        official_commit = extract_official(args.fairseq, args.commit, tmp)
        env = dict(os.environ, PYTHONPATH=tmp)
        workers = {}
        try:
            workers["ours"] = step.Worker(tree, ours_spec(spec), cpus=cpus)
            print(f"[official] ours: {workers['ours'].info}", flush=True)
            params = {name: os.path.join(tmp, f"{name}.npz") for name in bases(spec)}
            for name, path in params.items():
                workers["ours"].ask("export", f"{name}-every-row", path)
            workers["official"] = step.Worker(tree, official_spec(spec, params, args.threads),
                                              script=OFFICIAL_WORKER, cpus=cpus, env=env)
            print(f"[official] official: {workers['official'].info}", flush=True)
            times = interleave(workers["ours"], workers["official"], list(bases(spec)),
                               args.rounds, args.steps)
        finally:
            for w in workers.values():
                w.close()
    infos = {k: w.info for k, w in workers.items()}
    rows = summarise(spec, times, infos["ours"], infos["official"], args.steps)
    meta = dict(measure.provenance_meta(), spec=spec, rounds=args.rounds,
                steps_per_round=args.steps, threads=args.threads,
                official_commit=official_commit, official_repo=os.path.abspath(args.fairseq),
                official=infos["official"], ours=infos["ours"],
                load_start=(load_start or [0])[0], load_end=(measure.load_average() or [0])[0])
    meta["commit"] = infos["ours"]["commit"]
    base = measure.write_table(args.out, "cpu_step_official", to_markdown(meta, rows),
                               dict(meta=meta, rows=rows, times=times))
    for r in rows:
        print(f"[official] {r['setting']}: official {r['official_s']:.3f} s, ours "
              f"{r['cls-row_s']:.3f} s (shortcut, {r['ratio_cls_row']:.2f}x) / "
              f"{r['every-row_s']:.3f} s (every row, {r['ratio_every_row']:.2f}x)", flush=True)
    print(f"[official] wrote {base}.md and .json", flush=True)
    return dict(meta=meta, rows=rows)


def add_parser(sub):
    p = sub.add_parser("official", help="our Luna training step vs the official PyTorch Luna "
                                        "(fairseq-apollo), side by side "
                                        "(results/cpu_step_official.md)")
    p.add_argument("--fairseq", required=True,
                   help="a clone (or bare snapshot) of XuezheMax/fairseq-apollo")
    p.add_argument("--commit", default=RELEASE, help=f"its commit to run (default {RELEASE})")
    p.add_argument("--rounds", type=int, default=15, help="alternations (default 15)")
    p.add_argument("--steps", type=int, default=2, help="steps per code per round (default 2)")
    p.add_argument("--threads", type=int, default=2, help="CPUs for each side (default 2)")
    p.add_argument("--quick", action="store_true", help="a tiny model: a smoke test")
    p.add_argument("--out", default="results", help="output directory (default results/)")
    p.set_defaults(func=run_official)
