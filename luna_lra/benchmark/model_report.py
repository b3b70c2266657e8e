"""The efficiency table of `python -m luna_lra.benchmark model`: log-log slopes, the issue's
bar, the Markdown tables, the plot; `write` puts efficiency.md/.json/.png in a folder."""

from __future__ import annotations


import numpy as np

from luna_lra.benchmark import measure
from luna_lra.benchmark.measure import fmt as _fmt
from luna_lra.benchmark.measure import length_name

MODEL_BASELINE = "transformer"  # the row every ratio is to (the benchmark always runs it)

def fit_slope(ns, values):
    """Least-squares slope of log(value) against log(n) (~1: linear growth, ~2: quadratic);
    None with fewer than two usable (positive, finite) points."""
    pts = [(float(n), float(v)) for n, v in zip(ns, values)
           if v is not None and np.isfinite(v) and v > 0 and n > 0]
    if len(pts) < 2 or len({n for n, _ in pts}) < 2:
        return None
    x = np.log([n for n, _ in pts])
    y = np.log([v for _, v in pts])
    return float(np.polyfit(x, y, 1)[0])


def model_slopes(rows, variants):
    out = {}
    for v in variants:
        ok = [r for r in rows if r["model"] == v and r["status"] == "ok"]
        ns = [r["n"] for r in ok]
        out[v] = dict(
            time=fit_slope(ns, [r.get("step_s") for r in ok]),
            memory=fit_slope(ns, [r.get("memory_mib") for r in ok]),
            lengths=ns)
    return out


def _row(rows, variant, n):
    for r in rows:
        if r["model"] == variant and r["n"] == n:
            return r
    return None


def _status_cell(r):
    if r is None:
        return "—"
    s = r["status"]
    if s.startswith("OOM") and r.get("estimate_gib"):
        return f"{s} (est. {r['estimate_gib']:.1f} GiB)"
    return s


def _range(ns):
    return f"{length_name(min(ns))}–{length_name(max(ns))}, {len(ns)} points" if ns else "—"


def model_checks(rows, slopes, lengths):
    """The issue's bar for the CPU table: Luna-16's step-time slope < 1.15, the Transformer's
    > 1.6, Luna-16's memory at the longest length < 0.1 x the Transformer's, or the Transformer
    out of memory there while Luna-16 runs."""
    if "luna16" not in slopes or MODEL_BASELINE not in slopes:
        return []
    out = []
    s = slopes["luna16"]["time"]
    out.append(("Luna-16 (XLA) step-time slope < 1.15", s is not None and s < 1.15,
                f"{_fmt(s)} over {_range(slopes['luna16']['lengths'])}"))
    s = slopes[MODEL_BASELINE]["time"]
    out.append(("Transformer (XLA) step-time slope > 1.6", s is not None and s > 1.6,
                f"{_fmt(s)} over {_range(slopes[MODEL_BASELINE]['lengths'])}"))
    n = max(lengths)
    luna, tr = _row(rows, "luna16", n), _row(rows, MODEL_BASELINE, n)
    if luna is None or luna["status"] != "ok":
        out.append((f"memory at {length_name(n)}", False, "Luna-16 did not run there"))
    elif tr is not None and tr["status"] == "ok":
        frac = luna["memory_mib"] / tr["memory_mib"]
        out.append((f"Luna-16 memory at {length_name(n)} < 0.1 x Transformer's", frac < 0.1,
                    f"{luna['memory_mib']:.0f} MiB vs {tr['memory_mib']:.0f} MiB: {frac:.3f}"))
    elif tr is not None and tr["status"].startswith(("OOM", "skipped: OOM")):
        out.append((f"Transformer out of memory at {length_name(n)} where Luna-16 runs", True,
                    f"Transformer: {_status_cell(tr)}; Luna-16: {luna['memory_mib']:.0f} MiB"))
    else:
        out.append((f"memory at {length_name(n)}", False,
                    f"Transformer: {_status_cell(tr)} (not an OOM: nothing to compare)"))
    return out


def _header(meta) -> list:
    return [f"# Training-step efficiency: Luna vs softmax attention ({meta['mode']} mode)", "",
           f"- machine: {meta['machine']}"
           + (f"; load average (1 min) {meta['load_avg_start'][0]:.2f} at the start, "
              f"{meta['load_avg_end'][0]:.2f} at the end (timings need a quiet machine)"
              if meta.get("load_avg_start") and meta.get("load_avg_end") else ""),
           f"- jax {meta['jax_version']}, backend {meta['backend']}, commit {meta['commit']}",
           f"- command: `{meta['command']}`",
           f"- model: {meta['model_desc']}; batch {meta['batch']}, dtype {meta['dtype']}, "
           f"dropout {meta['dropout_desc']}; random bytes with padding (example 0 full, the "
           "others up to n/8 shorter), n tokens + the CLS token",
           f"- step: luna_lra.trainer.make_steps' train step (forward + backward + AdamW "
           f"update), jit with the state donated; speed = 1 / median of {meta['steps']} timed "
           f"steps after {meta['warmup']} warm-up step, each ended with jax.block_until_ready; "
           "compile time apart (below)",
           f"- memory: {meta['memory_desc']}",
           f"- isolation: {meta['isolation_desc']}",
           f"- out of memory: {meta['oom_desc']}",
           f"- not run here: {meta['not_run']}" if meta.get("not_run") else None,
           f"- wall time {meta['wall_s']:.0f} s" + (f"; time budget {meta['budget_s']:g} s"
                                                    if meta.get("budget_s") else ""),
           ""]


