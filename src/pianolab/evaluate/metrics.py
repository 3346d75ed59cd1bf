"""Primary metrics: plain numpy functions over `(items, dims)` arrays, registered by name.

Every metric has one call signature, `metric(y_true, y_pred, groups=None, **options)`, and returns
a `MetricResult` (overall value, per-dimension values or None, extra details). Inputs are
`(items, dims)` arrays on the 0..1 label scale (a 1-D array is one dimension); `groups` is an
`(items,)` array of excerpt-group ids.

NaN policy: inputs must be finite (a non-finite value raises PianolabError). A correlation whose
column is constant (zero variance in labels or predictions) is undefined: that dimension's value is
NaN, and the overall value is the mean over the defined dimensions (NaN only when none is defined).
No numpy RuntimeWarning is emitted. R2 follows scikit-learn exactly (see `r2`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

from pianolab.errors import PianolabError
from pianolab.registry import Registry


@dataclass(frozen=True)
class MetricResult:
    """One metric's outcome: `value` (float), `per_dim` ((dims,) or None), `details` (extras)."""

    value: float
    per_dim: np.ndarray | None = None
    higher_is_better: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN kept as float('nan'))."""
        return {
            "value": float(self.value),
            "per_dim": None if self.per_dim is None else [float(v) for v in self.per_dim],
            "higher_is_better": self.higher_is_better,
        }


@dataclass(frozen=True)
class Metric:
    """A registered metric: the function plus what it needs and which direction is better."""

    name: str
    fn: Callable[..., MetricResult]
    higher_is_better: bool = True
    needs_groups: bool = False

    def __call__(self, y_true, y_pred, groups=None, **options) -> MetricResult:
        yt, yp = check_arrays(y_true, y_pred)
        if groups is None and self.needs_groups:
            raise PianolabError(f"metric {self.name!r} needs groups (excerpt-group ids per item)")
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != (len(yt),):
                raise PianolabError(f"metric {self.name!r}: groups must have shape ({len(yt)},)")
        res = self.fn(yt, yp, groups, **options)
        return MetricResult(res.value, res.per_dim, self.higher_is_better, res.details)


METRICS: Registry[Metric] = Registry("metric")


def metric(name: str | None = None, higher_is_better: bool = True, needs_groups: bool = False):
    """Decorator: register `fn(y_true, y_pred, groups, **options) -> MetricResult` as a Metric."""

    def deco(fn: Callable[..., MetricResult]) -> Metric:
        key = name or fn.__name__
        return METRICS.add(key, Metric(key, fn, higher_is_better, needs_groups))

    return deco


def check_arrays(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 `(items, dims)` arrays of one shape, finite; 1-D becomes `(items, 1)`."""
    yt, yp = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    yt = yt[:, None] if yt.ndim == 1 else yt
    yp = yp[:, None] if yp.ndim == 1 else yp
    if yt.ndim != 2 or yt.shape != yp.shape:
        raise PianolabError(f"y_true {yt.shape} and y_pred {yp.shape} must be equal (items, dims) arrays")
    if not (np.isfinite(yt).all() and np.isfinite(yp).all()):
        raise PianolabError("y_true and y_pred must be finite (found NaN or inf)")
    return yt, yp


def nanmean(x: np.ndarray) -> float:
    """Mean over finite entries; NaN (without a warning) when there are none."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def pearson_cols(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(dims,) Pearson r per column of two `(items, dims)` arrays; NaN where a column is constant."""
    ac, bc = a - a.mean(axis=0), b - b.mean(axis=0)
    ssa, ssb = (ac**2).sum(axis=0), (bc**2).sum(axis=0)
    # A column counts as constant when its spread is at rounding level relative to its magnitude.
    tiny = lambda x: len(x) * (1e-10 * (np.abs(x).max(axis=0) + 1e-300)) ** 2
    ok = (ssa > tiny(a)) & (ssb > tiny(b))
    out = np.full(a.shape[1], np.nan)
    out[ok] = np.clip((ac * bc).sum(axis=0)[ok] / np.sqrt(ssa[ok] * ssb[ok]), -1.0, 1.0)
    return out


