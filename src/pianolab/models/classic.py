"""Classic scikit-learn regressors on feature vectors, behind one fit/predict interface.

`create_estimator(name, seed, top_k=None, bagging=1, **params)` -> `ClassicRegressor` with `fit(X (n, D),
Y (n, 19), groups=None)` and `predict(X) -> (n, 19)` (`groups`: each row's excerpt, for the inner folds of
the ensembles in `pianolab.advanced.ensembles`; `bagging` N: the mean of the model under N seeds).
Ensembles built from registered estimators (`stacking`, `cross_family`, `residual_boost`, and
`two_level`: `pianolab.advanced.two_level`) take their members by name in `params`. `params` go to the
scikit-learn estimator (an unknown one is a PianolabError listing the valid ones). With `top_k`, `fit`
first ranks features by the impurity importance of a random forest fitted on the data passed to `fit`
(the training fold, never test data) and keeps the k best (`selected_`, in descending importance).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import ExtraTreesRegressor, HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import Ridge
from sklearn.multioutput import MultiOutputRegressor
from sklearn.neural_network import MLPRegressor

from pianolab.advanced.ensembles import COMPOSITES, MeanEnsemble, accepts_sample_weight, bagged, fit_grouped
from pianolab.advanced.two_level import TwoLevel  # noqa: F401  (registers the two_level composite)
from pianolab.errors import PianolabError
from pianolab.features.select import select_top_k
from pianolab.models.boosters import BOOSTERS
from pianolab.registry import Registry

ESTIMATORS: Registry[Callable[[int], BaseEstimator]] = Registry("classic estimator")
ESTIMATORS.add("ridge", lambda seed: Ridge(alpha=10.0))
ESTIMATORS.add("random_forest", lambda seed: RandomForestRegressor(
    n_estimators=300, min_samples_leaf=2, max_features=0.33, n_jobs=-1, random_state=seed))
ESTIMATORS.add("gradient_boosting", lambda seed: MultiOutputRegressor(HistGradientBoostingRegressor(
    max_iter=300, learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0, random_state=seed),
    n_jobs=None))  # HistGB threads itself (OpenMP); joblib processes here outlive ab --jobs workers
ESTIMATORS.add("extra_trees", lambda seed: ExtraTreesRegressor(
    n_estimators=500, min_samples_leaf=2, max_features=0.5, n_jobs=-1, random_state=seed))
ESTIMATORS.add("extra_trees_small", lambda seed: ExtraTreesRegressor(  # ~6x cheaper: ensembles on a small CPU
    n_estimators=40, min_samples_leaf=2, max_features=0.33, n_jobs=-1, random_state=seed))
ESTIMATORS.add("mlp", lambda seed: MLPRegressor(  # scikit-learn's MLP: the cheap neural family for ensembles
    hidden_layer_sizes=(128,), alpha=1.0, learning_rate_init=1e-3, max_iter=300, early_stopping=True,
    validation_fraction=0.15, n_iter_no_change=20, random_state=seed))
MEMBERS = {"ensemble_rf_gb": ("random_forest", "gradient_boosting"),
           "ensemble_gb_et": ("gradient_boosting", "extra_trees")}  # mean ensembles of registered estimators
for _name, _members in MEMBERS.items():
    ESTIMATORS.add(_name, lambda seed, members=_members: MeanEnsemble([ESTIMATORS.get(m)(seed) for m in members]))
for _name, _make in BOOSTERS.items():  # LightGBM, XGBoost, CatBoost (the `boost` extra)
    ESTIMATORS.add(_name, _make)


def _member(name: str, seed: int, params: dict) -> BaseEstimator:
    """The registered estimator `name` with `params` (a member of an ensemble of `COMPOSITES`)."""
    if not isinstance(params, dict):
        raise PianolabError(f"parameters of member {name!r} must be a mapping, got {params!r}")
    return _build(name, seed, params)


def _build(name: str, seed: int, params: dict) -> BaseEstimator:
    if name in COMPOSITES:
        import inspect

        build = COMPOSITES.get(name)
        valid = [p for p in inspect.signature(build).parameters if p not in ("seed", "make")]
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise PianolabError(f"estimator {name!r} does not accept {', '.join(unknown)}; valid: {', '.join(valid)}")
        return build(seed, _member, **params)
    return _with_params(ESTIMATORS.get(name)(seed), name, params)


for _name in COMPOSITES:  # stacking, cross_family, residual_boost with their default members
    ESTIMATORS.add(_name, lambda seed, name=_name: _build(name, seed, {}))


def _with_params(est: BaseEstimator, name: str, params: dict[str, Any]) -> BaseEstimator:
    """Set `params` on `est`; for a MultiOutputRegressor on the wrapped estimator, except `n_jobs`
    (parallel fits over the output dimensions); for a mean ensemble on its members, as
    `<member>__<param>` (e.g. `extra_trees__n_estimators`)."""
    params = dict(params)
    if name in MEMBERS:
        members = MEMBERS[name]
        for key, value in params.items():
            member, _, param = key.partition("__")
            if member not in members or not param:
                raise PianolabError(f"estimator {name!r} takes parameters of its members as <member>__<param>, "
                                    f"members: {', '.join(members)}; got {key!r}")
            _with_params(est.members[members.index(member)], member, {param: value})
        return est
    if isinstance(est, MultiOutputRegressor):
        if "n_jobs" in params:
            est.set_params(n_jobs=params.pop("n_jobs"))
        valid, target = {*est.estimator.get_params(deep=False), "n_jobs"}, est.estimator
    else:
        valid, target = set(est.get_params(deep=False)), est
    unknown = sorted(set(params) - valid)
    if unknown:
        raise PianolabError(f"estimator {name!r} does not accept {', '.join(unknown)}; "
                            f"valid: {', '.join(sorted(valid))}")
    target.set_params(**params)
    return est


class ClassicRegressor:
    """A scikit-learn regressor with optional top-k feature selection fitted inside `fit`."""

    def __init__(self, name: str, estimator: BaseEstimator, seed: int, top_k: int | None = None):
        self.name, self.estimator, self.seed, self.top_k = name, estimator, seed, top_k
        self.selected_: np.ndarray | None = None

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None,
            sample_weight: np.ndarray | None = None) -> ClassicRegressor:
        """`sample_weight` (n,): per-row weights, for estimators that take them (`accepts_sample_weight`)."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if sample_weight is not None and not accepts_sample_weight(self.estimator):
            raise PianolabError(f"estimator {self.name!r} does not accept sample weights")
        if self.top_k is not None and self.top_k < x.shape[1]:
            self.selected_ = select_top_k(x, y, self.top_k, self.seed)
        fit_grouped(self.estimator, self._select(x), y, groups, sample_weight)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        pred = self.estimator.predict(self._select(np.asarray(x, dtype=np.float64)))
        return pred.reshape(len(x), -1).astype(np.float32)

    def _select(self, x: np.ndarray) -> np.ndarray:
        return x if self.selected_ is None else x[:, self.selected_]


def create_estimator(name: str, seed: int, top_k: int | None = None, bagging: int = 1,
                     **params) -> ClassicRegressor:
    """The registered estimator `name` seeded with `seed`, with `params` set on it; `bagging` N > 1: the
    mean of N copies seeded `advanced.ensembles.member_seeds(seed, N)` (one model)."""
    est = bagged(lambda s: _build(name, s, params), seed, bagging)
    return ClassicRegressor(name, est, seed, top_k)
