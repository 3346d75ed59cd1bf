"""Experiment report: verdicts, every labelled secondary test, per-dimension BH, power, plots.

Written to `<runs>/<experiment>/report/` as `report.md`, a self-contained `report.html` (Jinja2 templates
in `pianolab/report_templates/`, Markdown by markdown-it-py, plots inlined) and PNG files. The page opens
with the question, a plain-words verdict per variant, then the evidence and a glossary of the labels;
the same verdict table is echoed to the terminal. Everything is recomputed from the saved
predictions, with seeded resampling, so a rerun reproduces the report byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pianolab import html_report, track
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
                              exp.rope, exp.alpha, baseline=res.variants.index(BASELINE), names=list(res.variants))
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
    for v, stop in res.stopped.items():
        out["variants"][v] = {
            "mean": float(np.mean(stop.scores)), "sd": float(np.std(stop.scores, ddof=1)), "stopped": stop.seeds,
            "verdict": stats.stopped_verdict(stop.diffs, res.n_train, res.n_test, exp.rope, stop.decision,
                                             exp.alpha, variant=v),
            "cells": stop.diffs}
    return out


def _plannable(d: np.ndarray) -> bool:
    """A power analysis needs a pilot variance with at least 2 degrees of freedom (3 cells)."""
    return d.size >= 3 and np.std(d) > 0


def _secondary_table(exp: Experiment, root) -> list[str]:
    lines = ["| variant | " + " | ".join(SECONDARY) + " |", "|---" * (len(SECONDARY) + 1) + "|"]
    cols = {m: collect(exp, root, metric=m) for m in SECONDARY}

    def scores(m: str, v: str) -> np.ndarray:
        res = cols[m]
        return res.stopped[v].scores if v in res.stopped else res.scores[res.variants.index(v)]

    for v in exp.variant_names:
        if v in cols[SECONDARY[0]].variants or v in cols[SECONDARY[0]].stopped:
            cells = [f"{np.mean(scores(m, v)):.3f} ± {np.std(scores(m, v), ddof=1):.3f}" for m in SECONDARY]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines


def _plots(exp: Experiment, res: Results, a: dict, out: Path) -> dict[str, Path]:
    """The report's figures as PNG files under `out`."""
    paths = {"forest": plots.save(forest_figure(exp, res, a), out, "forest")}
    if _others(res):  # none when the early-stop rule stopped every variant
        paths["dimensions"] = plots.save(dimensions_figure(exp, res, a), out, "dimensions")
    paths["cells_power"] = plots.save(cells_power_figure(exp, res, a), out, "cells_power")
    curves = _curves(res)
    if curves:
        paths["learning_curves"] = plots.save(learning_curves_figure(curves), out, "learning_curves")
    return paths


def _others(res: Results) -> list[str]:
    return [v for v in res.variants if v != BASELINE]


def _ci_text(exp: Experiment) -> str:
    return f"corrected {100 * (1 - exp.alpha):g}% CI"


def forest_figure(exp: Experiment, res: Results, a: dict):
    """Each variant's score (mean ± sd over cells), and its difference from the baseline with the CI."""
    others = _others(res)
    fig, ax = plots.figure(1, 2, panel=(4.5, 1.2 + 0.45 * len(res.variants)))
    for j in range(len(res.variants)):
        s = res.scores[j].ravel()
        ax[0, 0].errorbar(s.mean(), j, xerr=s.std(ddof=1), fmt="o", color="k",
                          label="mean ± sd over cells" if j == 0 else None)
    ax[0, 0].set_yticks(range(len(res.variants)), res.variants)
    ax[0, 0].set_xlabel(res.metric)
    ax[0, 0].legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.02))
    ax[0, 1].axvspan(-exp.rope, exp.rope, color="0.85", label=f"ROPE ±{exp.rope:g}")
    ax[0, 1].axvline(0, color="k", lw=0.8)
    for j, v in enumerate(others):
        vd = a["variants"][v]["verdict"]
        low, high, how = _interval(vd)
        ax[0, 1].errorbar(vd.mean, j, xerr=[[vd.mean - low], [high - vd.mean]], fmt="o", color="C0",
                          label=f"Δ, {_ci_text(exp)} ({how})" if j == 0 else None)
    ax[0, 1].set_yticks(range(len(others)), others)
    ax[0, 1].set_ylim(-0.7, len(others) - 0.3)
    ax[0, 1].set_xlabel(f"Δ {res.metric} vs baseline (positive = better)")
    ax[0, 1].legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.02), ncols=2)
    return fig


