"""Paired, CV-corrected statistics for A/B experiments: pure numpy/scipy on arrays, no I/O.

Shapes: ``d[seed, fold]`` holds the paired cell differences m_B − m_A of a repeated K-fold design
(R seeds × K folds, the same partition for both variants), optionally ``d[seed, fold, dim]`` for the
per-dimension tests; per-item arrays are ``[item, dim]`` (or ``[item]``) with ``groups[item]`` the
excerpt group of each item. Positive differences mean B is better. ``n_train`` / ``n_test`` are the
(mean) training and test set sizes of one fold. Every function returns a frozen dataclass holding an
estimate and its interval (helpers return plain numbers); random functions take ``seed`` (an int or a
``np.random.Generator``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special
from scipy import stats as st

BETTER, WORSE = "better", "worse"
BETTER_IN_ROPE, WORSE_IN_ROPE = "better, but within the ROPE", "worse, but within the ROPE"
EQUIVALENT, INCONCLUSIVE, STOPPED = "equivalent within the ROPE", "inconclusive", "stopped early"
VERDICTS = (BETTER, WORSE, BETTER_IN_ROPE, WORSE_IN_ROPE, EQUIVALENT, INCONCLUSIVE, STOPPED)
DIFFERENT = (BETTER, WORSE, BETTER_IN_ROPE, WORSE_IN_ROPE)  # labels that claim a difference
FIXED_MODELS = "trained models held fixed: item sampling only, anti-conservative like the naive t-test"

Number = float | np.ndarray

# Metrics on a correlation scale, where the default ROPE of ±0.01 means something; any other primary
# metric (mse, mae, r2, accuracies, ...) must state its own ROPE in its units (`rope_for`).
CORRELATIONS = frozenset({"pearson", "spearman", "within_excerpt_pearson", "pooled_z_pearson",
                          "dimension_weighted_correlation"})
DEFAULT_ROPE = 0.01


def rope_for(metric: str, rope: float | None) -> float:
    """The ROPE of an experiment whose primary metric is ``metric``: ``rope`` when given, else
    DEFAULT_ROPE for a correlation; ValueError for any other metric without one."""
    if rope is not None:
        return float(rope)
    if metric in CORRELATIONS:
        return DEFAULT_ROPE
    raise ValueError(f"primary_metric {metric!r} is not a correlation, so the default ROPE ±{DEFAULT_ROPE:g} "
                     f"means nothing on its scale: give 'rope', the smallest difference in {metric} that matters")


def _out(x) -> Number:
    """A 0-d result as a float, anything else as an array."""
    return float(x) if np.ndim(x) == 0 else np.asarray(x, dtype=float)


def flat_cells(d, allow_dims: bool = False) -> np.ndarray:
    """Validate ``d[seed, fold]`` (or ``[seed, fold, dim]``) and flatten it to ``[cell(, dim)]``."""
    d = np.asarray(d, dtype=float)
    if d.ndim not in ((2, 3) if allow_dims else (2,)):
        expected = "[seed, fold] or [seed, fold, dim]" if allow_dims else "[seed, fold]"
        raise ValueError(f"differences must have shape {expected}, got {d.shape}")
    if d.shape[0] * d.shape[1] < 2:
        raise ValueError(f"need at least 2 (seed, fold) cells, got {d.shape[0]} x {d.shape[1]}")
    if not np.all(np.isfinite(d)):
        raise ValueError("differences hold NaN or infinite values")
    return d.reshape(d.shape[0] * d.shape[1], *d.shape[2:])


def correction_ratio(n_train: float, n_test: float) -> float:
    """The Nadeau–Bengio correction term n_test / n_train (ρ/(1−ρ) with ρ = n_test/(n_train+n_test))."""
    if n_train <= 0 or n_test < 0:
        raise ValueError(f"need n_train > 0 and n_test >= 0, got {n_train} and {n_test}")
    return n_test / n_train


def _ratio(x, scale, at_zero: float) -> np.ndarray:
    """x / scale, with ``at_zero`` where both are 0 (a degenerate, zero-variance sample)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.asarray(x / scale, dtype=float)
    return np.where(np.isnan(z), at_zero, z)


