"""Ensembles of multi-output regressors (plan E1): averaging, bagging, stacking, residual boosting.

- `MeanEnsemble`: the (weighted) mean of its members, each fitted on the same data (scikit-learn's
  VotingRegressor is single-output). Bagging (`ensemble.bagging: N`, `bagged`) is a mean ensemble of
  one estimator under N seeds (`seed + BAG_STRIDE * i`).
- `StackedEnsemble`: a meta-learner (`META`: `ridge`, or `blend`, non-negative weights summing to 1)
  fitted on nested out-of-fold predictions of its members: inside `fit`'s data (the training fold),
  each member is fitted K times without one group of excerpts and predicts that group, so no meta
  input of an item comes from a member that saw it; the members are then refitted on all of it.
- `ResidualBooster`: a second model fitted on the residuals of the first model's out-of-fold
  predictions (boosting across models); predicts the sum of both.

`COMPOSITES` registers them by name (`stacking`, `cross_family`, `residual_boost`) as builders
`(seed, make, **params)`, with `make(name, seed, params)` building a registered estimator
(`models.classic` passes it: this package imports no model module). Every class takes `groups`
(each row's excerpt) in `fit`; without them the inner folds are plain shuffled K-fold.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone

from pianolab.errors import PianolabError
from pianolab.registry import Registry

BAG_STRIDE = 1000  # bagging member i of a run with seed s uses seed s + BAG_STRIDE * i


def member_seeds(seed: int, n: int) -> list[int]:
    """The seeds of the N members of a bagged model of seed `seed`."""
    return [seed + BAG_STRIDE * i for i in range(n)]


def fit_grouped(est, X, y, groups=None, sample_weight=None):
    """`est.fit(X, y)`, passing `groups` to estimators that take them (this module's ensembles) and
    `sample_weight` (per row) when given (see `accepts_sample_weight`)."""
    kw = {} if sample_weight is None else {"sample_weight": sample_weight}
    if groups is not None and getattr(est, "takes_groups", False):
        return est.fit(X, y, groups=groups, **kw)
    return est.fit(X, y, **kw)


def accepts_sample_weight(est) -> bool:
    """Whether `est.fit` takes per-row `sample_weight` (a mean ensemble: when every member does; a
    MultiOutputRegressor: when its estimator does)."""
    import inspect

    from sklearn.multioutput import MultiOutputRegressor

    if isinstance(est, MeanEnsemble):
        return all(accepts_sample_weight(m) for m in est.members)
    if isinstance(est, MultiOutputRegressor):
        return accepts_sample_weight(est.estimator)
    return "sample_weight" in inspect.signature(est.fit).parameters


def inner_folds(n: int, groups, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit rows, held-out rows) of K inner folds over n rows: by group (GroupKFold) when given, else
    shuffled K-fold seeded with `seed`."""
    from sklearn.model_selection import GroupKFold, KFold

    if groups is None:
        return list(KFold(n_splits=min(folds, n), shuffle=True, random_state=seed).split(np.zeros(n)))
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise PianolabError(f"inner folds need training items of at least 2 excerpts, got {n_groups}")
    return list(GroupKFold(n_splits=min(folds, n_groups)).split(np.zeros(n), groups=groups))


def out_of_fold(est, X, y, groups, folds: int, seed: int) -> np.ndarray:
    """(n, k): each row predicted by a clone of `est` fitted on the inner folds that do not hold it."""
    X, y = np.asarray(X), np.asarray(y)
    oof = np.zeros((len(X), y.reshape(len(y), -1).shape[1]))
    for fit_rows, held in inner_folds(len(X), groups, folds, seed):
        sub = None if groups is None else np.asarray(groups)[fit_rows]
        model = fit_grouped(clone(est), X[fit_rows], y[fit_rows], sub)
        oof[held] = np.asarray(model.predict(X[held])).reshape(len(held), -1)
    return oof


def _predict(est, X) -> np.ndarray:
    return np.asarray(est.predict(X)).reshape(len(X), -1)


class MeanEnsemble(RegressorMixin, BaseEstimator):
    """Fits every member on the same data; predicts the (weighted) mean of their predictions.

    members: list of unfitted regressors, each mapping X (n, d) to Y (n, k); weights: one per member
    (default equal).
    """

    takes_groups = True

    def __init__(self, members: list, weights: list[float] | None = None):
        self.members = members
        self.weights = weights

    def fit(self, X, y, groups=None, sample_weight=None) -> MeanEnsemble:
        self.fitted_ = [fit_grouped(clone(m), X, y, groups, sample_weight) for m in self.members]
        return self

    def predict(self, X) -> np.ndarray:
        preds = np.stack([_predict(m, X) for m in self.fitted_])
        w = np.ones(len(preds)) if self.weights is None else np.asarray(self.weights, dtype=float)
        return np.tensordot(w / w.sum(), preds, axes=1)


def bagged(make: Callable[[int], BaseEstimator], seed: int, n: int) -> BaseEstimator:
    """The mean of `make(s)` over the N member seeds of `seed` (one estimator when n == 1)."""
    return make(seed) if n == 1 else MeanEnsemble([make(s) for s in member_seeds(seed, n)])


class NonNegativeBlend(RegressorMixin, BaseEstimator):
    """Meta-learner: one non-negative weight per member (summing to 1), least squares over every
    dimension. Input P (n, M * k): the k predictions of each of M members side by side."""

    def fit(self, P, y) -> NonNegativeBlend:
        from scipy.optimize import nnls

        P, y = np.asarray(P, dtype=float), np.asarray(y, dtype=float).reshape(len(P), -1)
        n, k = y.shape
        m = P.shape[1] // k
        A = P.reshape(n, m, k).transpose(0, 2, 1).reshape(n * k, m)
        w, _ = nnls(A, y.reshape(-1))
        self.weights_ = w / w.sum() if w.sum() > 0 else np.full(m, 1.0 / m)
        return self

    def predict(self, P) -> np.ndarray:
        P = np.asarray(P, dtype=float)
        m = len(self.weights_)
        return np.tensordot(P.reshape(len(P), m, -1), self.weights_, axes=([1], [0]))


def _ridge_meta() -> BaseEstimator:
    from sklearn.linear_model import RidgeCV

    # RidgeCV's efficient leave-one-out is over rows of the training fold only
    return RidgeCV(alphas=np.logspace(-2, 3, 11), alpha_per_target=True)


META: Registry[Callable[[], BaseEstimator]] = Registry("meta-learner")
META.add("ridge", _ridge_meta)  # every member's 19 predictions -> each dimension (alpha per dimension)
META.add("blend", NonNegativeBlend)  # a weighted mean of the members, weights fitted out of fold


class StackedEnsemble(RegressorMixin, BaseEstimator):
    """Members fitted on all rows; a meta-learner on their nested out-of-fold predictions (see the
    module docstring). `folds`: inner folds (by group) inside `fit`'s data."""

    takes_groups = True

    def __init__(self, members: list, meta: BaseEstimator, folds: int = 4, seed: int = 0):
        self.members, self.meta, self.folds, self.seed = members, meta, folds, seed

    def meta_inputs(self, X, y, groups=None) -> np.ndarray:
        """(n, M * k): the meta-learner's training inputs, each row from members that never saw it."""
        return np.hstack([out_of_fold(m, X, y, groups, self.folds, self.seed) for m in self.members])

    def fit(self, X, y, groups=None) -> StackedEnsemble:
        self.meta_ = clone(self.meta).fit(self.meta_inputs(X, y, groups), y)
        self.fitted_ = [fit_grouped(clone(m), X, y, groups) for m in self.members]
        return self

    def predict(self, X) -> np.ndarray:
        return _predict(self.meta_, np.hstack([_predict(m, X) for m in self.fitted_]))


class ResidualBooster(RegressorMixin, BaseEstimator):
    """`first` fitted on y; `second` fitted on y minus `first`'s out-of-fold predictions (inner folds
    by group, so the residuals are those of unseen items); predicts first + second."""

    takes_groups = True

    def __init__(self, first: BaseEstimator, second: BaseEstimator, folds: int = 4, seed: int = 0):
        self.first, self.second, self.folds, self.seed = first, second, folds, seed

    def residuals(self, X, y, groups=None) -> np.ndarray:
        """The second stage's targets: y minus the first model's out-of-fold predictions."""
        y = np.asarray(y, dtype=float)
        return y - out_of_fold(self.first, X, y, groups, self.folds, self.seed).reshape(y.shape)

    def fit(self, X, y, groups=None) -> ResidualBooster:
        self.second_ = fit_grouped(clone(self.second), X, self.residuals(X, y, groups), groups)
        self.first_ = fit_grouped(clone(self.first), X, y, groups)
        return self

    def predict(self, X) -> np.ndarray:
        return _predict(self.first_, X) + _predict(self.second_, X)


Make = Callable[[str, int, dict], BaseEstimator]  # (registered estimator name, seed, its params)


def _members(make: Make, seed: int, names, params: dict | None) -> list:
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise PianolabError("an ensemble needs at least one member")
    unknown = sorted(set(params or {}) - set(names))
    if unknown:
        raise PianolabError(f"member_params names {', '.join(unknown)}, not members ({', '.join(names)})")
    return [make(n, seed, (params or {}).get(n, {})) for n in names]


def _check_folds(folds) -> None:
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise PianolabError(f"folds (inner folds of the training fold) must be an integer >= 2, got {folds!r}")


def stacking(seed: int, make: Make, members=("gradient_boosting", "extra_trees"), meta: str = "ridge",
             folds: int = 4, member_params: dict | None = None) -> StackedEnsemble:
    """Registered members under a meta-learner (`META`) fitted on their nested out-of-fold predictions."""
    _check_folds(folds)
    return StackedEnsemble(_members(make, seed, members, member_params), META.get(meta)(), folds, seed)


def cross_family(seed: int, make: Make, members=("gradient_boosting", "extra_trees", "mlp"),
                 folds: int = 4, member_params: dict | None = None) -> StackedEnsemble:
    """Trees and an MLP averaged with non-negative weights fitted on inner folds of the training fold."""
    return stacking(seed, make, members, "blend", folds, member_params)


def residual_boost(seed: int, make: Make, first: str = "ensemble_gb_et", second: str = "ridge", folds: int = 4,
                   first_params: dict | None = None, second_params: dict | None = None) -> ResidualBooster:
    """`second` fitted on the residuals of `first`'s out-of-fold predictions (boosting across models)."""
    _check_folds(folds)
    return ResidualBooster(make(first, seed, first_params or {}), make(second, seed, second_params or {}),
                           folds, seed)


COMPOSITES: Registry[Callable[..., BaseEstimator]] = Registry("ensemble estimator")
COMPOSITES.add("stacking", stacking)
COMPOSITES.add("cross_family", cross_family)
COMPOSITES.add("residual_boost", residual_boost)
