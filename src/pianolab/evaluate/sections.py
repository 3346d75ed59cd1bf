"""Evaluation sections over finished runs: the `SECTIONS` registry and the prediction-only sections
(metrics, advanced metrics, learning curves, gradient norms, error analysis).

A section is `fn(ctx: Context) -> SectionResult`: Markdown lines, plot paths (under `ctx.out`) and a
dict of numbers. Sections that need the model itself live in `sections_model` and `sections_robust`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pianolab.data.percepiano import DIMENSIONS
from pianolab.evaluate import plots
from pianolab.evaluate.context import Context, slug
from pianolab.registry import Registry

PRIMARY = ("pearson", "spearman", "mse", "mae", "r2", "within_excerpt_pearson", "pooled_z_pearson")


@dataclass
class SectionResult:
    """`lines`: Markdown (no heading); `plots`: PNG paths under ctx.out; `numbers`: JSON-ready."""

    lines: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)


SECTIONS: Registry[Callable[[Context], SectionResult]] = Registry("evaluation section")


def md_table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    """Markdown table; floats printed with 4 decimals."""
    cell = lambda x: f"{x:.4f}" if isinstance(x, float | np.floating) else str(x)  # noqa: E731
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + [
        "| " + " | ".join(cell(x) for x in r) + " |" for r in rows]


def frame_table(df: pd.DataFrame) -> list[str]:
    return md_table(list(df.columns), df.itertuples(index=False))


def mean_sd(values: Sequence[float]) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.4f}" if len(v) == 1 else f"{v.mean():.4f} ± {v.std(ddof=1):.4f}"


def paired_lines(ctx: Context, cells: dict[str, dict[tuple[int, int], float]], label: str,
                 higher_is_better: bool = True, runs: dict | None = None) -> list[str]:
    """Corrected repeated-CV t-test of each variant against the baseline on matched (seed, fold)
    cells, as the A/B report does for the primary metric; empty when there is nothing to pair.
    `runs` (default: the context's) give the training and test sizes of the correction."""
    from pianolab.ab import stats

    base = ctx.baseline
    if base is None or base not in cells or len(cells) < 2:
        return []
    rows = []
    for v, vals in cells.items():
        common = sorted(set(vals) & set(cells[base]))
        if v == base or len(common) < 2:
            continue
        sign = 1.0 if higher_is_better else -1.0
        d = np.array([[sign * (vals[c] - cells[base][c]) for c in common]])
        v_runs = (runs or ctx.runs)[v]
        n_train = np.mean([r.meta["n_train"] + r.meta.get("n_val", 0) for r in v_runs])
        n_test = np.mean([r.meta["n_test"] for r in v_runs])
        t = stats.corrected_t_test(d, n_train, n_test)
        rows.append([v, len(common), float(t.mean), f"[{t.ci_low:+.4f}, {t.ci_high:+.4f}]", f"{t.p:.3g}"])
    if not rows:
        return []
    return ["", f"Paired against `{base}` ({label}; positive = better; corrected repeated-CV t-test over "
            "matched seed × fold cells):", ""] + md_table(["variant", "cells", "Δ", "95% CI", "p"], rows)


def image(ctx: Context, path: Path) -> str:
    return f"![{path.stem}]({path.relative_to(ctx.out).as_posix()})"


def _human(ctx: Context, idx: np.ndarray) -> np.ndarray:
    return ~ctx.dataset.column("deadpan")[idx]


@SECTIONS.register("metrics")
def metrics_section(ctx: Context) -> SectionResult:
    """Every primary metric, overall and per dimension, on all test items and on human ones only."""
    from pianolab.evaluate.metrics import METRICS, compute_metrics

    groups = ctx.dataset.column("group")
    res = SectionResult(["Test predictions pooled over the folds of each seed (mean ± sd over seeds); "
                         "`human` leaves out the deadpan Score/Score2 renditions, which are easy and lift "
                         "every figure. `pooled_z_pearson` is the seed document's figure (one r over all "
                         "items × dims of z-scored values), not comparable with the per-dimension mean r."])
    fig, axes = plots.figure(1, 1, panel=(plots.MAX_WIDTH_IN, 1.2 + 0.3 * len(DIMENSIONS)))
    width = 0.8 / len(ctx.variants)
    for j, v in enumerate(ctx.variants):
        per_seed = {"all": [], "human": []}
        for idx, yt, yp in ctx.oof(v).values():
            h = _human(ctx, idx)
            per_seed["all"].append(compute_metrics(PRIMARY, yt, yp, groups[idx]))
            per_seed["human"].append(compute_metrics(PRIMARY, yt[h], yp[h], groups[idx][h]))
        nums, rows = {}, []
        for m in PRIMARY:
            vals = {k: [r[m].value for r in per_seed[k]] for k in per_seed}
            dims = [r[m].per_dim for r in per_seed["all"]]
            nums[m] = {"value": float(np.mean(vals["all"])), "human": float(np.mean(vals["human"])),
                       "per_dim": None if dims[0] is None else np.mean(dims, axis=0).tolist()}
            rows.append([m, mean_sd(vals["all"]), mean_sd(vals["human"])])
        res.numbers[v] = nums
        res.lines += ["", f"### {v} ({len(ctx.runs[v])} run(s))", ""] + md_table(["metric", "all", "human"], rows)
        dim_rows = [[d] + [nums[m]["per_dim"][i] for m in PRIMARY[:-1]] for i, d in enumerate(DIMENSIONS)]
        res.lines += ["", "Per dimension (all items):", ""] + md_table(["dimension", *PRIMARY[:-1]], dim_rows)
        axes[0, 0].barh(np.arange(19) + j * width, nums["pearson"]["per_dim"], width, label=v)
    axes[0, 0].set_yticks(np.arange(19) + (len(ctx.variants) - 1) * width / 2,
                          [plots.short_name(d) for d in DIMENSIONS], fontsize=8)
    axes[0, 0].invert_yaxis()
    axes[0, 0].axvline(0, color="k", lw=0.8)
    axes[0, 0].set(xlabel="Pearson r", title="per-dimension Pearson r (test folds, mean over seeds)")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    path = plots.save(fig, ctx.out, "metrics_per_dimension")
    res.plots.append(path)
    res.lines += ["", image(ctx, path)]
    for m in ("pearson", "r2", "within_excerpt_pearson"):
        res.lines += paired_lines(ctx, _cell_scores(ctx, m), m, METRICS.get(m).higher_is_better)
    return res


def _cell_scores(ctx: Context, metric: str) -> dict[str, dict[tuple[int, int], float]]:
    """{variant: {(seed, fold): metric on that run's test fold}}."""
    from pianolab.evaluate.metrics import METRICS

    groups, fn, out = ctx.dataset.column("group"), METRICS.get(metric), {}
    for v in ctx.variants:
        out[v] = {}
        for r in ctx.runs[v]:
            idx, yt, yp = r.predictions(ctx.dataset)
            out[v][r.cell] = fn(yt, yp, groups[idx]).value
    return out


def _reliability(ctx: Context) -> np.ndarray:
    from pianolab.data.ratings import load_ratings, split_half_reliability

    return split_half_reliability(ctx.dataset, load_ratings(ctx.dataset.root), n_splits=20).overall


@SECTIONS.register("advanced")
def advanced_section(ctx: Context) -> SectionResult:
    """Reliability-weighted r, top-k and pairwise ranking, distribution matching, worst cases, and
    calibration of the spread over seeds (an ensemble) against the errors and the raters' spread."""
    from pianolab.evaluate.metrics import METRICS

    weights = _reliability(ctx)
    groups = ctx.dataset.column("group")
    res = SectionResult(["Weights of `dimension_weighted_correlation`: split-half label reliability "
                         "(Spearman–Brown, 20 random splits). Values are means over seeds of each seed's "
                         "pooled test predictions."])
    calls = {"dimension_weighted_correlation": {"weights": weights}, "top_k_accuracy": {"k": 1},
             "top_k_accuracy@3": {"k": 3}, "pairwise_ranking_accuracy": {}, "distribution_matching": {},
             "worst_case_performance": {"fraction": 0.1}}
    for v in ctx.variants:
        oof = ctx.oof(v)
        out = {name: [METRICS.get(name.split("@")[0])(yt, yp, groups[idx], **opt) for idx, yt, yp in oof.values()]
               for name, opt in calls.items()}
        nums = {name: float(np.mean([r.value for r in rs])) for name, rs in out.items()}
        dm, wc = out["distribution_matching"][0], out["worst_case_performance"][0]
        extra = {"top_k_accuracy": f"chance {out['top_k_accuracy'][0].details['chance']:.3f}",
                 "top_k_accuracy@3": f"chance {out['top_k_accuracy@3'][0].details['chance']:.3f}",
                 "pairwise_ranking_accuracy": "chance 0.5",
                 "distribution_matching": f"Wasserstein; mean KS {dm.details['mean_ks']:.3f}, variance ratio "
                                          f"pred/true {dm.details['mean_variance_ratio']:.3f}",
                 "worst_case_performance": f"MSE of the 10% hardest items; worst excerpt group "
                                           f"{wc.details.get('worst_group')} "
                                           f"(MSE {wc.details.get('worst_group_mse', 0):.4f})"}
        rows = [[n, nums[n], extra.get(n, "")] for n in calls]
        cal_lines, cal = _calibration(ctx, v, oof)
        nums["confidence_calibration"] = cal
        res.numbers[v] = nums
        res.lines += ["", f"### {v}", ""] + md_table(["metric", "value", "note"], rows) + cal_lines
        res.numbers[v]["chance"] = {n: out[n][0].details["chance"] for n in ("top_k_accuracy", "top_k_accuracy@3")}
    path = _advanced_plot(ctx, res.numbers)
    res.plots.append(path)
    res.lines += ["", image(ctx, path)]
    return res


def _advanced_plot(ctx: Context, numbers: dict) -> Path:
    """Ranking accuracies against chance, and seed-ensemble interval coverage against nominal."""
    fig, axes = plots.figure(1, 2)
    names = ("top_k_accuracy", "top_k_accuracy@3", "pairwise_ranking_accuracy")
    chance = next(iter(numbers.values()))["chance"] | {"pairwise_ranking_accuracy": 0.5}
    width = 0.8 / len(numbers)
    for i, (v, nums) in enumerate(numbers.items()):
        axes[0, 0].bar(np.arange(len(names)) + i * width, [nums[n] for n in names], width, label=v)
        cal = nums.get("confidence_calibration")
        if cal:
            levels = list(cal["coverage"])
            axes[0, 1].plot(levels, [cal["coverage"][p] for p in levels], "o-", label=v)
    axes[0, 0].scatter(np.arange(len(names)) + (len(numbers) - 1) * width / 2, [chance[n] for n in names],
                       marker="_", s=400, color="k", label="chance", zorder=3)
    axes[0, 0].set_xticks(np.arange(len(names)) + (len(numbers) - 1) * width / 2,
                          ["top-1 in excerpt", "top-3 in excerpt", "pairwise order"], fontsize=8)
    axes[0, 0].set(ylabel="accuracy", title="ranking within excerpt groups")
    axes[0, 0].legend(fontsize=7)
    axes[0, 1].plot([0, 1], [0, 1], "k--", lw=1)
    axes[0, 1].set(xlabel="nominal coverage", ylabel="empirical coverage", xlim=(0, 1), ylim=(0, 1),
                   title="intervals from the spread over seeds")
    if any(n.get("confidence_calibration") for n in numbers.values()):
        axes[0, 1].legend(fontsize=7)
    else:
        axes[0, 1].text(0.5, 0.5, "one seed: no spread", ha="center")
    return plots.save(fig, ctx.out, "advanced")


def _calibration(ctx: Context, v: str, oof: dict) -> tuple[list[str], dict | None]:
    from pianolab.evaluate.metrics import METRICS

    if len(oof) < 2:
        return ["", "confidence_calibration: skipped: one seed, so no spread over seeds to use as uncertainty "
                "(evaluate an experiment with several seeds)."], None
    preds: dict[int, list] = {}
    for idx, _, yp in oof.values():
        for i, p in zip(idx, yp, strict=True):
            preds.setdefault(int(i), []).append(p)
    items = np.array(sorted(i for i, p in preds.items() if len(p) >= 2))
    stack = [np.array(preds[i]) for i in items]
    mean = np.array([s.mean(0) for s in stack])
    sd = np.maximum(np.array([s.std(0, ddof=1) for s in stack]), 1e-6)
    r = METRICS.get("confidence_calibration")(ctx.dataset.labels[items], mean, pred_std=sd,
                                              label_std=ctx.dataset.label_std[items])
    cov = ", ".join(f"{p:g}: {c:.3f}" for p, c in r.details["coverage"].items())
    lines = ["", f"confidence_calibration (ensemble over {len(oof)} seeds, uncertainty = sd of the seeds' "
             f"predictions, {len(items)} items): mean |coverage − nominal| {r.value:.4f}; coverage {cov}; "
             f"corr(sd, |error|) {r.details['mean_std_error_corr']:.3f}; corr(sd, raters' label std) "
             f"{np.nanmean(r.details['std_label_std_corr']):.3f}; mean predicted sd {r.details['sharpness']:.4f} "
             f"vs mean label std {ctx.dataset.label_std[items].mean():.4f}."]
    return lines, {"value": r.value, "coverage": r.details["coverage"],
                   "std_error_corr": r.details["mean_std_error_corr"]}


@SECTIONS.register("learning_curves")
def learning_curves_section(ctx: Context) -> SectionResult:
    """Per-epoch training loss, validation metrics and learning rate: mean ± sd over runs."""
    from pianolab import track
    from pianolab.evaluate.diagnostics import learning_curves

    res = SectionResult()
    for v in ctx.variants:
        paths = [r.folder / "metrics.jsonl" for r in ctx.runs[v] if track.read_metrics(r.folder)]
        if not paths:
            res.lines += ["", f"### {v}", "", "No per-epoch records (a non-iterative estimator)."]
            continue
        lc = learning_curves(paths, keys=["train_loss", "val_mse_std", "val_pearson", "lr"],
                             out_dir=ctx.path(slug(v)))
        last = lc.table.sort_values("epoch").groupby("metric").tail(1)
        rows = [[m, int(e), mu, sd, int(n)] for m, e, mu, sd, n in
                last[["metric", "epoch", "mean", "std", "n"]].itertuples(index=False)]
        res.numbers[v] = {m: mu for m, _, mu, _, _ in rows}
        res.lines += ["", f"### {v} ({len(paths)} runs)", ""] + md_table(
            ["metric", "last epoch", "mean", "sd", "runs"], rows) + ["", image(ctx, lc.plot)]
        res.plots.append(lc.plot)
    return res


@SECTIONS.register("gradient_analysis")
def gradient_section(ctx: Context) -> SectionResult:
    """Gradient norm over training with vanishing / exploding flags, from metrics.jsonl."""
    from pianolab import track
    from pianolab.evaluate.diagnostics import gradient_analysis

    res = SectionResult(["Per-layer gradient norms (L2 over each module's parameters at the last step of every "
                         "epoch; runs without them show the per-epoch mean total norm as one 'total' layer). "
                         "Flags: vanishing when a layer's median is below 1e-6, exploding when any value is "
                         "non-finite or above 1e3."])
    for v in ctx.variants:
        runs = ctx.selected(v, lambda r: bool(track.read_metrics(r.folder)), needs_model=False)
        if not runs:
            res.lines += ["", f"### {v}", "", "No gradient records (a non-iterative estimator)."]
            continue
        rows, plot = [], None
        for k, r in enumerate(runs):
            g = gradient_analysis(r.folder / "metrics.jsonl", out_dir=ctx.path(slug(v)) if k == 0 else None)
            t = g.table
            vanishing, exploding = (", ".join(t.loc[t[c], "layer"].head(3)) or "none"
                                    for c in ("vanishing", "exploding"))
            rows.append([f"seed {r.cell[0]} fold {r.cell[1]}", len(t), float(t["median"].min()),
                         float(t["median"].max()), float(t["max"].max()), vanishing, exploding])
            plot = plot or g.plot
        res.numbers[v] = {"median": float(np.mean([r[3] for r in rows])),
                          "flags": any(r[5] != "none" or r[6] != "none" for r in rows)}
        res.lines += ["", f"### {v}", ""] + md_table(
            ["run", "layers", "lowest median", "highest median", "max", "vanishing", "exploding"], rows) + [
            "", image(ctx, plot)]
        res.plots.append(plot)
    return res


@SECTIONS.register("error_analysis")
def error_section(ctx: Context) -> SectionResult:
    """Errors by piece, composer, performer, excerpt length and deadpan; the largest misses."""
    from pianolab.evaluate.error_analysis import dataset_metadata, error_analysis

    res = SectionResult(["First seed's pooled test predictions; MAE/RMSE on the 0..1 label scale, bias = mean "
                         "prediction − label, pearson = mean per-dimension r within the level."])
    for v in ctx.variants:
        idx, yt, yp = next(iter(ctx.oof(v).values()))
        rep = error_analysis(yt, yp, dataset_metadata(ctx.dataset, idx), top_n=10, out_dir=ctx.path(slug(v)))
        res.numbers[v] = {col: {str(k): float(x) for k, x in zip(t["level"], t["mae"], strict=True)}
                         for col, t in rep.by.items()}
        res.lines += ["", f"### {v}"]
        for col, t in rep.by.items():
            res.lines += ["", f"By {col}:", ""] + frame_table(t)
        misses = rep.misses[["stem", "mae", "worst_dim", "label", "pred"]]
        res.lines += ["", "Largest misses:", ""] + frame_table(misses) + [""] + [image(ctx, p) for p in rep.plots]
        res.plots += rep.plots
    return res