# --------------------------------------------------------------------------- t-tests


@dataclass(frozen=True)
class TTest:
    """A paired t-test on cell differences: ``mean`` with its (1 − alpha) interval, two-sided ``p``."""

    label: str
    mean: Number
    se: Number
    t: Number
    df: int
    p: Number
    ci_low: Number
    ci_high: Number
    alpha: float


def _t_test(label: str, mean, se, df: int, alpha: float) -> TTest:
    t = _ratio(mean, se, 0.0)
    half = special.stdtrit(df, 1 - alpha / 2) * se
    return TTest(label, _out(mean), _out(se), _out(t), df, _out(2 * special.stdtr(df, -np.abs(t))),
                 _out(mean - half), _out(mean + half), alpha)


def corrected_t_test(d, n_train: float, n_test: float, alpha: float = 0.05) -> TTest:
    """Corrected repeated-CV paired t-test (Nadeau–Bengio 2003; Bouckaert–Frank 2004).

    d: ``[seed, fold]`` or ``[seed, fold, dim]`` (one test per dim). With n = K·R cells and sample
    variance s², the variance of the mean is s²·(1/n + n_test/n_train) instead of s²/n, because cells
    share training (and, across seeds, test) data; df = n − 1. This is the primary decision test.
    """
    x = flat_cells(d, allow_dims=True)
    n = x.shape[0]
    se = np.sqrt(x.var(axis=0, ddof=1) * (1 / n + correction_ratio(n_train, n_test)))
    return _t_test("corrected repeated-CV t-test", x.mean(axis=0), se, n - 1, alpha)


def naive_paired_t(d, alpha: float = 0.05) -> TTest:
    """Plain paired t-test over the K·R cells, as if they were independent (= scipy ``ttest_rel``).

    Reported for comparison only: the cells share training data, so s²/n underestimates the variance
    of the mean and this test is anti-conservative under cross-validation (see ``calibrate``).
    """
    x = flat_cells(d, allow_dims=True)
    n = x.shape[0]
    return _t_test("naive paired t-test (anti-conservative under CV)", x.mean(axis=0),
                   np.sqrt(x.var(axis=0, ddof=1) / n), n - 1, alpha)


@dataclass(frozen=True)
class BayesianTest:
    """Posterior of the mean difference (Student t): P(B better by > rope), P(|Δ| ≤ rope), P(worse)."""

    mean: Number
    scale: Number
    df: int
    p_better: Number
    p_rope: Number
    p_worse: Number
    ci_low: Number
    ci_high: Number
    rope: float
    credible: float


def bayesian_correlated_t(d, n_train: float, n_test: float, rope: float = 0.0,
                          credible: float = 0.95) -> BayesianTest:
    """Bayesian correlated t-test (Corani & Benavoli 2015), the twin of ``corrected_t_test``.

    d: ``[seed, fold]`` or ``[seed, fold, dim]``. Under a flat prior the posterior of the mean difference
    is Student t with df = n − 1, location = mean and scale = s·sqrt(1/n + ρ/(1−ρ)), ρ = n_test/(n_train
    + n_test), i.e. the corrected standard error. The credible interval is equal-tailed.
    """
    if rope < 0:
        raise ValueError(f"rope must be >= 0, got {rope}")
    x = flat_cells(d, allow_dims=True)
    n = x.shape[0]
    mean = x.mean(axis=0)
    scale = np.sqrt(x.var(axis=0, ddof=1) * (1 / n + correction_ratio(n_train, n_test)))
    p_better = special.stdtr(n - 1, -_ratio(rope - mean, scale, np.inf))
    p_worse = special.stdtr(n - 1, _ratio(-rope - mean, scale, -np.inf))
    q = special.stdtrit(n - 1, (1 + credible) / 2)
    return BayesianTest(_out(mean), _out(scale), n - 1, _out(p_better),
                        _out(np.clip(1 - p_better - p_worse, 0, 1)), _out(p_worse),
                        _out(mean - q * scale), _out(mean + q * scale), rope, credible)


# --------------------------------------------------------------------------- rank test


