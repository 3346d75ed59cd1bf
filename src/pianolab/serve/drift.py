"""Drift of one served column against its training reference: PSI, two-sample KS, share out of range."""

from __future__ import annotations

import numpy as np
from scipy import stats

SMOOTH = 0.5  # pseudo-count per bin (Laplace): an empty bin of a small window stays finite and modest


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins (ties merged), counts smoothed."""
    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    if not len(reference) or not len(current):
        return float("nan")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1))[1:-1])
    ref, cur = (np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1) + SMOOTH
                for x in (reference, current))
    ref, cur = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """(statistic, p) of scipy's two-sample Kolmogorov-Smirnov test; (nan, 1) when a side is empty."""
    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    if not len(reference) or not len(current):
        return float("nan"), 1.0
    res = stats.ks_2samp(reference, current)
    return float(res.statistic), float(res.pvalue)


def outside(reference: np.ndarray, current: np.ndarray) -> float:
    """Share of the current values outside the reference's [min, max]."""
    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    if not len(reference) or not len(current):
        return 0.0
    return float(np.mean((current < reference.min()) | (current > reference.max())))