def dimensions_figure(exp: Experiment, res: Results, a: dict):
    """Δ per dimension (rows) and variant (columns), * where Benjamini–Hochberg rejects."""
    others = _others(res)
    delta = np.array([a["variants"][v]["dim_delta"] for v in others]).T
    marks = np.array([np.zeros(len(DIMENSIONS), bool) if a["variants"][v]["dims"] is None
                      else a["variants"][v]["dims"].adjusted.reject for v in others]).T
    return plots.dimension_heatmap(delta, others, DIMENSIONS, f"Δ {res.metric} per dimension (positive = "
                                   "better; * BH-significant)", floor=exp.rope, marks=marks)


def cells_power_figure(exp: Experiment, res: Results, a: dict):
    """The paired difference of every (seed, fold) cell, and the corrected test's power by seeds."""
    from pianolab.ab.power import corrected_power

    fig, ax = plots.figure(1, 2, panel=(4.5, 3.4))
    ax[0, 0].axhspan(-exp.rope, exp.rope, color="0.9", label=f"ROPE ±{exp.rope:g}")
    ax[0, 0].axhline(0, color="k", lw=0.8)
    seeds, ratio, planned = np.arange(2, 21), stats.correction_ratio(res.n_train, res.n_test), False
    for j, v in enumerate(_others(res)):
        d = a["variants"][v]["cells"]
        ax[0, 0].plot(np.arange(d.size) + 0.1 * j, d.ravel(), "o", color=f"C{j}", label=v)
        if np.std(d) > 0:
            sd = float(np.std(d, ddof=1))
            ax[0, 1].plot(seeds, [corrected_power(max(exp.rope, 1e-6), sd, int(s), exp.folds, ratio, exp.alpha)
                                  for s in seeds], color=f"C{j}", label=v)
            planned = True
    ax[0, 0].set(xlabel="cell (seed-major)", ylabel=f"paired Δ {res.metric}")
    ax[0, 1].axhline(0.8, color="k", ls=":", lw=0.8, label="power 0.8")
    ax[0, 1].axvline(exp.seeds, color="0.5", ls="--", lw=0.8, label=f"this design ({exp.seeds} seeds)")
    ax[0, 1].set(xlabel=f"seeds (x {exp.folds} folds)", ylabel=f"power to detect Δ = {exp.rope:g}", ylim=(0, 1.02))
    if not planned:
        ax[0, 1].text(0.5, 0.5, "no variance between cells:\nno power curve", ha="center",
                      transform=ax[0, 1].transAxes)
    for axis in ax[0]:
        axis.legend(fontsize=7)
    return fig


def _curves(res: Results) -> dict:
    from pianolab.evaluate.diagnostics import learning_curves

    curves = {}
    for v in res.variants:
        runs = [f / "metrics.jsonl" for (vv, _, _), f in res.folders.items() if vv == v and track.read_metrics(f)]
        if runs:
            curves[v] = learning_curves(runs, keys=["train_loss", "val_pearson"]).table
    return curves


def learning_curves_figure(curves: dict):
    fig, ax = plots.figure(1, 2)
    for j, (v, t) in enumerate(curves.items()):
        for c, key in enumerate(["train_loss", "val_pearson"]):
            part = t[t["metric"] == key]
            if len(part):
                ax[0, c].plot(part["epoch"], part["mean"], color=f"C{j}", label=v)
                ax[0, c].fill_between(part["epoch"], part["mean"] - part["std"], part["mean"] + part["std"],
                                      color=f"C{j}", alpha=0.2)
                ax[0, c].set(title=f"{key} (mean ± sd over runs)", xlabel="epoch")
    for axis in ax[0]:
        axis.legend(fontsize=7)
    return fig


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


KINDS = {stats.BETTER: "better", stats.WORSE: "worse", stats.BETTER_IN_ROPE: "negligible",
         stats.WORSE_IN_ROPE: "negligible", stats.EQUIVALENT: "equivalent", stats.INCONCLUSIVE: "inconclusive",
         stats.STOPPED: "stopped"}


def glossary(exp: Experiment) -> list[tuple[str, str]]:
    """What each verdict label (`stats.VERDICTS`) means, with this experiment's alpha and ROPE."""
    a, r, m = f"{exp.alpha:g}", f"±{exp.rope:g}", exp.primary_metric
    return [
        ("ROPE", f"region of practical equivalence: a difference in {m} within {r} is too small to matter."),
        ("the test", f"the corrected repeated-CV t-test (Nadeau–Bengio) on the paired (seed, fold) differences, "
                     f"Holm-adjusted across the variants, at alpha {a}."),
        (f"{stats.BETTER} / {stats.WORSE}", f"the test finds a difference, and the estimate lies beyond the ROPE "
                                            f"({r}) in the variant's favour / against it."),
        (f"{stats.BETTER_IN_ROPE} / {stats.WORSE_IN_ROPE}",
         f"the test finds a difference, but the estimate lies within the ROPE ({r}): real, but too small to "
         "matter."),
        (stats.EQUIVALENT, f"no difference found, and the equivalence test (two one-sided tests, Holm-adjusted) "
                           f"puts the {_ci_text(exp)} inside the ROPE ({r}): any difference is too small to "
                           "matter."),
        (stats.INCONCLUSIVE, f"neither a difference nor equivalence within the ROPE ({r}) is shown: the data "
                             "cannot tell; the power line says how many seeds might decide."),
        (stats.STOPPED, "the futility rule stopped the variant before all its seeds ran, because its upper "
                        "bound fell below −ROPE; its finished cells are reported, outside Holm's family, and "
                        "no other claim is made."),
    ]