@dataclass(frozen=True)
class RankTest:
    """Wilcoxon signed-rank test with the Hodges–Lehmann estimate and its exact interval."""

    label: str
    statistic: float
    p: float
    estimate: float
    ci_low: float
    ci_high: float
    alpha: float


@functools.lru_cache(maxsize=64)
def signed_rank_cdf(n: int) -> np.ndarray:
    """Exact null CDF of T+ for n untied non-zero values, indexed by t = 0..n(n+1)/2 (read-only)."""
    pmf = np.zeros(n * (n + 1) // 2 + 1)
    pmf[0] = 1.0
    for rank in range(1, n + 1):
        pmf = 0.5 * (pmf + np.concatenate([np.zeros(rank), pmf[:-rank]]))
    cdf = np.cumsum(pmf)
    cdf.flags.writeable = False
    return cdf


def wilcoxon_signed_rank(d, alpha: float = 0.05) -> RankTest:
    """Wilcoxon signed-rank test over the K·R cells (scipy), ignoring their CV correlation.

    d: ``[seed, fold]``. Like the naive t-test it treats cells as independent, so it is anti-conservative
    under CV; reported for robustness to outliers only. The estimate is the Hodges–Lehmann median of the
    Walsh averages; the interval [W_(c), W_(M+1−c)] uses the exact null distribution of T+ (exact for
    untied, non-zero differences), and is unbounded when n is too small to reach 1 − alpha.
    """
    x = flat_cells(d).ravel()
    if np.all(x == 0):
        statistic, p = 0.0, 1.0
    else:
        res = st.wilcoxon(x)
        statistic, p = float(res.statistic), float(res.pvalue)
    walsh = np.sort((x[:, None] + x[None, :])[np.triu_indices(x.size)] / 2)
    c = int(np.sum(signed_rank_cdf(x.size) <= alpha / 2 + 1e-12))
    low, high = (walsh[c - 1], walsh[-c]) if c >= 1 else (-np.inf, np.inf)
    return RankTest("Wilcoxon signed-rank (cells as independent)", statistic, p, float(np.median(walsh)),
                    float(low), float(high), alpha)


# --------------------------------------------------------------------------- effect sizes


@dataclass(frozen=True)
class Estimate:
    """A labelled point estimate with its (1 − alpha) interval."""

    label: str
    estimate: float
    ci_low: float
    ci_high: float
    alpha: float


def _noncentrality_interval(t_obs: float, df: int, alpha: float) -> tuple[float, float]:
    """(1 − alpha) interval of the noncentrality of a noncentral t, by inverting its CDF at t_obs."""
    if not np.isfinite(t_obs):
        return t_obs, t_obs

    def root(f) -> float:  # f is decreasing in the noncentrality
        width = 4.0 + abs(t_obs)
        while f(t_obs - width) < 0 or f(t_obs + width) > 0:
            width *= 2
        return optimize.brentq(f, t_obs - width, t_obs + width, xtol=1e-10)

    low = root(lambda nc: alpha / 2 - st.nct.sf(t_obs, df, nc))
    high = root(lambda nc: st.nct.cdf(t_obs, df, nc) - alpha / 2)
    return low, high


def cohens_d(d, alpha: float = 0.05) -> Estimate:
    """Cohen's d_z = mean / sd of the cell differences ``d[seed, fold]``, with a noncentral-t interval.

    The interval treats the cells as independent (optimistic under CV); see ``corrected_effect_size``.
    """
    x = flat_cells(d).ravel()
    n = x.size
    est = float(_ratio(x.mean(), x.std(ddof=1), 0.0))
    low, high = _noncentrality_interval(est * np.sqrt(n), n - 1, alpha)
    return Estimate("Cohen's d_z (cells as independent)", est, float(low / np.sqrt(n)),
                    float(high / np.sqrt(n)), alpha)


def corrected_effect_size(d, n_train: float, n_test: float, alpha: float = 0.05) -> Estimate:
    """Effect size mean / sqrt(corrected per-cell variance), with an interval from the corrected test.

    Cells correlated by ρ have E[s²] = σ²(1 − ρ), so the per-cell variance is estimated by
    s²/(1 − ρ) = s²·(1 + n_test/n_train). The interval maps the noncentral-t interval of the corrected
    t statistic (noncentrality = effect·sqrt(1 + r)/sqrt(1/n + r), r = n_test/n_train).
    """
    x = flat_cells(d).ravel()
    n, r = x.size, correction_ratio(n_train, n_test)
    est = float(_ratio(x.mean(), x.std(ddof=1) * np.sqrt(1 + r), 0.0))
    to_effect = np.sqrt(1 / n + r) / np.sqrt(1 + r)
    low, high = _noncentrality_interval(est / to_effect, n - 1, alpha)
    return Estimate("corrected effect size", est, float(low * to_effect), float(high * to_effect), alpha)


def wilson_interval(successes: float, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion successes / n."""
    z = st.norm.ppf(1 - alpha / 2)
    share = successes / n
    centre = (share + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(share * (1 - share) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def prob_improvement(d, alpha: float = 0.05) -> Estimate:
    """Share of cells ``d[seed, fold]`` where B beats A (ties count one half), with a Wilson interval.

    The interval treats the cells as independent, so it is too narrow under CV.
    """
    x = flat_cells(d).ravel()
    wins = float(np.sum(x > 0) + 0.5 * np.sum(x == 0))
    low, high = wilson_interval(wins, x.size, alpha)
    return Estimate("probability of improvement over cells (cells as independent)", wins / x.size,
                    low, high, alpha)


# --------------------------------------------------------------------------- resampling on items


@dataclass(frozen=True)
class Resampled:
    """A resampling estimate with its percentile interval (and a permutation ``p`` where one applies)."""

    label: str
    estimate: float
    ci_low: float
    ci_high: float
    p: float | None
    n_resamples: int
    n_units: int
    alpha: float


def _units(groups, n_items: int) -> tuple[np.ndarray, int]:
    """Map ``groups[item]`` (or None: one unit per item) to unit indices 0..G−1."""
    if groups is None:
        return np.arange(n_items), n_items
    groups = np.asarray(groups)
    if groups.shape != (n_items,):
        raise ValueError(f"groups must have shape [item] = ({n_items},), got {groups.shape}")
    _, unit = np.unique(groups, return_inverse=True)
    return unit, int(unit.max()) + 1


def bootstrap_groups(y_true, pred_a, pred_b, metric: Callable[[np.ndarray, np.ndarray], float],
                     groups=None, n_boot: int = 2000, alpha: float = 0.05, seed=0) -> Resampled:
    """Bootstrap interval of metric(y, pred_b) − metric(y, pred_a) on pooled out-of-fold predictions.

    y_true, pred_a, pred_b: ``[item, dim]`` (or ``[item]``), one pooled out-of-fold prediction per item;
    groups: ``[item]`` excerpt group (None resamples items). Whole groups are resampled with replacement,
    keeping performances of one excerpt together; the interval is the percentile interval. It holds the
    two trained models fixed: it reflects the sampling of items only, not the training variability
    across seeds and folds, so like the naive t-test it is anti-conservative for comparing training
    procedures (in real A/A pairs such tests rejected in 15-17 of 95 tests).
    """
    y_true, pred_a, pred_b = (np.asarray(a, dtype=float) for a in (y_true, pred_a, pred_b))
    if not (y_true.shape == pred_a.shape == pred_b.shape):
        raise ValueError(f"shapes differ: {y_true.shape}, {pred_a.shape}, {pred_b.shape}")
    if n_boot < 1:
        raise ValueError(f"need n_boot >= 1, got {n_boot}")
    unit, n_units = _units(groups, y_true.shape[0])
    members = [np.flatnonzero(unit == u) for u in range(n_units)]
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([members[u] for u in rng.integers(0, n_units, n_units)])
        diffs[b] = metric(y_true[idx], pred_b[idx]) - metric(y_true[idx], pred_a[idx])
    low, high = np.nanquantile(diffs, [alpha / 2, 1 - alpha / 2])
    label = f"bootstrap over {'items' if groups is None else 'excerpt groups'} ({FIXED_MODELS})"
    return Resampled(label, float(metric(y_true, pred_b) - metric(y_true, pred_a)), float(low),
                     float(high), None, n_boot, n_units, alpha)


def permutation_test_items(err_a, err_b, groups=None, n_perm: int = 10000, alpha: float = 0.05,
                           seed=0) -> Resampled:
    """Paired sign-flip permutation test of the mean per-item error reduction err_A − err_B.

    err_a, err_b: ``[item]`` or ``[item, dim]`` (averaged over dim), errors of pooled out-of-fold
    predictions (lower is better, so a positive estimate means B has smaller errors). groups: ``[item]``
    flips whole excerpt groups together (None flips items). p is two-sided, (1 + #|T*| ≥ |T|)/(1 + n_perm);
    the interval is a bootstrap percentile interval over the same units. Like ``bootstrap_groups`` it
    holds the trained models fixed (item sampling only).
    """
    if n_perm < 1:
        raise ValueError(f"need n_perm >= 1, got {n_perm}")
    diff = np.asarray(err_a, dtype=float) - np.asarray(err_b, dtype=float)
    diff = diff.mean(axis=1) if diff.ndim == 2 else diff
    unit, n_units = _units(groups, diff.shape[0])
    unit_sum = np.bincount(unit, weights=diff, minlength=n_units)
    unit_size = np.bincount(unit, minlength=n_units).astype(float)
    observed = diff.mean()
    rng = np.random.default_rng(seed)
    extreme, boot = 0, []
    for size in np.diff(np.r_[0:n_perm:1000, n_perm]):
        signs = rng.choice([-1.0, 1.0], size=(size, n_units))
        extreme += int(np.sum(np.abs(signs @ unit_sum) / diff.size >= abs(observed) - 1e-12))
        counts = rng.multinomial(n_units, np.full(n_units, 1 / n_units), size=size)
        boot.append((counts @ unit_sum) / (counts @ unit_size))
    low, high = np.quantile(np.concatenate(boot), [alpha / 2, 1 - alpha / 2])
    label = f"sign-flip permutation over {'items' if groups is None else 'excerpt groups'} ({FIXED_MODELS})"
    return Resampled(label, float(observed), float(low), float(high), (1 + extreme) / (1 + n_perm),
                     n_perm, n_units, alpha)


# --------------------------------------------------------------------------- multiple comparisons


@dataclass(frozen=True)
class Adjusted:
    """Adjusted p-values and reject flags of a multiple-comparison procedure at level ``alpha``."""

    method: str
    p: np.ndarray
    p_adjusted: np.ndarray
    reject: np.ndarray
    alpha: float


def _p_values(p) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    if p.ndim != 1 or p.size == 0 or np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must be a non-empty 1-d array in [0, 1], got {p!r}")
    return p


def _adjusted(method: str, p: np.ndarray, adjusted: np.ndarray, alpha: float) -> Adjusted:
    adjusted = np.minimum(adjusted, 1.0)
    return Adjusted(method, p, adjusted, adjusted <= alpha, alpha)


def bonferroni(p, alpha: float = 0.05) -> Adjusted:
    """Bonferroni: p·m (family-wise error control)."""
    p = _p_values(p)
    return _adjusted("bonferroni", p, p * p.size, alpha)


def holm(p, alpha: float = 0.05) -> Adjusted:
    """Holm step-down: sorted p_(j)·(m − j + 1), made monotone (family-wise error control)."""
    p = _p_values(p)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * (p.size - np.arange(p.size)))
    adjusted = np.empty_like(p)
    adjusted[order] = stepped
    return _adjusted("holm", p, adjusted, alpha)


def benjamini_hochberg(p, alpha: float = 0.05) -> Adjusted:
    """Benjamini–Hochberg step-up: sorted p_(j)·m/j, made monotone from the top (false-discovery rate)."""
    p = _p_values(p)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * p.size / np.arange(1, p.size + 1)
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum.accumulate(scaled[::-1])[::-1]
    return _adjusted("benjamini-hochberg", p, adjusted, alpha)


@dataclass(frozen=True)
class DimensionTests:
    """Corrected t-test per dimension with Benjamini–Hochberg over the dimensions."""

    test: TTest
    adjusted: Adjusted


def per_dimension(d, n_train: float, n_test: float, alpha: float = 0.05) -> DimensionTests:
    """Corrected t-test on each dimension of ``d[seed, fold, dim]``, BH-adjusted across dimensions."""
    if np.ndim(d) != 3:
        raise ValueError(f"per-dimension differences must have shape [seed, fold, dim], got {np.shape(d)}")
    test = corrected_t_test(d, n_train, n_test, alpha)
    return DimensionTests(test, benjamini_hochberg(np.atleast_1d(test.p), alpha))


# --------------------------------------------------------------------------- decisions


def equivalence_p(mean, se, df: int, rope: float) -> Number:
    """Two one-sided tests (TOST) of H0: |Δ| >= rope, as a two-sided p: 2·max(p_lower, p_upper).

    p < alpha exactly when the two-sided (1 − alpha) interval mean ± t·se lies inside (−rope, rope), so
    equivalence is claimed at the same level and with the same interval as a difference.
    """
    low = special.stdtr(df, -_ratio(np.asarray(mean) + rope, se, np.inf))
    high = special.stdtr(df, _ratio(np.asarray(mean) - rope, se, -np.inf))
    return _out(np.minimum(1.0, 2 * np.maximum(low, high)))


def verdict_label(p_adjusted: float, p_equivalence_adjusted: float, mean: float, rope: float,
                  alpha: float, stopped: bool = False) -> str:
    """The one verdict a comparison supports; positive ``mean`` = B better. In order:

    - "stopped early": the early-stop rule stopped B (``stopped``); no other claim is made;
    - "better" / "worse": the (Holm-adjusted) corrected p < alpha and the estimate lies outside the ROPE
      (mean > rope / mean < −rope);
    - "better, but within the ROPE" / "worse, but within the ROPE": p < alpha but |mean| <= rope: a
      real difference whose estimate is smaller than the difference that matters;
    - "equivalent within the ROPE": not different, and the (Holm-adjusted) equivalence p < alpha, i.e.
      the interval lies inside ±rope at the family-wise level;
    - "inconclusive": neither.
    """
    if stopped:
        return STOPPED
    if p_adjusted < alpha:
        if mean > 0:
            return BETTER if mean > rope else BETTER_IN_ROPE
        return WORSE if mean < -rope else WORSE_IN_ROPE
    return EQUIVALENT if p_equivalence_adjusted < alpha else INCONCLUSIVE


@dataclass(frozen=True)
class Verdict:
    """The decision on one variant against the baseline, with the numbers behind it.

    ``ci_low``/``ci_high``: the corrected (1 − alpha) interval of this comparison alone (unadjusted);
    ``ci_adjusted_low``/``ci_adjusted_high``: the Bonferroni-adjusted (1 − alpha/family) simultaneous
    interval, the one to show beside a Holm-adjusted p. ``family``: the number of comparisons Holm
    adjusts over (0 for a stopped variant, which is not in the family). ``sentence``: the verdict in
    plain words (``verdict_sentence``)."""

    label: str
    reason: str
    mean: float
    ci_low: float
    ci_high: float
    p: float
    p_adjusted: float
    rope: float
    alpha: float
    n_cells: int
    p_better: float
    p_rope: float
    p_worse: float
    p_equivalence: float = 1.0
    p_equivalence_adjusted: float = 1.0
    ci_adjusted_low: float = float("nan")
    ci_adjusted_high: float = float("nan")
    family: int = 1
    sentence: str = ""


def verdict_sentence(variant: str, v: Verdict) -> str:
    """One line in plain words saying what the statistics support about ``variant`` against the baseline."""
    held = f"corrected p = {v.p_adjusted:.3g}" + (f", Holm over {v.family}" if v.family > 1 else "")
    delta = f"{v.mean:+.4g}"
    texts = {
        BETTER: f"{variant} is better than the baseline by {delta} ({held}), more than the ROPE ±{v.rope:g}.",
        WORSE: f"{variant} is worse than the baseline by {delta} ({held}), more than the ROPE ±{v.rope:g}.",
        BETTER_IN_ROPE: f"{variant} is better than the baseline ({held}), but by {delta}, within the ROPE "
                        f"±{v.rope:g}: too small to matter by the experiment's own standard.",
        WORSE_IN_ROPE: f"{variant} is worse than the baseline ({held}), but by {delta}, within the ROPE "
                       f"±{v.rope:g}: too small to matter by the experiment's own standard.",
        EQUIVALENT: f"{variant} and the baseline differ by less than the ROPE ±{v.rope:g} (equivalence p = "
                    f"{v.p_equivalence_adjusted:.3g}" + (", Holm" if v.family > 1 else "") + ").",
        INCONCLUSIVE: f"The data cannot tell {variant} from the baseline: neither a difference ({held}) nor "
                      f"equivalence within ±{v.rope:g} (p = {v.p_equivalence_adjusted:.3g}) is shown; more "
                      "seeds may decide.",
        STOPPED: f"{variant} was stopped early after {v.n_cells} cells: {v.reason}; no further claim is made.",
    }
    return texts[v.label]


def _decide(d, n_train: float, n_test: float, rope: float, alpha: float, p_adjusted: float | None,
            p_equivalence_adjusted: float | None, family: int) -> Verdict:
    test = corrected_t_test(d, n_train, n_test, alpha)
    bayes = bayesian_correlated_t(d, n_train, n_test, rope)
    p_eq = float(equivalence_p(test.mean, test.se, test.df, rope))
    p = test.p if p_adjusted is None else float(p_adjusted)
    q = p_eq if p_equivalence_adjusted is None else float(p_equivalence_adjusted)
    half = special.stdtrit(test.df, 1 - alpha / (2 * max(family, 1))) * test.se
    label = verdict_label(p, q, test.mean, rope, alpha)
    holm_note = " (Holm)" if p_adjusted is not None and family > 1 else ""
    ci_text = f"{100 * (1 - alpha):g}% CI [{test.ci_low:.4g}, {test.ci_high:.4g}]"
    reason = (f"corrected p = {p:.3g}{holm_note} {'<' if p < alpha else '>='} {alpha:g}, mean {test.mean:+.4g}, "
              f"{ci_text}; equivalence p = {q:.3g}{holm_note} {'<' if q < alpha else '>='} {alpha:g} "
              f"for the ROPE ±{rope:g}")
    v = Verdict(label, reason, test.mean, test.ci_low, test.ci_high, test.p, p, rope, alpha, int(np.size(d)),
                bayes.p_better, bayes.p_rope, bayes.p_worse, p_eq, q, float(test.mean - half),
                float(test.mean + half), family)
    return v


def _with_sentence(v: Verdict, variant: str) -> Verdict:
    return dataclasses.replace(v, sentence=verdict_sentence(variant, v))


def verdict(d, n_train: float, n_test: float, rope: float, alpha: float = 0.05,
            p_adjusted: float | None = None, p_equivalence_adjusted: float | None = None,
            family: int = 1, variant: str = "B") -> Verdict:
    """Decide B against A from ``d[seed, fold]`` (positive = B better) with the corrected t-test for a
    difference and its TOST twin for equivalence (``equivalence_p``), both Holm-adjusted when the
    adjusted p-values are given; the label is ``verdict_label``'s. The Bayesian twin's probabilities
    are reported beside the decision, not used by it.
    """
    v = _decide(d, n_train, n_test, rope, alpha, p_adjusted, p_equivalence_adjusted, family)
    return _with_sentence(v, variant)


def stopped_verdict(d_so_far, n_train: float, n_test: float, rope: float, decision, alpha: float = 0.05,
                    variant: str = "B") -> Verdict:
    """The verdict "stopped early" of a variant the early-stop rule stopped, from its cells so far
    ``d_so_far[seed, fold]`` (unadjusted numbers: a stopped variant is not in Holm's family)."""
    v = _decide(d_so_far, n_train, n_test, rope, alpha, None, None, 1)
    v = dataclasses.replace(v, label=STOPPED, reason=decision.reason, family=0)
    return _with_sentence(v, variant)


def verdicts(scores, n_train: float, n_test: float, rope: float, alpha: float = 0.05,
             baseline: int = 0, names: list[str] | None = None) -> dict[int, Verdict]:
    """Verdicts of every variant against ``baseline`` from ``scores[variant, seed, fold]`` (signed so that
    higher = better), with Holm's adjustment over the m = variants − 1 comparisons applied alike to the
    difference p-values and to the equivalence p-values; the interval beside them is also given
    Bonferroni-adjusted (1 − alpha/m). ``names``: the variants' names for the sentences.

    Returns {variant index: Verdict} for each variant other than the baseline ({} when there is none).
    """
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 3 or not 0 <= baseline < scores.shape[0]:
        raise ValueError(f"scores must have shape [variant, seed, fold] with the baseline, got {scores.shape}")
    others = [v for v in range(scores.shape[0]) if v != baseline]
    if not others:  # every variant was stopped early: nothing left to compare
        return {}
    diffs = [scores[v] - scores[baseline] for v in others]
    tests = [corrected_t_test(x, n_train, n_test, alpha) for x in diffs]
    adjusted = holm(np.array([t.p for t in tests]), alpha).p_adjusted
    equivalent = holm(np.array([float(equivalence_p(t.mean, t.se, t.df, rope)) for t in tests]), alpha).p_adjusted
    return {v: verdict(x, n_train, n_test, rope, alpha, p_adjusted=a, p_equivalence_adjusted=q,
                       family=len(others), variant=names[v] if names else f"variant {v}")
            for v, x, a, q in zip(others, diffs, adjusted, equivalent, strict=True)}


@dataclass(frozen=True)
class EarlyStop:
    """Whether to stop a variant now, with its corrected upper confidence bound."""

    stop: bool
    reason: str
    mean: float
    upper_bound: float
    alpha_per_look: float
    seeds_seen: int


def early_stop(d_so_far, n_train: float, n_test: float, rope: float, alpha: float = 0.05,
               min_seeds: int = 3, max_seeds: int = 5) -> EarlyStop:
    """Sequential futility rule: stop a variant whose corrected upper bound is below −rope.

    d_so_far: ``[seeds done, fold]``. Looks happen after each completed seed from ``min_seeds`` to
    ``max_seeds`` (L = max_seeds − min_seeds + 1 looks). At each look the one-sided corrected upper
    bound mean + t_(1 − alpha/L, n−1)·SE is computed; the variant is stopped when it lies below −rope.
    Error control: a variant whose true difference is ≥ −rope is stopped at one look with probability
    ≤ alpha/L (the corrected test's level), so by Bonferroni over the L looks it is wrongly stopped with
    probability ≤ alpha overall, whatever the dependence between looks (conservative: no alpha is
    recycled). Calling it more often than once per seed voids this guarantee.
    """
    if not 2 <= min_seeds <= max_seeds:
        raise ValueError(f"need 2 <= min_seeds <= max_seeds, got {min_seeds} and {max_seeds}")
    x = flat_cells(d_so_far).ravel()
    seeds_seen = int(np.shape(d_so_far)[0])
    if seeds_seen > max_seeds:
        raise ValueError(f"{seeds_seen} seeds seen but looks were planned up to max_seeds = {max_seeds}")
    alpha_look = alpha / (max_seeds - min_seeds + 1)
    se = np.sqrt(x.var(ddof=1) * (1 / x.size + correction_ratio(n_train, n_test)))
    upper = float(x.mean() + special.stdtrit(x.size - 1, 1 - alpha_look) * se)
    if seeds_seen < min_seeds:
        stop, reason = False, f"{seeds_seen} seeds < min_seeds {min_seeds}: no look yet"
    elif upper < -rope:
        stop, reason = True, f"upper bound {upper:.4g} < -rope {-rope:g} (alpha per look {alpha_look:.3g})"
    else:
        stop, reason = False, f"upper bound {upper:.4g} >= -rope {-rope:g}"
    return EarlyStop(stop, reason, float(x.mean()), upper, alpha_look, seeds_seen)
