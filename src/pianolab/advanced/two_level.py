"""`model.name: two_level`: the excerpt's level and the performance's place among its peers, apart.

Most of the variance of the 19 ratings lies between excerpts, so one model of the raw ratings mostly
learns an excerpt's level. `TwoLevel` fits two registered estimators instead and predicts their sum:
- `between`, the excerpt's level, as `between_features` (`BETWEEN`) says: `group_mean` (default), a
  model of the mean target of each training row's excerpt group (one row per performance, so groups
  weigh as many rows as they hold, as in the metrics) from the group-mean features, one value per
  excerpt; `raw`, the same targets from the performance's own features (the between part then varies
  inside an excerpt too); `plain_mean`, a plain model of the raw targets from the raw features of every
  training row, the level of a row being the mean of its predictions over the rows of the row's excerpt
  (and the within part centred on that excerpt, so the excerpt's mean prediction is the plain model's);
  `between: null` leaves it out: the between part is the training mean (the within part alone);
- `within`, on the targets minus their group mean, from the group-centred (`peer:`) features
  (`within_features: peer`, default) or the whole `[raw, peer]` vector (`all`) (`WITHIN_INPUTS`).

It reads the vector `features.peer_centred` builds, `[raw (D), peer (D)]` after the run's scaling,
and needs each row's group only in `fit` (the run passes the training rows' excerpts): the group means
of new rows are their raw minus their peer columns, in scaled units `raw - r * peer` with `r` (per
column, the ratio of the two columns' scales) read from the training groups, where a row's deviation
from its group mean is exactly `r` times its peer column (median over rows, so rows with a missing
feature do not count). So in excerpt-group CV a test excerpt's between part comes from its own
features' mean and its within part from its centred features; no test target is read. `plain_mean`
also needs which new rows share an excerpt: the rows whose group-mean vectors agree (`same_excerpt`),
which are the rows the peer columns were centred over (in a run the test fold's excerpts, in `predict`
the manifest's groups or the PercePiano names). `features.top_k` and `features.stack` would break the
two halves and are refused, as is a config without `features.peer_centred` (`refusal`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone

from pianolab.advanced.ensembles import COMPOSITES, Make, fit_grouped
from pianolab.errors import PianolabError
from pianolab.registry import Registry


def group_means(a: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(n, k): each row replaced by the mean of its group's rows."""
    _, inv = np.unique(groups, return_inverse=True)
    sums = np.zeros((inv.max() + 1, a.shape[1]))
    np.add.at(sums, inv, a)
    return (sums / np.bincount(inv)[:, None])[inv]