def _interval(vd) -> tuple[float, float, str]:
    """The interval to show beside the verdict's p: Bonferroni-adjusted over the family when there is one."""
    if vd.family > 1:
        return vd.ci_adjusted_low, vd.ci_adjusted_high, f"Bonferroni-adjusted over {vd.family}"
    return vd.ci_low, vd.ci_high, "one comparison" if vd.family == 1 else "unadjusted: outside Holm's family"


def plain_verdicts(exp: Experiment, res: Results, a: dict) -> list[dict]:
    """One line per variant: its label, the statistics layer's sentence in plain words, the numbers."""
    lines = []
    for v, row in a["variants"].items():
        if v == BASELINE:
            continue
        vd = row["verdict"]
        low, high, how = _interval(vd)
        p = f"p (Holm) {vd.p_adjusted:.3g}" if vd.family > 1 else f"p {vd.p_adjusted:.3g}"
        flipped = " (lower is better, so the sign is flipped: positive = better)" if _sign(res) < 0 else ""
        numbers = (f"Δ {res.metric} {_fmt(vd.mean)}{flipped}, {_ci_text(exp)} ({how}) [{_fmt(low)}, {_fmt(high)}], "
                   f"{p}" + (f"; stopped after {row['stopped']} seeds" if "stopped" in row else ""))
        lines.append({"variant": v, "label": vd.label, "kind": KINDS.get(vd.label, "other"),
                      "sentence": vd.sentence or vd.reason, "numbers": numbers})
    return lines


def evidence_markdown(exp: Experiment, res: Results, a: dict, plot_paths: dict, root) -> str:
    """The report's evidence in Markdown: design, verdict table, secondary metrics, other tests, plots."""
    env = track.environment()
    meta = track.read_meta(next(iter(res.folders.values())))
    ci = _ci_text(exp)
    lines = ["### Design", "",
             f"- split `{exp.split}`, K = {exp.folds} folds x R = {exp.seeds} seeds (repeat r = its own "
             f"partition, shared by every variant; training seed = r); split file `{meta['split']}`",
             f"- primary metric `{exp.primary_metric}` on the test folds; ROPE ±{exp.rope:g}; alpha {exp.alpha:g}",
             f"- budget: {_budget(exp)} for every variant",
             f"- mean fold sizes: train {res.n_train:.0f}, test {res.n_test:.0f}; data version "
             f"`{meta['data_version']}`",
             f"- environment: git `{str(meta.get('git_commit'))[:10]}`{' (dirty)' if meta.get('git_dirty') else ''}"
             f", GPU {meta.get('gpu') or 'none (CPU)'}; report built with pianolab {env['packages'].get('pianolab')}",
             *(["- **environment differs between cells** (results may depend on it): " + "; ".join(res.environment)]
               if res.environment else ["- every cell recorded the same environment (GPU, threads, Python, packages)"]),
             "", "### Verdicts in numbers (corrected repeated-CV t-test, Holm across variants)", "",
             f"| variant | mean | Δ vs baseline (positive = better) | {ci} | p (Holm) | P(better) / P(ROPE) / P(worse) "
             "| verdict |",
             "|---|---|---|---|---|---|---|"]
    for v, row in a["variants"].items():
        if v == BASELINE:
            lines.append(f"| {v} | {row['mean']:.4f} | | | | | baseline |")
            continue
        vd = row["verdict"]
        low, high, how = _interval(vd)
        lines.append(f"| {v} | {row['mean']:.4f} | {_fmt(vd.mean)} | [{_fmt(low)}, {_fmt(high)}] ({how}) | "
                     f"{vd.p_adjusted:.3g} | {vd.p_better:.2f} / {vd.p_rope:.2f} / {vd.p_worse:.2f} | "
                     f"**{vd.label}** |")
    lines += ["", "Reasons:", ""] + [f"- {v}: {row['verdict'].reason}" for v, row in a["variants"].items()
                                     if v != BASELINE]
    if res.stopped:
        lines += ["", f"Stopped early (not in Holm's family; their p and interval are unadjusted): "
                  f"{', '.join(res.stopped)}."]
    lines += ["", "### Secondary metrics (mean ± sd over cells)", ""] + _secondary_table(exp, root)
    lines += ["", "### Other tests, each labelled for what it is", ""]
    for v, row in a["variants"].items():
        if v == BASELINE or "stopped" in row:
            continue
        n, w, boot, perm = row["naive"], row["wilcoxon"], *row["items"]
        lines += [f"#### {v}", "",
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
                         f"needed to detect Δ = {pw.delta:g} with power {pw.power:g}"
                         + (f" ({pw.why})" if pw.seeds is None and pw.why else "")
                         + f"; minimal detectable Δ of this design {md.delta:.4f} [{md.ci_low:.4f}, {md.ci_high:.4f}]")
        if row["dims"] is not None:
            sig = [DIMENSIONS[c] for c in range(19) if row["dims"].adjusted.reject[c]]
            lines.append(f"- per-dimension corrected tests, Benjamini–Hochberg: {len(sig)} of 19 significant"
                         + (f" ({', '.join(sig)})" if sig else ""))
        lines.append("")
    machine = f"{meta.get('host')} ({meta.get('gpu') or 'CPU only'})"
    lines += ["### Plots", "",
              f"Every plot: split `{exp.split}`, {exp.folds} folds x {exp.seeds} seeds, primary metric "
              f"`{exp.primary_metric}`, cells trained on {machine}; command `pianolab ab run {exp.source}` "
              f"(report alone: `pianolab ab report {exp.source}`).", ""]
    lines += [f"![{k}]({p.name})\n" for k, p in plot_paths.items()]
    return "\n".join(lines) + "\n"


