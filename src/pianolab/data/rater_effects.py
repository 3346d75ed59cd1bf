"""The raters, not only their mean: rater-effects targets and rater-precision sample weights.

A rater-effects model explains each rating of item i by rater u, per dimension, as
`rating = offset_u + scale_u * effect_i + noise` with noise variance `sigma_u^2` (the rater's
reliability is 1 / sigma_u^2), fitted by alternating weighted least squares on the 1-7 scale;
`effect_i / 7` replaces the mean label as item i's training target. Offsets shrink toward 0 and
scales toward 1 (ridge pseudo-ratings), variances toward the pooled variance, so a rater seen on few
items moves little. The effects are anchored to the raw item means (same mean, and for the full
model the same spread), so they live on the labels' scale.

`TARGETS` (config `data.targets`): `mean` (the official labels), `rater_offsets` (offsets only, equal
reliabilities) and `rater_effects` (offsets, scales and reliabilities). `SAMPLE_WEIGHTS` (config
`train.sample_weights`): `none`, `rater_precision` (the inverse variance of each item's mean rating).
Every function takes the items it may read (the training fold): ratings of other items are never used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pianolab.data.percepiano import N_DIMS, Dataset
from pianolab.data.ratings import Ratings, load_ratings
from pianolab.registry import Registry

SCALE = 7.0  # ratings are 1..7; labels are rating / 7
DIMS = [f"d{i}" for i in range(N_DIMS)]


@dataclass(frozen=True)
class RaterModel:
    """Options of the alternating least squares (pseudo-ratings of the shrinkage priors)."""

    scales: bool = True  # fit a scale per rater (else 1)
    reliabilities: bool = True  # weight raters by 1 / their residual variance (else equal)
    offset_prior: float = 2.0  # pseudo-ratings at offset 0
    scale_prior: float = 10.0  # pseudo-ratings at scale 1
    variance_prior: float = 5.0  # pseudo-ratings at the pooled residual variance
    iterations: int = 30


@dataclass
class RaterFit:
    """A fitted rater-effects model. effects: (items, 19) on 1..7 (NaN where an item has no rating of
    a dimension); offsets, scales, variances: (raters, 19); n_ratings: (raters, 19)."""

    stems: list[str]
    raters: list[str]
    effects: np.ndarray
    offsets: np.ndarray
    scales: np.ndarray
    variances: np.ndarray
    n_ratings: np.ndarray


def _long(ratings: Ratings, stems: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(item index, rater index, values (n, 19) with NaN, rater names) of the ratings of `stems` only."""
    pos = {s: i for i, s in enumerate(stems)}
    t = ratings.table[ratings.table["stem"].isin(pos)]
    raters = sorted(t["user"].astype(str).unique())
    rpos = {u: k for k, u in enumerate(raters)}
    item = t["stem"].map(pos).to_numpy(int)
    rater = t["user"].astype(str).map(rpos).to_numpy(int)
    return item, rater, t[DIMS].to_numpy(float), raters


