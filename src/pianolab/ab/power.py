"""Power of the corrected repeated-CV t-test: seeds × folds needed, minimal detectable difference.

The corrected t statistic is noncentral t with df = n − 1 (n = seeds·folds) and noncentrality
Δ / (s·sqrt(1/n + r)), r = n_test/n_train, where s is the sd of the cell differences (the pilot's
``d[seed, fold]``). Because of the r term the standard error never falls below s·sqrt(r): a small
enough Δ cannot be detected with any number of seeds, and the functions say so (``seeds is None``).
Changing the number of folds K sets r = 1/(K − 1) and assumes the per-cell sd stays the pilot's (an
approximation: smaller test folds make noisier cells).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as st

from pianolab.ab.stats import correction_ratio, flat_cells


def corrected_power(delta: float, sd: float, seeds: int, folds: int, ratio: float,
                    alpha: float = 0.05) -> float:
    """Power of the two-sided corrected t-test to detect a true mean difference ``delta``.

    sd: sd of the cell differences; ratio: the correction term n_test/n_train.
    """
    n = seeds * folds
    if n < 2:
        return 0.0
    se = sd * np.sqrt(1 / n + ratio)
    if se == 0:
        return 1.0 if delta != 0 else alpha
    crit, ncp = st.t.ppf(1 - alpha / 2, n - 1), abs(delta) / se
    return float(st.nct.sf(crit, n - 1, ncp) + st.nct.cdf(-crit, n - 1, ncp))


def _pilot(pilot_d, n_train: float, n_test: float, folds: int | None, alpha: float):
    """Pilot sd with its chi-square interval, the design's fold count and correction ratio."""
    x = flat_cells(pilot_d).ravel()
    pilot_folds = int(np.shape(pilot_d)[1])
    folds = pilot_folds if folds is None else folds
    if folds < 2:
        raise ValueError(f"need at least 2 folds, got {folds}")
    ratio = correction_ratio(n_train, n_test) if folds == pilot_folds else 1 / (folds - 1)
    df = x.size - 1
    var = x.var(ddof=1)
    sd_ci = (float(np.sqrt(df * var / st.chi2.ppf(1 - alpha / 2, df))),
             float(np.sqrt(df * var / st.chi2.ppf(alpha / 2, df))))
    return float(np.sqrt(var)), sd_ci, folds, ratio


def _seeds_needed(delta, sd, folds, ratio, alpha, power, max_seeds) -> int | None:
    """Smallest seed count reaching ``power`` (power grows with seeds), or None if none ≤ max_seeds."""
    first = max(1, -(-2 // folds))
    if corrected_power(delta, sd, max_seeds, folds, ratio, alpha) < power:
        return None
    low, high = first, max_seeds
    while low < high:
        mid = (low + high) // 2
        if corrected_power(delta, sd, mid, folds, ratio, alpha) >= power:
            high = mid
        else:
            low = mid + 1
    return low


@dataclass(frozen=True)
class PowerPlan:
    """Seeds × folds needed to detect ``delta``; ``seeds_range`` from the ends of the pilot sd interval.

    ``seeds`` is None when no design up to ``max_seeds`` reaches the target power; ``why`` then says
    whether any number of seeds could (see ``why_unreachable``).
    """

    seeds: int | None
    folds: int
    achieved_power: float | None
    seeds_range: tuple[int | None, int | None]
    delta: float
    sd: float
    sd_ci: tuple[float, float]
    alpha: float
    power: float
    why: str = ""


def why_unreachable(delta: float, sd: float, folds: int, ratio: float, alpha: float, power: float,
                    max_seeds: int) -> str:
    """Why no design up to ``max_seeds`` seeds reaches ``power``, in one sentence.

    The corrected standard error s·sqrt(1/n + r) never falls below s·sqrt(r), so with infinitely many
    seeds the power tends to that of a z-test with standard error s·sqrt(r); below ``power`` there, no
    number of seeds (at this fold count) suffices."""
    floor = sd * np.sqrt(ratio)
    z = st.norm.ppf(1 - alpha / 2)
    limit = 1.0 if floor == 0 else float(st.norm.sf(z - delta / floor) + st.norm.cdf(-z - delta / floor))
    if limit < power:
        return (f"no number of seeds suffices: the corrected standard error never falls below "
                f"sd·sqrt(n_test/n_train) = {floor:.3g} (cells share training data), where the power to "
                f"detect Δ = {delta:g} is at most {limit:.2f} < {power:g}; use more folds or a larger Δ")
    return f"more than {max_seeds} seeds x {folds} folds are needed (power {power:g} is reachable in the limit)"


def power_analysis(pilot_d, n_train: float, n_test: float, delta: float, alpha: float = 0.05,
                   power: float = 0.8, folds: int | None = None, max_seeds: int = 1000) -> PowerPlan:
    """Seeds needed (for ``folds`` folds, default the pilot's) to detect ``delta`` with the corrected test.

    pilot_d: ``[seed, fold]`` differences of a pilot. ``seeds_range`` repeats the search at the ends of
    the (1 − alpha) chi-square interval of the pilot sd, which treats cells as independent (optimistic).
    """
    if delta <= 0 or not 0 < power < 1:
        raise ValueError(f"need delta > 0 and 0 < power < 1, got {delta} and {power}")
    sd, sd_ci, folds, ratio = _pilot(pilot_d, n_train, n_test, folds, alpha)
    seeds = _seeds_needed(delta, sd, folds, ratio, alpha, power, max_seeds)
    achieved = None if seeds is None else corrected_power(delta, sd, seeds, folds, ratio, alpha)
    seeds_range = tuple(_seeds_needed(delta, s, folds, ratio, alpha, power, max_seeds) for s in sd_ci)
    why = "" if seeds is not None else why_unreachable(delta, sd, folds, ratio, alpha, power, max_seeds)
    return PowerPlan(seeds, folds, achieved, seeds_range, delta, sd, sd_ci, alpha, power, why)


@dataclass(frozen=True)
class DetectableDelta:
    """Smallest true difference detected with ``power`` by the design; interval from the pilot sd's."""

    delta: float
    ci_low: float
    ci_high: float
    seeds: int
    folds: int
    sd: float
    alpha: float
    power: float


def _detectable(sd, seeds, folds, ratio, alpha, power) -> float:
    if sd == 0:
        return 0.0
    f = lambda delta: corrected_power(delta, sd, seeds, folds, ratio, alpha) - power
    high = sd
    while f(high) < 0:
        high *= 2
    return float(optimize.brentq(f, 0.0, high, xtol=1e-12 * sd))


def minimal_detectable_delta(pilot_d, n_train: float, n_test: float, seeds: int | None = None,
                             folds: int | None = None, alpha: float = 0.05,
                             power: float = 0.8) -> DetectableDelta:
    """Minimal detectable Δ of a design (default: the pilot's own seeds × folds) with the corrected test.

    pilot_d: ``[seed, fold]``. The interval evaluates the same at the ends of the pilot sd interval.
    """
    sd, sd_ci, folds, ratio = _pilot(pilot_d, n_train, n_test, folds, alpha)
    seeds = int(np.shape(pilot_d)[0]) if seeds is None else seeds
    if seeds * folds < 2:
        raise ValueError(f"need at least 2 cells, got {seeds} seeds x {folds} folds")
    low, high = (_detectable(s, seeds, folds, ratio, alpha, power) for s in sd_ci)
    return DetectableDelta(_detectable(sd, seeds, folds, ratio, alpha, power), low, high, seeds, folds,
                           sd, alpha, power)