def _ratio_cells(rows, variant, lengths, key, value_fmt, ratio_fmt):
    """A table row's cells: row[key] at each length, with its ratio to MODEL_BASELINE's there
    in parentheses when that ran; a status for what did not run, — for a missing value."""
    cells = []
    for n in lengths:
        r, base = _row(rows, variant, n), _row(rows, MODEL_BASELINE, n)
        if r is None or r["status"] != "ok":
            cells.append(_status_cell(r))
        elif r.get(key) is None:
            cells.append("—")
        else:
            ratio = (f" ({ratio_fmt.format(r[key] / base[key])})"
                     if base is not None and base["status"] == "ok" and base.get(key) else "")
            cells.append(value_fmt.format(r[key]) + ratio)
    return " | ".join(cells)


def model_markdown(meta, rows, slopes):
    lengths, variants = meta["lengths"], meta["models"]
    label = lambda v: meta["labels"][v]
    heads = " | ".join(length_name(n) for n in lengths)
    out = _header(meta)
    if meta["mode"] == "quick":
        out += ["**Quick mode: a tiny model at short lengths, a smoke test; the figures mean "
                "nothing.**", ""]
    out += [f"## Speed: steps per second (speed-up vs {label(MODEL_BASELINE)} at the same n)", "",
            f"| model | {heads} | slope of step time (log-log fit) |",
            "|---|" + "---|" * len(lengths) + "---|"]
    out += [f"| {label(v)} | " + _ratio_cells(rows, v, lengths, "steps_per_s", "{:.3g}", "{:.2f}x")
            + f" | {_fmt(slopes[v]['time'])} ({_range(slopes[v]['lengths'])}) |"
            for v in variants]
    out += ["", f"## Peak memory: MiB ({meta['memory']}; fraction of {label(MODEL_BASELINE)}'s "
                f"at the same n)", "",
            f"| model | {heads} | slope of memory (log-log fit) |",
            "|---|" + "---|" * len(lengths) + "---|"]
    out += [f"| {label(v)} | " + _ratio_cells(rows, v, lengths, "memory_mib", "{:.0f}", "{:.3f}")
            + f" | {_fmt(slopes[v]['memory'])} ({_range(slopes[v]['lengths'])}) |"
            for v in variants]
    out += ["", "## Step time (ms) and compile time (s)", "",
            f"| model | {heads} |", "|---|" + "---|" * len(lengths)]
    for v in variants:
        cells = []
        for n in lengths:
            r = _row(rows, v, n)
            if r is None or r["status"] != "ok":
                cells.append(_status_cell(r))
            else:
                cells.append(f"{1e3 * r['step_s']:.4g} ms / {r['compile_s']:.1f} s")
        out.append(f"| {label(v)} | " + " | ".join(cells) + " |")
    checks = model_checks(rows, slopes, lengths)
    if checks:
        out += ["", "## The issue's bar (meant for `--mode cpu`: n = 1K..16K)", ""]
        out += [f"- [{'x' if ok else ' '}] {name}: {detail}" for name, ok, detail in checks]
    out += ["", "Slopes: least squares of log(step time) (or log(memory)) against log(n) over "
                "the lengths where the model ran; ~1 is linear growth, ~2 quadratic. Raw numbers "
                "(every timed step, compile and init time, RSS before/peak, XLA's memory "
                "analysis of each compiled step as program_mib, the estimate, errors) are in "
                "efficiency.json; the plot is efficiency.png."]
    return "\n".join(x for x in out if x is not None) + "\n"


def model_plot(path, meta, rows, slopes):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, scale, ylabel, skey in (
            (axes[0], "step_s", 1e3, "step time (ms)", "time"),
            (axes[1], "memory_mib", 1.0, f"memory (MiB, {meta['memory']})", "memory")):
        for v in meta["models"]:
            ok = [r for r in rows if r["model"] == v and r["status"] == "ok"
                  and r.get(key) is not None and r[key] > 0]
            if not ok:
                continue
            s = slopes[v][skey]
            ax.plot([r["n"] for r in ok], [scale * r[key] for r in ok], marker="o",
                    linestyle="--" if v.endswith(("pallas", "cudnn")) else "-",
                    label=f"{meta['labels'][v]}: slope {_fmt(s)}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(meta["lengths"], [length_name(n) for n in meta["lengths"]])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ref = [r for r in rows if r["model"] == MODEL_BASELINE and r["status"] == "ok"
               and r.get(key)]
        if ref:  # guide lines through the Transformer's first point: slope 1 and slope 2
            n0, y0 = ref[0]["n"], scale * ref[0][key]
            xs = np.array([min(meta["lengths"]), max(meta["lengths"])], float)
            for k, style in ((1, ":"), (2, "-.")):
                ax.plot(xs, y0 * (xs / n0) ** k, color="grey", linestyle=style, linewidth=0.8,
                        label=f"slope {k} (guide)")
        ax.set_xlabel("sequence length n")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    axes[0].set_title("training step time vs n (log-log)")
    axes[1].set_title("peak memory vs n (log-log)")
    fig.suptitle(f"{meta['machine']}: batch {meta['batch']}, {meta['dtype']}, "
                 f"{meta['mode']} mode", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)




def write(out_dir: str, meta: dict, rows: list) -> dict:
    """OUT/efficiency.md, .json and .png; returns the JSON's data."""
    slopes = model_slopes(rows, meta["models"])
    data = dict(meta=meta, rows=rows, slopes=slopes,
                checks=[dict(check=c, ok=ok, detail=d)
                        for c, ok, d in model_checks(rows, slopes, meta["lengths"])])
    base = measure.write_table(out_dir, "efficiency", model_markdown(meta, rows, slopes), data)
    model_plot(base + ".png", meta, rows, slopes)
    print(f"[model] wrote {base}.md, .json and .png in {meta['wall_s']:.0f} s", flush=True)
    return data
