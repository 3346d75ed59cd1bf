"""Permutation importance on held-out data, by feature family (for feature and hybrid models)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pianolab.evaluate import plots
from pianolab.evaluate.metrics import METRICS


def feature_families(names: Sequence[str], sep: str = "_") -> dict[str, list[int]]:
    """Group feature columns by name prefix before the first `sep` ('velocity_mean' -> 'velocity')."""
    fams: dict[str, list[int]] = {}
    for j, n in enumerate(names):
        fams.setdefault(n.split(sep, 1)[0], []).append(j)
    return fams


@dataclass(frozen=True)
class Importance:
    """`table`: [family, importance_mean, importance_std, n_features], most important first
    (importance = metric drop when the family is shuffled; positive = the model uses it);
    `baseline`: the metric on unshuffled data; `plot`: PNG path or None."""

    table: pd.DataFrame
    baseline: float
    plot: Path | None


def permutation_importance(
    predict_fn: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    metric: str = "pearson",
    feature_groups: Mapping[str, Sequence[int]] | None = None,
    n_repeats: int = 5,
    seed: int = 0,
    groups: np.ndarray | None = None,
    out_dir: str | Path | None = None,
) -> Importance:
    """Shuffle the rows of each feature family jointly (one permutation for all its columns, so
    within-family structure survives) and measure the drop of a registered metric.

    X: (items, features) held-out inputs; y: (items, dims) labels; predict_fn(X) -> (items, dims);
    feature_groups: {family: column indices}, default one family per column ('f0', 'f1', ...);
    groups: excerpt-group ids for group-based metrics.
    """
    X = np.asarray(X)
    m = METRICS.get(metric)
    score = lambda Xs: m(y, predict_fn(Xs), groups).value
    sign = 1.0 if m.higher_is_better else -1.0
    fams = feature_groups or {f"f{j}": [j] for j in range(X.shape[1])}
    rng = np.random.default_rng(seed)
    baseline = score(X)
    rows = []
    for fam, cols in fams.items():
        cols = list(cols)
        drops = []
        for _ in range(n_repeats):
            Xp = X.copy()
            Xp[:, cols] = X[rng.permutation(len(X))][:, cols]
            drops.append(sign * (baseline - score(Xp)))
        rows.append({"family": fam, "importance_mean": float(np.mean(drops)),
                     "importance_std": float(np.std(drops, ddof=1)) if n_repeats > 1 else 0.0,
                     "n_features": len(cols)})
    table = pd.DataFrame(rows).sort_values("importance_mean", ascending=False, ignore_index=True)
    plot = None
    if out_dir is not None:
        fig, axes = plots.figure(panel=(6, 0.5 + 0.3 * len(table)))
        ax = axes[0, 0]
        ax.barh(table["family"][::-1], table["importance_mean"][::-1], xerr=table["importance_std"][::-1])
        ax.set(xlabel=f"drop in {metric} when shuffled", title="permutation importance (held-out)")
        plot = plots.save(fig, out_dir, "permutation_importance")
    return Importance(table, float(baseline), plot)