def render_report(exp: Experiment, res: Results, a: dict, evidence: str, out: Path) -> tuple[str, str]:
    """The report as Markdown and as one self-contained HTML page (plots embedded)."""
    context = {"title": f"{exp.name}: A/B report", "name": exp.name, "hypothesis": exp.hypothesis.strip(),
               "verdicts": plain_verdicts(exp, res, a), "glossary": glossary(exp)}
    markdown = html_report.render("ab_report.md", evidence=evidence.rstrip(), **context)
    page = html_report.render("ab_report.html", evidence=html_report.markdown_html(evidence, out),
                              hypothesis_html=html_report.markdown_html(exp.hypothesis), **context)
    return markdown, page


def write_report(exp: Experiment, root: Path | None = None, echo=print) -> dict[str, Path]:
    res = collect(exp, root)
    a = analyse(exp, res)
    out = (root or track.runs_root()) / exp.name / "report"
    out.mkdir(parents=True, exist_ok=True)
    plot_paths = _plots(exp, res, a, out)
    evidence = evidence_markdown(exp, res, a, plot_paths, root) + _evaluation(exp, root, echo)
    markdown, page = render_report(exp, res, a, evidence, out)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(page)
    echo(terminal_table(a))
    return {"markdown": out / "report.md", "html": out / "report.html", **plot_paths}


def _evaluation(exp: Experiment, root: Path | None, echo) -> str:
    """Run the experiment file's `evaluation:` sections; a Markdown paragraph pointing to them."""
    if not exp.evaluation:
        return ""
    from pianolab.evaluate.suite import evaluate_experiment

    paths = evaluate_experiment(exp, root, exp.evaluation, echo=echo)
    return (f"\n## Evaluation\n\nSections {', '.join(exp.evaluation)} for every variant: "
            f"[{paths['html'].name}](../evaluation/{paths['html'].name}) "
            f"([{paths['markdown'].name}](../evaluation/{paths['markdown'].name}))\n")


def terminal_table(a: dict) -> str:
    """The verdict table for the terminal: the interval beside the Holm p is the adjusted one (`_interval`)."""
    decided = [row["verdict"] for v, row in a["variants"].items() if v != BASELINE]
    ci = f"{100 * (1 - decided[0].alpha):g}% CI (corrected)" if decided else "CI"
    rows = [f"{'variant':<28} {'mean':>8} {'delta':>9} {ci:>22} {'p Holm':>8}  verdict"]
    for v, row in a["variants"].items():
        if v == BASELINE:
            rows.append(f"{v:<28} {row['mean']:8.4f}")
        else:
            vd = row["verdict"]
            low, high, how = _interval(vd)
            rows.append(f"{v:<28} {row['mean']:8.4f} {vd.mean:+9.4f} [{low:+8.4f}, {high:+8.4f}] "
                        f"{vd.p_adjusted:8.3g}  {vd.label}" + (f"  (CI {how})" if vd.family != 1 else ""))
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