def peer_ratio(raw: np.ndarray, peer: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(D,): per column, the factor r with `raw - group mean(raw) = r * (peer - group mean(peer))`
    (median over the rows that deviate; 0 for a column constant within every group)."""
    d_raw, d_peer = raw - group_means(raw, groups), peer - group_means(peer, groups)
    moving = np.abs(d_peer) > 1e-4
    ratio = np.where(moving, d_raw / np.where(moving, d_peer, 1.0), np.nan)
    out = np.zeros(raw.shape[1])
    cols = moving.any(axis=0)
    out[cols] = np.nanmedian(ratio[:, cols], axis=0)
    return out


def same_excerpt(keys: np.ndarray, tol: float = 1e-4, agree: float = 0.5) -> np.ndarray:
    """(n,) int: which rows share an excerpt, from their group-mean vectors `keys` (n, D): a row joins
    the first earlier group whose first row's key is within `tol` of its own on at least an `agree`
    fraction of the columns (not all: a value clipped or imputed by the scaler, or a column whose
    training ratio misses, moves one column of one row), else starts a group. On the bundled data the
    rows of one excerpt agree on >= 86% of the columns, rows of two excerpts on <= 9%."""
    out, firsts = np.empty(len(keys), dtype=int), []
    for i, key in enumerate(keys):
        match = np.flatnonzero((np.abs(keys[firsts] - key) <= tol).mean(axis=1) >= agree)
        if not len(match):
            firsts.append(i)
        out[i] = match[0] if len(match) else len(firsts) - 1
    return out


@dataclass(frozen=True)
class Between:
    """How the between part is made: its inputs from (fitted TwoLevel, X), and `plain`: fitted on the raw
    targets, its predictions averaged over each excerpt's rows (else fitted on the group-mean targets)."""

    inputs: Callable[[TwoLevel, np.ndarray], np.ndarray]
    plain: bool = False


BETWEEN: Registry[Between] = Registry("between_features")
BETWEEN.add("group_mean", Between(lambda est, X: est.group_features(X)))
BETWEEN.add("raw", Between(lambda est, X: est.halves(X)[0]))
BETWEEN.add("plain_mean", Between(lambda est, X: est.halves(X)[0], plain=True))
WITHIN_INPUTS: Registry = Registry("within_features")  # name -> (fitted TwoLevel, X) -> the within inputs
WITHIN_INPUTS.add("peer", lambda est, X: est.halves(X)[1])
WITHIN_INPUTS.add("all", lambda est, X: np.asarray(X, dtype=float))


class TwoLevel(RegressorMixin, BaseEstimator):
    """between(`between_features`) + within(`within_features`) on inputs `[raw (D), peer (D)]`; see the
    module docstring. `between` None: the between part is the training mean."""

    takes_groups = True

    def __init__(self, between: BaseEstimator | None, within: BaseEstimator, between_features: str = "group_mean",
                 within_features: str = "peer"):
        self.between, self.within = between, within
        self.between_features, self.within_features = between_features, within_features

    def halves(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(raw (n, D), peer (n, D)) of inputs (n, 2D)."""
        X = np.asarray(X, dtype=float)
        if X.shape[1] % 2:
            raise PianolabError(f"two_level reads [raw, peer] vectors (features.peer_centred), got {X.shape[1]} "
                                "columns, an odd number")
        d = X.shape[1] // 2
        return X[:, :d], X[:, d:]

    def group_features(self, X) -> np.ndarray:
        """(n, D): the group-mean features of each row, from its raw and peer columns."""
        raw, peer = self.halves(X)
        return raw - self.ratio_ * peer

    def excerpts(self, X) -> np.ndarray:
        """(n,) int: which rows of `X` share an excerpt (`same_excerpt` on their group-mean features)."""
        return same_excerpt(self.group_features(X))

    def fit(self, X, y, groups=None) -> TwoLevel:
        if groups is None:
            raise PianolabError("two_level needs the excerpt group of every training row")
        raw, peer = self.halves(X)
        y, groups = np.asarray(y, dtype=float), np.asarray(groups)
        level = group_means(y.reshape(len(y), -1), groups).reshape(y.shape)
        self.ratio_ = peer_ratio(raw, peer, groups)
        self.mean_ = level.mean(axis=0)
        mode = BETWEEN.get(self.between_features)
        self.between_ = None if self.between is None else \
            fit_grouped(clone(self.between), mode.inputs(self, X), y if mode.plain else level, groups)
        self.within_ = fit_grouped(clone(self.within), WITHIN_INPUTS.get(self.within_features)(self, X), y - level,
                                   groups)
        return self

    def predict(self, X) -> np.ndarray:
        n = len(X)
        within = np.asarray(self.within_.predict(WITHIN_INPUTS.get(self.within_features)(self, X))).reshape(n, -1)
        if self.between_ is None:
            return within + self.mean_.reshape(1, -1)
        mode = BETWEEN.get(self.between_features)
        between = np.asarray(self.between_.predict(mode.inputs(self, X))).reshape(n, -1)
        if not mode.plain:
            return between + within
        rows = self.excerpts(X)
        return group_means(between, rows) + within - group_means(within, rows)


def two_level(seed: int, make: Make, between: str | None = "ensemble_gb_et", within: str = "ensemble_gb_et",
              between_params: dict | None = None, within_params: dict | None = None,
              between_features: str | None = None, within_features: str = "peer") -> TwoLevel:
    """Registered `between` and `within` estimators (see `TwoLevel`); `between: null` for the within part
    alone."""
    if between is None:
        for key, value in (("between_params", between_params), ("between_features", between_features)):
            if value is not None:
                raise PianolabError(f"{key} has no effect: between is null (the between part is the training mean)")
    BETWEEN.get(between_features or "group_mean")
    WITHIN_INPUTS.get(within_features)
    return TwoLevel(None if between is None else make(between, seed, between_params or {}),
                    make(within, seed, within_params or {}), between_features or "group_mean", within_features)


def refusal(model: str, peer_centred: bool, top_k: int | None, stack: str | None) -> str | None:
    """Why a run config cannot use `two_level` (as model `model` or as `features.stack`), or None."""
    if stack == "two_level":
        return "features.stack: two_level needs excerpt groups, which the stacked estimator is not given"
    if model != "two_level":
        return None
    if not peer_centred:
        return "model 'two_level' needs features.peer_centred: true (its within part reads the peer: columns)"
    if top_k:
        return "model 'two_level' does not combine with features.top_k (it reads whole [raw, peer] halves)"
    if stack:
        return "model 'two_level' does not combine with features.stack (it reads whole [raw, peer] halves)"
    return None


COMPOSITES.add("two_level", two_level)
