"""Experiment report: verdicts, every labelled secondary test, per-dimension BH, power, plots.

Written to `<runs>/<experiment>/report/` as `report.md`, a self-contained `report.html` (plots
inlined) and PNG files; the same verdict table is echoed to the terminal. Everything is recomputed
from the saved predictions, with seeded resampling, so a rerun reproduces the report byte for byte.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import numpy as np

from pianolab import track
from pianolab.ab import stats
from pianolab.ab.collect import Results, collect
from pianolab.ab.power import minimal_detectable_delta, power_analysis
from pianolab.ab.spec import BASELINE, Experiment
from pianolab.data.percepiano import DIMENSIONS
from pianolab.evaluate import plots

SECONDARY = ("pearson", "r2", "within_excerpt_pearson")


def _sign(res: Results) -> float:
    """+1 for metrics where higher is better, -1 otherwise (so that a positive difference = better)."""
    from pianolab.evaluate.metrics import METRICS

    return 1.0 if METRICS.get(res.metric).higher_is_better else -1.0


def _diffs(res: Results, i: int) -> np.ndarray:
    """d[seed, fold] of variant i against the baseline, signed so that positive = better."""
    return _sign(res) * (res.scores[i] - res.scores[res.variants.index(BASELINE)])


def _item_tests(res: Results, v: str) -> list:
    """Bootstrap over excerpt groups and sign-flip permutation on seed 0's pooled out-of-fold items.

    A metric that needs groups (within-excerpt) is bootstrapped as Pearson on group-demeaned values."""
    from pianolab.evaluate.metrics import METRICS, demean_by_group

    fn = METRICS.get(res.metric)
    idx_a, y_a, p_a = res.oof[BASELINE][0]
    idx_b, _, p_b = res.oof[v][0]
    order_a, order_b = np.argsort(idx_a), np.argsort(idx_b)
    y, pa, pb = y_a[order_a], p_a[order_a], p_b[order_b]
    g = res.groups()[idx_a[order_a]]
    if fn.needs_groups:
        y, pa, pb = (demean_by_group(x, g) for x in (y, pa, pb))
        fn = METRICS.get("pearson")
    boot = stats.bootstrap_groups(y, pa, pb, lambda t, p: fn(t, p).value, groups=g, n_boot=1000, seed=0)
    perm = stats.permutation_test_items((pa - y) ** 2, (pb - y) ** 2, groups=g, n_perm=5000, seed=0)
    return [boot, perm]


def analyse(exp: Experiment, res: Results) -> dict:
    """Every number of the report, as plain data."""
    verdicts = stats.verdicts(np.stack([_sign(res) * s for s in res.scores]), res.n_train, res.n_test,
                              exp.rope, exp.alpha, baseline=res.variants.index(BASELINE))
    out = {"variants": {}, "n_train": res.n_train, "n_test": res.n_test}
    for i, v in enumerate(res.variants):
        row = {"mean": float(np.mean(res.scores[i])), "sd": float(np.std(res.scores[i], ddof=1))}
        if v != BASELINE:
            d = _diffs(res, i)
            dim_d = _sign(res) * (res.per_dim[i] - res.per_dim[res.variants.index(BASELINE)])
            row.update(
                verdict=verdicts[i],
                corrected=stats.corrected_t_test(d, res.n_train, res.n_test, exp.alpha),
                bayes=stats.bayesian_correlated_t(d, res.n_train, res.n_test, exp.rope),
                naive=stats.naive_paired_t(d, exp.alpha),
                wilcoxon=stats.wilcoxon_signed_rank(d, exp.alpha),
                cohens_d=stats.cohens_d(d, exp.alpha),
                corrected_d=stats.corrected_effect_size(d, res.n_train, res.n_test, exp.alpha),
                p_improve=stats.prob_improvement(d, exp.alpha),
                items=_item_tests(res, v),
                dims=None if np.isnan(dim_d).any() else stats.per_dimension(dim_d, res.n_train, res.n_test,
                                                                              exp.alpha),
                dim_delta=np.nanmean(dim_d, axis=(0, 1)),
                power=power_analysis(d, res.n_train, res.n_test, max(exp.rope, 1e-6), exp.alpha)
                if _plannable(d) else None,
                mdd=minimal_detectable_delta(d, res.n_train, res.n_test, alpha=exp.alpha)
                if _plannable(d) else None,
                cells=d)
        out["variants"][v] = row
    return out


def _plannable(d: np.ndarray) -> bool:
    """A power analysis needs a pilot variance with at least 2 degrees of freedom (3 cells)."""
    return d.size >= 3 and np.std(d) > 0


def _secondary_table(exp: Experiment, root) -> list[str]:
    lines = ["| variant | " + " | ".join(SECONDARY) + " |", "|---" * (len(SECONDARY) + 1) + "|"]
    cols = {m: collect(exp, root, metric=m) for m in SECONDARY}
    for i, v in enumerate(exp.variant_names):
        cells = [f"{np.mean(cols[m].scores[i]):.3f} ± {np.std(cols[m].scores[i], ddof=1):.3f}"
                 for m in SECONDARY]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines


def _plots(exp: Experiment, res: Results, a: dict, out: Path) -> dict[str, Path]:
    paths = {}
    others = [v for v in res.variants if v != BASELINE]
    fig, ax = plots.figure(1, 2, panel=(5.0, 0.5 + 0.45 * len(res.variants)))
    for j in range(len(res.variants)):
        s = res.scores[j].ravel()
        ax[0, 0].errorbar(s.mean(), j, xerr=s.std(ddof=1), fmt="o", color="k")
    ax[0, 0].set_yticks(range(len(res.variants)), res.variants)
    ax[0, 0].set_xlabel(f"{res.metric} (mean ± sd over cells)")
    for j, v in enumerate(others):
        t = a["variants"][v]["corrected"]
        ax[0, 1].errorbar(t.mean, j, xerr=[[t.mean - t.ci_low], [t.ci_high - t.mean]], fmt="o", color="C0")
    ax[0, 1].axvspan(-exp.rope, exp.rope, color="0.85", label="ROPE")
    ax[0, 1].axvline(0, color="k", lw=0.8)
    ax[0, 1].set_yticks(range(len(others)), others)
    ax[0, 1].set_xlabel(f"Δ vs baseline, corrected {100 * (1 - exp.alpha):g}% CI")
    paths["forest"] = plots.save(fig, out, "forest")

    delta = np.array([a["variants"][v]["dim_delta"] for v in others])
    fig, ax = plots.figure(1, 1, panel=(11, 1.0 + 0.4 * len(others)))
    lim = np.nanmax(np.abs(delta)) or 1.0
    im = ax[0, 0].imshow(delta, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for r, v in enumerate(others):
        dims = a["variants"][v]["dims"]
        for c in range(19):
            if dims is not None and dims.adjusted.reject[c]:
                ax[0, 0].text(c, r, "*", ha="center", va="center")
    ax[0, 0].set_yticks(range(len(others)), others)
    ax[0, 0].set_xticks(range(19), [d[:18] for d in DIMENSIONS], rotation=60, ha="right", fontsize=7)
    fig.colorbar(im, ax=ax[0, 0], label="Δ per dimension (* BH-significant)")
    paths["dimensions"] = plots.save(fig, out, "dimensions")

    fig, ax = plots.figure(1, 2)
    for j, v in enumerate(others):
        d = a["variants"][v]["cells"]
        ax[0, 0].plot(np.arange(d.size) + 0.1 * j, d.ravel(), "o", label=v)
    ax[0, 0].axhline(0, color="k", lw=0.8)
    ax[0, 0].set_xlabel("cell (seed-major)")
    ax[0, 0].set_ylabel("paired difference d[seed, fold]")
    ax[0, 0].legend(fontsize=7)
    for v in others:
        d = a["variants"][v]["cells"]
        if np.std(d) > 0:
            seeds = np.arange(2, 21)
            sd = float(np.std(d, ddof=1))
            ratio = stats.correction_ratio(res.n_train, res.n_test)
            from pianolab.ab.power import corrected_power

            ax[0, 1].plot(seeds, [corrected_power(max(exp.rope, 1e-6), sd, int(s), exp.folds, ratio,
                                                  exp.alpha) for s in seeds], label=v)
    ax[0, 1].axhline(0.8, color="k", ls=":", lw=0.8)
    ax[0, 1].set_xlabel(f"seeds (x {exp.folds} folds)")
    ax[0, 1].set_ylabel(f"power to detect Δ = ROPE {exp.rope:g}")
    paths["cells_power"] = plots.save(fig, out, "cells_power")

    curves = {}
    for v in res.variants:
        runs = [f / "metrics.jsonl" for (vv, _, _), f in res.folders.items()
                if vv == v and track.read_metrics(f)]
        if runs:
            from pianolab.evaluate.diagnostics import learning_curves

            curves[v] = learning_curves(runs, keys=["train_loss", "val_pearson"]).table
    if curves:
        fig, ax = plots.figure(1, 2)
        for v, t in curves.items():
            for c, key in enumerate(["train_loss", "val_pearson"]):
                part = t[t["metric"] == key]
                if len(part):
                    ax[0, c].plot(part["epoch"], part["mean"], label=v)
                    ax[0, c].fill_between(part["epoch"], part["mean"] - part["std"],
                                          part["mean"] + part["std"], alpha=0.2)
                    ax[0, c].set_title(f"{key} (mean ± sd over runs)")
        ax[0, 0].legend(fontsize=7)
        paths["learning_curves"] = plots.save(fig, out, "learning_curves")
    return paths


def _fmt(x: float) -> str:
    return f"{x:+.4f}" if abs(x) >= 1e-4 or x == 0 else f"{x:+.2e}"


def _budget(exp: Experiment) -> str:
    """The budget imposed on every variant: epochs, wall time per fit, tuning trials per cell."""
    parts = [f"{exp.epochs if exp.epochs is not None else 'per config'} epochs"]
    if exp.wall_time_s is not None:
        parts.append(f"{exp.wall_time_s:g} s per fit")
    if exp.trials:
        inner = exp.config(BASELINE).tuning.inner_folds
        parts.append(f"{exp.trials} Optuna trials per cell (inner {inner}-fold on the training fold; "
                     "counts and pruned trials in each run's tuning.json)")
    return ", ".join(parts)


def render_markdown(exp: Experiment, res: Results, a: dict, plot_paths: dict, root) -> str:
    env = track.environment()
    first = next(iter(res.folders.values()))
    meta = track.read_meta(first)
    lines = [f"# {exp.name}", "", f"**Hypothesis.** {exp.hypothesis}", "",
             "## Design",
             f"- split `{exp.split}`, K = {exp.folds} folds x R = {exp.seeds} seeds (repeat r = its own "
             f"partition, shared by every variant; training seed = r); split file {meta['split']}",
             f"- primary metric `{exp.primary_metric}` on the test folds; ROPE ±{exp.rope:g}; alpha {exp.alpha:g}",
             f"- budget: {_budget(exp)} for every variant",
             f"- mean fold sizes: train {res.n_train:.0f}, test {res.n_test:.0f}; data version {meta['data_version']}",
             f"- environment: git {str(meta.get('git_commit'))[:10]}{' (dirty)' if meta.get('git_dirty') else ''}, "
             f"GPU {meta.get('gpu') or 'none (CPU)'}; report built with pianolab {env['packages'].get('pianolab')}",
             "", "## Verdicts (corrected repeated-CV t-test, Holm across variants)", "",
             "| variant | mean | Δ vs baseline | corrected 95% CI | p (Holm) | P(better) / P(ROPE) / P(worse) "
             "| verdict |",
             "|---|---|---|---|---|---|---|"]
    for v, row in a["variants"].items():
        if v == BASELINE:
            lines.append(f"| {v} | {row['mean']:.4f} | | | | | baseline |")
            continue
        vd = row["verdict"]
        lines.append(f"| {v} | {row['mean']:.4f} | {_fmt(vd.mean)} | [{_fmt(vd.ci_low)}, {_fmt(vd.ci_high)}] | "
                     f"{vd.p_adjusted:.3g} | {vd.p_better:.2f} / {vd.p_rope:.2f} / {vd.p_worse:.2f} | "
                     f"**{vd.label}** |")
    lines += ["", "Reasons:"] + [f"- {v}: {row['verdict'].reason}" for v, row in a["variants"].items()
                                 if v != BASELINE]
    lines += ["", "## Secondary metrics (mean ± sd over cells)", ""] + _secondary_table(exp, root)
    lines += ["", "## Other tests, each labelled for what it is", ""]
    for v, row in a["variants"].items():
        if v == BASELINE:
            continue
        n, w, boot, perm = row["naive"], row["wilcoxon"], *row["items"]
        lines += [f"### {v}",
                  f"- naive paired t-test (anti-conservative under CV: ignores shared training data): "
                  f"p = {n.p:.3g}, CI [{_fmt(n.ci_low)}, {_fmt(n.ci_high)}]",
                  f"- Wilcoxon signed-rank over cells (cells treated as independent): p = {w.p:.3g}",
                  f"- {boot.label} (seed 0, pooled out-of-fold, {boot.n_resamples} resamples): "
                  f"{_fmt(boot.estimate)} [{_fmt(boot.ci_low)}, {_fmt(boot.ci_high)}]",
                  f"- {perm.label} of squared error (seed 0): reduction {_fmt(perm.estimate)}, p = {perm.p:.3g}",
                  f"- Cohen's d over cells {row['cohens_d'].estimate:.2f}; corrected effect size "
                  f"{row['corrected_d'].estimate:.2f}; {row['p_improve'].label}: {row['p_improve'].estimate:.2f}"]
        if row["power"] is not None:
            pw, md = row["power"], row["mdd"]
            lines.append(f"- power: {pw.seeds if pw.seeds is not None else '>max'} seeds x {pw.folds} folds "
                         f"needed to detect Δ = {pw.delta:g} with power {pw.power:g}; minimal detectable Δ of "
                         f"this design {md.delta:.4f} [{md.ci_low:.4f}, {md.ci_high:.4f}]")
        if row["dims"] is not None:
            sig = [DIMENSIONS[c] for c in range(19) if row["dims"].adjusted.reject[c]]
            lines.append(f"- per-dimension corrected tests, Benjamini–Hochberg: {len(sig)} of 19 significant"
                         + (f" ({', '.join(sig)})" if sig else ""))
    lines += ["", "## Plots", ""] + [f"![{k}]({p.name})" for k, p in plot_paths.items()]
    return "\n".join(lines) + "\n"


def render_html(markdown: str, out: Path) -> str:
    """A self-contained HTML page: the Markdown as preformatted text, tables and images inlined."""
    body = []
    for line in markdown.splitlines():
        m = re.match(r"!\[(.*)\]\((.*)\)", line)
        if m:
            data = base64.b64encode((out / m.group(2)).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("|") and not line.startswith("|---"):
            cells = "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|"))
            body.append(f"<table><tr>{cells}</tr></table>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    style = "body{font-family:sans-serif;max-width:1100px;margin:auto}td{border:1px solid #ccc;padding:2px 6px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>" \
           + "\n".join(body) + "</body></html>\n"


def write_report(exp: Experiment, root: Path | None = None, echo=print) -> dict[str, Path]:
    res = collect(exp, root)
    a = analyse(exp, res)
    out = (root or track.runs_root()) / exp.name / "report"
    out.mkdir(parents=True, exist_ok=True)
    plot_paths = _plots(exp, res, a, out)
    md = render_markdown(exp, res, a, plot_paths, root) + _evaluation(exp, root, echo)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(render_html(md, out))
    echo(terminal_table(a))
    return {"markdown": out / "report.md", "html": out / "report.html", **plot_paths}


def _evaluation(exp: Experiment, root: Path | None, echo) -> str:
    """Run the experiment file's `evaluation:` sections; a Markdown paragraph pointing to them."""
    if not exp.evaluation:
        return ""
    from pianolab.evaluate.suite import evaluate_experiment

    paths = evaluate_experiment(exp, root, exp.evaluation, echo=echo)
    return (f"\n## Evaluation\n\nSections {', '.join(exp.evaluation)} for every variant: "
            f"../evaluation/{paths['markdown'].name} and ../evaluation/{paths['html'].name}\n")


