"""The README's tables: every variant against the baseline on r, R2, within-excerpt r and between-excerpt
r (Pearson of the excerpt means of labels and predictions), same corrected repeated-CV t-test as the
primary metric (95% CI Bonferroni-adjusted over the variants, as in the report), Holm across the
variants of each metric. Reads the cells' predictions only.

    .venv/bin/python docs/results/e10_two_level_explore/secondary.py experiments/e10_two_level_explore.yaml
"""

import sys

import numpy as np

from pianolab import track
from pianolab.ab.collect import collect
from pianolab.ab.spec import load_experiment
from pianolab.ab.stats import corrected_t_test, holm
from pianolab.evaluate.metrics import nanmean, pearson_cols


def between_r(results) -> np.ndarray:
    """[variant, seed, fold]: mean per-dimension Pearson of the test excerpts' mean label and mean prediction."""
    groups = results.groups()
    out = np.full(results.scores.shape, np.nan)
    for i, v in enumerate(results.variants):
        for s in range(out.shape[1]):
            for k in range(out.shape[2]):
                rows, pred, true = track.read_predictions(results.folders[(v, s, k)] / "predictions.parquet")
                test = (rows["role"] == "test").to_numpy()
                g = groups[[results.dataset.index[x] for x in rows["stem"][test]]]
                pred, true = pred[test], true[test]
                mean = lambda a: np.stack([a[g == name].mean(0) for name in np.unique(g)])  # noqa: E731, B023
                out[i, s, k] = nanmean(pearson_cols(mean(true), mean(pred)))
    return out


def main(path: str) -> None:
    exp = load_experiment(path)
    tables = {}
    for metric in ("pearson", "r2", "within_excerpt_pearson"):
        res = collect(exp, metric=metric)
        tables[metric] = res.scores
    tables["between_excerpt_pearson"] = between_r(res)
    variants, base = res.variants, res.variants.index("baseline")
    for metric, scores in tables.items():
        print(f"\n{metric}")
        others = [v for v in variants if v != "baseline"]
        tests = {v: corrected_t_test(scores[variants.index(v)] - scores[base], res.n_train, res.n_test,
                                     alpha=0.05 / len(others)) for v in others}  # CI Bonferroni-adjusted
        adjusted = holm([t.p for t in tests.values()]).p_adjusted
        for i, v in enumerate(variants):
            line = f"  {v:14s} {np.nanmean(scores[i]):.3f} ± {np.nanstd(scores[i], ddof=1):.3f}"
            if v in tests:
                t, d = tests[v], (scores[i] - scores[base]).ravel()
                line += (f"  Δ {t.mean:+.4f} [{t.ci_low:+.4f}, {t.ci_high:+.4f}] p {t.p:.3g}"
                         f" (Holm {adjusted[others.index(v)]:.3g}), better in {(d > 0).sum()}/{d.size} cells")
            print(line)


if __name__ == "__main__":
    main(sys.argv[1])