def _sums(index: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    out = np.zeros((n, values.shape[1]))
    np.add.at(out, index, values)
    return out


def fit_rater_model(ratings: Ratings, stems: list[str], model: RaterModel = RaterModel()) -> RaterFit:
    """Fit the rater-effects model on the ratings of `stems` (and no other item)."""
    item, rater, r, raters = _long(ratings, stems)
    n_items, n_raters = len(stems), len(raters)
    m = ~np.isnan(r)
    r0 = np.where(m, r, 0.0)
    mf = m.astype(float)
    n_item = _sums(item, n_items, mf)
    n_rater = _sums(rater, n_raters, mf)
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = _sums(item, n_items, r0) / n_item  # plain item means (the anchor)
    rated = n_item > 0
    anchor_mean = np.array([raw[rated[:, d], d].mean() for d in range(N_DIMS)])
    anchor_std = np.array([raw[rated[:, d], d].std() for d in range(N_DIMS)])
    theta = np.where(rated, raw, 0.0)
    std = anchor_std if model.scales else None
    off, scale = np.zeros((n_raters, N_DIMS)), np.ones((n_raters, N_DIMS))
    var = np.ones((n_raters, N_DIMS))
    for _ in range(model.iterations):
        off, scale = _rater_step(model, r0, mf, item, rater, theta, n_raters)
        if model.reliabilities:
            var = _variance_step(model, r0, mf, item, rater, _loo(theta, r0, mf, item, rater, off, scale, var,
                                                                  n_items, rated, anchor_mean, std),
                                 off, scale, n_raters)
        theta = _item_step(r0, mf, item, rater, off, scale, var, n_items, rated, anchor_mean, std)[0]
    off, scale = _rater_step(model, r0, mf, item, rater, theta, n_raters)  # on the final effects
    return RaterFit(list(stems), raters, np.where(rated, theta, np.nan), off, scale, var, n_rater)


def _item_step(r0, mf, item, rater, off, scale, var, n_items, rated, mean, std):
    """Item effects: per item and dimension the reliability-weighted least squares of its raters'
    de-biased ratings, anchored to the raw item means (returns the effects, the weighted sums and
    the anchor's affine map a * raw + c)."""
    ws = (scale / var)[rater] * mf
    num = _sums(item, n_items, ws * (r0 - off[rater]))
    den = _sums(item, n_items, ws * scale[rater])
    raw = np.where(rated, num / np.where(den > 0, den, 1.0), 0.0)
    a, c = _anchor(raw, rated, mean, std)
    return np.where(rated, a * raw + c, 0.0), num, den, a, c


def _loo(theta, r0, mf, item, rater, off, scale, var, n_items, rated, mean, std):
    """(ratings, 19): each rating's item effect without that rating (leave-one-rating-out), so a
    rater's residual variance is not shrunk by its own pull on the items (no self-fulfilling weights)."""
    _, num, den, a, c = _item_step(r0, mf, item, rater, off, scale, var, n_items, rated, mean, std)
    ws = (scale / var)[rater] * mf
    num_o, den_o = num[item] - ws * (r0 - off[rater]), den[item] - ws * scale[rater]
    ok = den_o > 1e-9
    return np.where(ok, a * np.where(ok, num_o / np.where(ok, den_o, 1.0), 0.0) + c, theta[item])


def _anchor(raw: np.ndarray, rated: np.ndarray, mean: np.ndarray, std: np.ndarray | None):
    """(a, c) per dimension: `a * raw + c` has the raw item means' mean (and, with `std`, their sd)."""
    a, c = np.ones(N_DIMS), np.zeros(N_DIMS)
    for d in range(N_DIMS):
        col = raw[rated[:, d], d]
        if std is not None and col.std() > 0:
            a[d] = std[d] / col.std()
        c[d] = mean[d] - a[d] * col.mean()
    return a, c


def _rater_step(model, r0, mf, item, rater, theta, n_raters):
    """Per rater and dimension: ridge least squares of its ratings on the item effects,
    offset shrunk toward 0, scale toward 1 (scale fixed at 1 without `model.scales`)."""
    t = theta[item] * mf
    n = _sums(rater, n_raters, mf)
    st, sr = _sums(rater, n_raters, t), _sums(rater, n_raters, r0)
    if not model.scales:
        return (sr - st) / (n + model.offset_prior), np.ones_like(n)
    stt, srt = _sums(rater, n_raters, t * t), _sums(rater, n_raters, r0 * t)
    # normal equations of min sum (r - b - s t)^2 + lb b^2 + ls (s - 1)^2
    a11, a12, a22 = n + model.offset_prior, st, stt + model.scale_prior
    b1, b2 = sr, srt + model.scale_prior
    det = a11 * a22 - a12 * a12
    off = (a22 * b1 - a12 * b2) / det
    scale = np.clip((a11 * b2 - a12 * b1) / det, 0.1, 10.0)
    return off, scale


def _variance_step(model, r0, mf, item, rater, theta_r, off, scale, n_raters):
    """Per rater and dimension: residual variance (against `theta_r`, each rating's leave-one-out item
    effect) shrunk toward the pooled one."""
    res = (r0 - off[rater] - scale[rater] * theta_r) * mf
    ss, n = _sums(rater, n_raters, res * res), _sums(rater, n_raters, mf)
    pooled = ss.sum(0) / np.maximum(n.sum(0), 1.0)
    return np.maximum((ss + model.variance_prior * pooled) / (n + model.variance_prior), 1e-3)


def rater_targets(dataset: Dataset, ratings: Ratings, idx: np.ndarray, model: RaterModel) -> np.ndarray:
    """(len(idx), 19) targets on 0..1 of the items `idx`: their estimated effects / 7, from a model
    fitted on the ratings of those items only; the official label where an item has no rating."""
    stems = [dataset.items[i].stem for i in idx]
    fit = fit_rater_model(ratings, stems, model)
    y = dataset.labels[idx]
    return np.where(np.isnan(fit.effects), y, fit.effects / SCALE)


def rater_precision(dataset: Dataset, ratings: Ratings, idx: np.ndarray, prior: float = 4.0) -> np.ndarray:
    """(len(idx),) sample weights, mean 1: the inverse variance of each item's mean rating,
    `n_i / mean_d(s2_id / pooled_d)`, with each item's rater variance s2_id shrunk toward the pooled
    within-item variance of its dimension by `prior` pseudo-ratings (4 raters may agree by chance)."""
    stems = [dataset.items[i].stem for i in idx]
    item, _, r, _ = _long(ratings, stems)
    m = ~np.isnan(r)
    r0, mf = np.where(m, r, 0.0), m.astype(float)
    n = _sums(item, len(stems), mf)
    s1, s2 = _sums(item, len(stems), r0), _sums(item, len(stems), r0 * r0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ss = np.where(n > 0, s2 - s1 * s1 / np.where(n > 0, n, 1), 0.0)  # within-item sum of squares
    pooled = ss.sum(0) / np.maximum((n - 1).clip(0).sum(0), 1.0)
    s2_item = (ss + prior * pooled) / ((n - 1).clip(0) + prior)
    var_mean = np.mean(s2_item / np.maximum(n, 1.0) / pooled, axis=1)  # relative variance of the mean
    w = 1.0 / var_mean
    return w / w.mean()


# Name -> (dataset, ratings, training item indices) -> (n, 19) targets on 0..1 (None: the labels)
TARGETS: Registry[Callable[[Dataset, Ratings, np.ndarray], np.ndarray | None]] = Registry("target kind")
TARGETS.add("mean", lambda dataset, ratings, idx: None)
TARGETS.add("rater_offsets", lambda dataset, ratings, idx: rater_targets(
    dataset, ratings, idx, RaterModel(scales=False, reliabilities=False)))
TARGETS.add("rater_effects", lambda dataset, ratings, idx: rater_targets(dataset, ratings, idx, RaterModel()))

# Name -> (dataset, ratings, training item indices) -> (n,) weights (None: unweighted)
SAMPLE_WEIGHTS: Registry[Callable[[Dataset, Ratings, np.ndarray], np.ndarray | None]] = Registry("sample weighting")
SAMPLE_WEIGHTS.add("none", lambda dataset, ratings, idx: None)
SAMPLE_WEIGHTS.add("rater_precision", rater_precision)


def training_targets(kind: str, dataset: Dataset, idx: np.ndarray) -> np.ndarray:
    """(len(idx), 19) training targets of the items `idx` (the training fold) by `kind`."""
    make = TARGETS.get(kind)
    if kind == "mean":
        return dataset.labels[idx]
    return make(dataset, load_ratings(dataset.root), np.asarray(idx, dtype=int))


def training_weights(kind: str, dataset: Dataset, idx: np.ndarray) -> np.ndarray | None:
    """(len(idx),) sample weights of the items `idx` (the training fold) by `kind`; None for `none`."""
    make = SAMPLE_WEIGHTS.get(kind)
    if kind == "none":
        return None
    return make(dataset, load_ratings(dataset.root), np.asarray(idx, dtype=int))