def demean_by_group(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """`x` minus each group's column means; same shape as `x` ((items, dims))."""
    _, inv = np.unique(groups, return_inverse=True)
    counts = np.bincount(inv)
    sums = np.zeros((len(counts), x.shape[1]))
    np.add.at(sums, inv, x)
    return x - (sums / counts[:, None])[inv]


def _corr_result(per_dim: np.ndarray, **details) -> MetricResult:
    return MetricResult(nanmean(per_dim), per_dim, details=details)


@metric("pearson")
def pearson(y_true, y_pred, groups=None) -> MetricResult:
    """Pearson r per dimension; value = mean over dimensions."""
    return _corr_result(pearson_cols(y_true, y_pred))


@metric("spearman")
def spearman(y_true, y_pred, groups=None) -> MetricResult:
    """Spearman rho per dimension (Pearson of average ranks); value = mean over dimensions."""
    return _corr_result(pearson_cols(rankdata(y_true, axis=0), rankdata(y_pred, axis=0)))


@metric("mse", higher_is_better=False)
def mse(y_true, y_pred, groups=None) -> MetricResult:
    """Mean squared error per dimension; value = mean over dimensions."""
    per = ((y_true - y_pred) ** 2).mean(axis=0)
    return MetricResult(float(per.mean()), per)


@metric("mae", higher_is_better=False)
def mae(y_true, y_pred, groups=None) -> MetricResult:
    """Mean absolute error per dimension; value = mean over dimensions."""
    per = np.abs(y_true - y_pred).mean(axis=0)
    return MetricResult(float(per.mean()), per)


@metric("r2")
def r2(y_true, y_pred, groups=None) -> MetricResult:
    """Coefficient of determination per dimension, uniform average (scikit-learn's `r2_score`).

    As in scikit-learn (`force_finite=True`), a dimension whose labels are constant scores 1.0 when
    predicted exactly and 0.0 otherwise.
    """
    ss_res = ((y_true - y_pred) ** 2).sum(axis=0)
    ss_tot = ((y_true - y_true.mean(axis=0)) ** 2).sum(axis=0)
    per = np.where(ss_res == 0, 1.0, 0.0)
    ok = ss_tot > 0
    per[ok] = 1.0 - ss_res[ok] / ss_tot[ok]
    return MetricResult(float(per.mean()), per)


@metric("within_excerpt_pearson", needs_groups=True)
def within_excerpt_pearson(y_true, y_pred, groups) -> MetricResult:
    """Pearson r per dimension after subtracting each excerpt group's mean of labels and of
    predictions: how well different performances of the same music are told apart.
    Singleton groups become all-zero rows and so contribute nothing."""
    return _corr_result(pearson_cols(demean_by_group(y_true, groups), demean_by_group(y_pred, groups)))


@metric("pooled_z_pearson")
def pooled_z_pearson(y_true, y_pred, groups=None, scale: str = "labels") -> MetricResult:
    """The seed document's figure: ONE Pearson r pooled over all items x dims of z-scored values.

    `scale="labels"` (default) z-scores labels and predictions with the labels' per-dimension mean
    and std (the space of a model trained on z-scored labels); `scale="own"` z-scores each array with
    its own statistics. Constant columns map to 0. Not comparable with the per-dimension mean r:
    pooling rewards getting each dimension's spread right. `per_dim` is None.
    """
    def z(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
        sd = ref.std(axis=0)
        return np.where(sd > 0, (x - ref.mean(axis=0)) / np.where(sd > 0, sd, 1.0), 0.0)

    if scale not in ("labels", "own"):
        raise PianolabError(f"pooled_z_pearson: scale must be 'labels' or 'own', not {scale!r}")
    zt = z(y_true, y_true)
    zp = z(y_pred, y_true if scale == "labels" else y_pred)
    r = pearson_cols(zt.reshape(-1, 1), zp.reshape(-1, 1))[0]
    return MetricResult(float(r), None, details={"scale": scale})


def compute_metrics(
    names: Iterable[str],
    y_true,
    y_pred,
    groups=None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, MetricResult]:
    """Run each named metric; `options[name]` holds that metric's keyword options.

    Returns {name: MetricResult}. Unknown names raise a PianolabError listing the valid ones.
    """
    names, options = list(names), options or {}
    unknown = set(options) - set(names)
    if unknown:
        raise PianolabError(f"options given for metrics not requested: {sorted(unknown)}")
    return {n: METRICS.get(n)(y_true, y_pred, groups, **options.get(n, {})) for n in names}