def terminal_table(a: dict) -> str:
    rows = [f"{'variant':<28} {'mean':>8} {'delta':>9} {'95% CI (corrected)':>22} {'p Holm':>8}  verdict"]
    for v, row in a["variants"].items():
        if v == BASELINE:
            rows.append(f"{v:<28} {row['mean']:8.4f}")
        else:
            vd = row["verdict"]
            rows.append(f"{v:<28} {row['mean']:8.4f} {vd.mean:+9.4f} [{vd.ci_low:+8.4f}, {vd.ci_high:+8.4f}] "
                        f"{vd.p_adjusted:8.3g}  {vd.label}")
    return "\n".join(rows)


def power_table(exp: Experiment, res: Results, delta: float, power: float) -> list[dict]:
    rows = []
    for i, v in enumerate(res.variants):
        if v == BASELINE:
            continue
        d = _diffs(res, i)
        plan = power_analysis(d, res.n_train, res.n_test, delta, exp.alpha, power)
        md = minimal_detectable_delta(d, res.n_train, res.n_test, alpha=exp.alpha, power=power)
        rows.append({"variant": v, "delta": delta, "seeds_needed": plan.seeds, "folds": plan.folds,
                     "sd": round(plan.sd, 5), "minimal_detectable_delta": round(md.delta, 5)})
    return rows
