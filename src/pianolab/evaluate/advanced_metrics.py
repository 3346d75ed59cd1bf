"""Advanced metrics, registered in the same `METRICS` registry with the same call signature.

Inputs as in `metrics`: `(items, dims)` arrays, `groups` an `(items,)` array of excerpt-group ids.
Metric-specific inputs (weights, predicted std, k, ...) are keyword options.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import ndtri
from scipy.stats import ks_2samp, wasserstein_distance

from pianolab.errors import PianolabError
from pianolab.evaluate.metrics import MetricResult, demean_by_group, metric, nanmean, pearson_cols


def _group_indices(groups: np.ndarray) -> list[np.ndarray]:
    """Item indices of each group, in sorted group order."""
    _, inv = np.unique(groups, return_inverse=True)
    return [np.flatnonzero(inv == g) for g in range(inv.max() + 1)]


@metric("dimension_weighted_correlation")
def dimension_weighted_correlation(
    y_true, y_pred, groups=None, weights=None, within_excerpt: bool = False
) -> MetricResult:
    """Weighted mean of per-dimension Pearson r: sum(w_d r_d) / sum(w_d) over defined dims.

    `weights` ((dims,), >= 0) is required; the intended default is each dimension's label
    reliability, e.g. `split_half_reliability(ds, load_ratings(root)).overall` (negative values are
    clipped to 0). `within_excerpt=True` weights the within-excerpt r instead (needs groups).
    """
    if weights is None:
        raise PianolabError("dimension_weighted_correlation needs weights= (e.g. per-dim label reliability)")
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    if w.shape != (y_true.shape[1],):
        raise PianolabError(f"weights must have shape ({y_true.shape[1]},), got {w.shape}")
    if within_excerpt:
        if groups is None:
            raise PianolabError("dimension_weighted_correlation(within_excerpt=True) needs groups")
        y_true, y_pred = demean_by_group(y_true, groups), demean_by_group(y_pred, groups)
    r = pearson_cols(y_true, y_pred)
    ok = np.isfinite(r) & (w > 0)
    value = float((w[ok] * r[ok]).sum() / w[ok].sum()) if ok.any() else float("nan")
    return MetricResult(value, r, details={"weights": w})


def _topk_overlap(t: np.ndarray, p: np.ndarray, k: int) -> float:
    """|model's top-k ∩ raters' top-k| / k for one group and dimension (ties in labels: any item
    tied with the raters' k-th value counts as a hit; model ties broken by item order)."""
    pred_top = np.argsort(-p, kind="stable")[:k]
    kth = np.sort(t)[::-1][k - 1]
    return float(np.minimum((t[pred_top] >= kth).sum(), k) / k)


@metric("top_k_accuracy", needs_groups=True)
def top_k_accuracy(y_true, y_pred, groups, k: int = 1) -> MetricResult:
    """Within each excerpt group of more than k items, the overlap of the model's top-k
    performances with the raters' top-k, divided by k; per dim = mean over groups; value = mean
    over dims. details: `chance` (mean k/n_group, the expected score of a random ranking),
    `n_groups` used."""
    if k < 1:
        raise PianolabError(f"top_k_accuracy: k must be >= 1, got {k}")
    idx = [g for g in _group_indices(groups) if len(g) > k]
    if not idx:
        return MetricResult(float("nan"), np.full(y_true.shape[1], np.nan), details={"n_groups": 0})
    per = np.array(
        [[_topk_overlap(y_true[g, d], y_pred[g, d], k) for g in idx] for d in range(y_true.shape[1])]
    ).mean(axis=1)
    chance = float(np.mean([k / len(g) for g in idx]))
    return MetricResult(float(per.mean()), per, details={"chance": chance, "n_groups": len(idx), "k": k})


@metric("pairwise_ranking_accuracy", needs_groups=True)
def pairwise_ranking_accuracy(y_true, y_pred, groups, min_label_gap: float = 0.0) -> MetricResult:
    """Share of within-group item pairs whose label order the model reproduces (pooled over
    groups; chance 0.5). Pairs with |label difference| <= min_label_gap are skipped; a tie in the
    predictions counts one half. NaN for a dimension without a usable pair."""
    hits = np.zeros(y_true.shape[1])
    pairs = np.zeros(y_true.shape[1])
    for g in _group_indices(groups):
        if len(g) < 2:
            continue
        i, j = np.triu_indices(len(g), k=1)
        dt = y_true[g][i] - y_true[g][j]  # (pairs, dims)
        dp = y_pred[g][i] - y_pred[g][j]
        use = np.abs(dt) > min_label_gap
        score = np.where(np.sign(dp) == np.sign(dt), 1.0, np.where(dp == 0, 0.5, 0.0))
        hits += (score * use).sum(axis=0)
        pairs += use.sum(axis=0)
    per = np.full(y_true.shape[1], np.nan)
    per[pairs > 0] = hits[pairs > 0] / pairs[pairs > 0]
    return MetricResult(nanmean(per), per, details={"n_pairs": pairs})


@metric("distribution_matching", higher_is_better=False)
def distribution_matching(y_true, y_pred, groups=None) -> MetricResult:
    """Per dimension: Wasserstein-1 distance between the predicted and true value distributions
    (`per_dim`, value = mean), plus in details the two-sample KS statistic and the variance ratio
    var(pred) / var(true) (NaN for constant labels; below 1 = predictions shrunk to the mean)."""
    dims = range(y_true.shape[1])
    wd = np.array([wasserstein_distance(y_true[:, d], y_pred[:, d]) for d in dims])
    ks = np.array([ks_2samp(y_true[:, d], y_pred[:, d]).statistic for d in dims])
    vt, vp = y_true.var(axis=0), y_pred.var(axis=0)
    ratio = np.full(len(vt), np.nan)
    ratio[vt > 0] = vp[vt > 0] / vt[vt > 0]
    details = {"ks": ks, "variance_ratio": ratio, "mean_ks": nanmean(ks),
               "mean_variance_ratio": nanmean(ratio)}
    return MetricResult(float(wd.mean()), wd, details=details)


@metric("confidence_calibration", higher_is_better=False)
def confidence_calibration(
    y_true,
    y_pred,
    groups=None,
    pred_std=None,
    levels: Sequence[float] = (0.5, 0.8, 0.9, 0.95),
    label_std=None,
) -> MetricResult:
    """Calibration of Gaussian predictive intervals mean ± z_{(1+p)/2}·std.

    `pred_std` ((items, dims), > 0) is required. value = mean over levels of |coverage − p|
    (lower is better); per_dim the same per dimension. details: `coverage` {p: overall coverage},
    `coverage_per_dim` ((levels, dims)), `std_error_corr` (Pearson of predicted std with |error|,
    per dim and `mean_std_error_corr`), `sharpness` (mean predicted std), and with `label_std`
    (the raters' spread) `std_label_std_corr` per dim.
    """
    if pred_std is None:
        raise PianolabError("confidence_calibration needs pred_std= (items, dims) predicted std")
    sd = np.asarray(pred_std, dtype=np.float64).reshape(y_true.shape)
    if not (np.isfinite(sd).all() and (sd > 0).all()):
        raise PianolabError("confidence_calibration: pred_std must be finite and > 0")
    levels = np.asarray(levels, dtype=np.float64)
    if not ((levels > 0) & (levels < 1)).all():
        raise PianolabError("confidence_calibration: levels must lie in (0, 1)")
    zerr = np.abs(y_true - y_pred) / sd
    cov = np.stack([(zerr <= ndtri((1 + p) / 2)).mean(axis=0) for p in levels])  # (levels, dims)
    per = np.abs(cov - levels[:, None]).mean(axis=0)
    corr = pearson_cols(sd, np.abs(y_true - y_pred))
    details = {
        "coverage": {float(p): float(c) for p, c in zip(levels, cov.mean(axis=1), strict=True)},
        "coverage_per_dim": cov,
        "std_error_corr": corr,
        "mean_std_error_corr": nanmean(corr),
        "sharpness": float(sd.mean()),
    }
    if label_std is not None:
        details["std_label_std_corr"] = pearson_cols(sd, np.asarray(label_std, dtype=np.float64))
    return MetricResult(float(per.mean()), per, details=details)


@metric("worst_case_performance", higher_is_better=False)
def worst_case_performance(y_true, y_pred, groups=None, fraction: float = 0.1) -> MetricResult:
    """Errors on the hardest `fraction` of items (by item MSE over dims; ceil(fraction·items)).

    value = MSE on those items, per_dim its per-dimension MSE. details: `items` (their indices,
    hardest first), `mae`, and with groups the `worst_group` (highest mean item MSE), its `mse`,
    and `group_mse` {group: MSE} for every group, worst first.
    """
    if not 0 < fraction <= 1:
        raise PianolabError(f"worst_case_performance: fraction must be in (0, 1], got {fraction}")
    item_err = ((y_true - y_pred) ** 2).mean(axis=1)
    n = int(np.ceil(fraction * len(item_err)))
    hard = np.argsort(-item_err, kind="stable")[:n]
    per = ((y_true[hard] - y_pred[hard]) ** 2).mean(axis=0)
    details = {"items": hard, "mae": float(np.abs(y_true[hard] - y_pred[hard]).mean())}
    if groups is not None:
        names = np.unique(groups)
        gm = {str(names[i]): float(item_err[g].mean()) for i, g in enumerate(_group_indices(groups))}
        ranked = dict(sorted(gm.items(), key=lambda kv: -kv[1]))
        worst = next(iter(ranked))
        details.update(worst_group=worst, worst_group_mse=ranked[worst], group_mse=ranked)
    return MetricResult(float(per.mean()), per, details=details)
