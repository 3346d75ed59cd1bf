"""Few-shot adaptation across k (issue 23 §1): one table and one figure from the finished e2_fewshot runs.

For every experiment experiments/e2_fewshot_*.yaml whose cells are all finished, reads the cells'
predictions (as `pianolab ab report` does), and for overall r and within-excerpt r gives each
variant's mean over cells, its difference from the unadapted baseline on the same query items, and the
corrected repeated-CV paired t-test (Nadeau-Bengio) with Holm across the variants of that experiment
and metric. Writes docs/results/e2_fewshot/README.md and r_vs_k.png.

    .venv/bin/python benchmarks/fewshot_summary.py [--runs runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pianolab.ab import stats
from pianolab.ab.collect import collect
from pianolab.ab.spec import BASELINE, load_experiment

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"pearson": "overall r", "within_excerpt_pearson": "within-excerpt r"}
OUT = ROOT / "docs" / "results" / "e2_fewshot"


def summarise(path: Path, runs: Path) -> list[dict] | None:
    exp = load_experiment(path)
    try:
        res = {m: collect(exp, runs, metric=m) for m in METRICS}
    except Exception as e:  # unfinished cells
        print(f"{exp.name}: skipped ({e})")
        return None
    first = exp.config(BASELINE)
    rows = []
    for m, r in res.items():
        base = r.scores[r.variants.index(BASELINE)]
        others = [v for v in r.variants if v != BASELINE]
        tests = [stats.corrected_t_test(r.diffs(r.variants.index(v)), r.n_train, r.n_test, exp.alpha) for v in others]
        holm = stats.holm([t.p for t in tests], exp.alpha).p_adjusted if tests else []
        rows.append({"experiment": exp.name, "k": first.adapt.k, "tasks": first.adapt.tasks, "model": first.model.name,
                     "metric": m, "variant": BASELINE, "mean": float(np.nanmean(base)), "diff": None,
                     "ci": None, "p_holm": None, "cells": int(np.isfinite(base).sum())})
        for v, t, p in zip(others, tests, holm, strict=True):
            rows.append({"experiment": exp.name, "k": first.adapt.k, "tasks": first.adapt.tasks,
                         "model": first.model.name, "metric": m, "variant": v,
                         "mean": float(np.nanmean(r.scores[r.variants.index(v)])), "diff": float(t.mean),
                         "ci": (float(t.ci_low), float(t.ci_high)), "p_holm": float(p),
                         "cells": int(np.isfinite(r.scores[r.variants.index(v)]).sum())})
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = ["| experiment | tasks | model | k | cells | variant | overall r | Δ overall r [95% CI], Holm p | "
             "within-excerpt r | Δ within-excerpt r [95% CI], Holm p |", "|---" * 10 + "|"]
    key = lambda r: (r["experiment"], r["variant"])  # noqa: E731
    by = {(key(r), r["metric"]): r for r in rows}
    for (exp, v), _ in sorted({key(r): None for r in rows}.items(), key=lambda kv: kv[0][0]):
        o, w = by[((exp, v), "pearson")], by[((exp, v), "within_excerpt_pearson")]
        def cell(r: dict) -> str:
            if r["diff"] is None:
                return "—"
            if max(abs(r["ci"][0]), abs(r["ci"][1])) < 1e-9:
                return "identical (a shift per excerpt)"
            return f"{r['diff']:+.4f} [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}], p={r['p_holm']:.3g}"

        lines.append(f"| {exp} | {o['tasks']} | {o['model']} | {o['k']} | {o['cells']} | {v} | {o['mean']:.4f} | "
                     f"{cell(o)} | {w['mean']:.4f} | {cell(w)} |")
    return lines


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trees = [r for r in rows if r["tasks"] == "excerpt" and r["model"] != "symbolic_mlp"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, m in zip(axes, METRICS, strict=True):
        for v in sorted({r["variant"] for r in trees}):
            pts = sorted((r["k"], r["mean"]) for r in trees if r["metric"] == m and r["variant"] == v)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    label="none (unadapted)" if v == BASELINE else v)
        ax.set_xlabel("k (rated support performances per test excerpt)")
        ax.set_title(METRICS[m])
        ax.set_xticks(sorted({r["k"] for r in trees}))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean over 12 cells (4 folds x 3 seeds)")
    axes[1].legend(fontsize=8)
    fig.suptitle("Few-shot adaptation to a new excerpt, random forest on symbolic features (query items only)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs")
    args = ap.parse_args()
    rows = []
    for path in sorted((ROOT / "experiments").glob("e2_fewshot_*.yaml")):
        rows += summarise(path, args.runs) or []
    OUT.mkdir(parents=True, exist_ok=True)
    lines = ["# Few-shot adaptation across k (issue 23 §1)", "",
             "Generated by `benchmarks/fewshot_summary.py` from the finished cells of `experiments/e2_fewshot_*.yaml`. "
             "Each experiment: 4-fold CV (excerpt groups, or performers for `tasks: performer`) x seeds (one "
             "partition each; `cells` = folds x seeds per variant); metrics on the query items only (the same "
             "items for every variant of an experiment); Δ = variant − unadapted baseline (`baseline` = strategy "
             "none: the k = 0 model on the same query), its unadjusted 95% CI and the corrected repeated-CV "
             "paired t-test (Nadeau–Bengio) p with Holm across the variants of one experiment and metric (the "
             "per-experiment reports give the primary metric's Bonferroni-adjusted CIs). Machine: shared 2-core "
             "CPU; command: `nice -n 10 .venv/bin/pianolab ab run experiments/<experiment>.yaml --tracker none "
             "--jobs 1 --threads 1`.",
             "", *table(rows), "", "![r against k](r_vs_k.png)", ""]
    (OUT / "README.md").write_text("\n".join(lines))
    if any(r["tasks"] == "excerpt" for r in rows):
        figure(rows, OUT / "r_vs_k.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
