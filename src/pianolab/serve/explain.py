"""Why a model rated a performance as it did: SHAP values per dimension, named in musical words.

Tree models (random forest, extra trees, histogram gradient boosting, their mean ensembles) get
`shap.TreeExplainer` (path-dependent TreeSHAP: exact for the trees, no background data needed); ridge
gets `shap.LinearExplainer` with the training mean (zero after the run's scaling) as background. SHAP
values are additive: for each dimension, base value + the sum of the features' values = the prediction.
They are computed on the model's standardised target and reported on the 0..1 label scale and in
rating points (x 7).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.ensemble import ExtraTreesRegressor, HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import Ridge
from sklearn.multioutput import MultiOutputRegressor

from pianolab.advanced.ensembles import MeanEnsemble
from pianolab.data.percepiano import DIMENSIONS
from pianolab.errors import PianolabError
from pianolab.serve.words import describe

TOP = 3  # features listed per direction and dimension

# an explainer: x (n, D) -> (shap values (n, D, 19), base values (19,)) on the standardised target
Explainer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _tree(est) -> Explainer:
    import shap

    explainer = shap.TreeExplainer(est)

    def run(x):
        values = np.asarray(explainer.shap_values(x, check_additivity=False), dtype=float)
        return values.reshape(len(x), x.shape[1], -1), np.atleast_1d(explainer.expected_value).astype(float)

    return run


def _linear(est, width: int) -> Explainer:
    import shap

    explainer = shap.LinearExplainer(est, shap.maskers.Independent(np.zeros((1, width))))

    def run(x):
        values = np.asarray(explainer.shap_values(x), dtype=float)
        values = values if values.ndim == 3 else values[..., None]
        return values.reshape(len(x), width, -1), np.atleast_1d(explainer.expected_value).astype(float)

    return run


def _per_output(parts: list[Explainer]) -> Explainer:
    """One single-output explainer per dimension (MultiOutputRegressor), stacked on the last axis."""
    def run(x):
        outs = [p(x) for p in parts]
        return np.concatenate([v for v, _ in outs], axis=2), np.concatenate([b for _, b in outs])

    return run


def _mean(parts: list[Explainer], weights) -> Explainer:
    """A weighted mean of models is explained by the same mean of their SHAP values (additivity)."""
    w = np.ones(len(parts)) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum()

    def run(x):
        outs = [p(x) for p in parts]
        return (sum(wi * v for wi, (v, _) in zip(w, outs, strict=True)),
                sum(wi * b for wi, (_, b) in zip(w, outs, strict=True)))

    return run


def explainer_for(est, width: int) -> Explainer:
    """The SHAP explainer of a fitted scikit-learn estimator; PianolabError for a model SHAP cannot read."""
    if isinstance(est, RandomForestRegressor | ExtraTreesRegressor | HistGradientBoostingRegressor):
        return _tree(est)
    if isinstance(est, Ridge):
        return _linear(est, width)
    if isinstance(est, MultiOutputRegressor):
        return _per_output([explainer_for(e, width) for e in est.estimators_])
    if isinstance(est, MeanEnsemble):
        return _mean([explainer_for(m, width) for m in est.fitted_], est.weights)
    raise PianolabError(f"no explanation for {type(est).__name__} models (tree and ridge models only)")


class Explanations:
    """Explains the predictions of one saved estimator run ({"estimator": ClassicRegressor, "norm"})."""

    method = "shap"

    def __init__(self, saved: dict):
        reg, norm = saved["estimator"], saved["norm"]
        self.columns = np.asarray(norm["vector_names"])
        self.selected = None if getattr(reg, "selected_", None) is None else np.asarray(reg.selected_)
        names = self.columns if self.selected is None else self.columns[self.selected]
        self.names = list(names)
        self.explainer = explainer_for(reg.estimator, len(self.names))
        self.y_std, self.y_mean = np.asarray(norm["y_std"], float), np.asarray(norm["y_mean"], float)

    def shap(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(SHAP values (n, D, 19), base values (19,)) on the 0..1 label scale, for model vectors `x`."""
        if x.shape[1] != len(self.columns):
            raise PianolabError(f"model vector has {x.shape[1]} columns, the model {len(self.columns)}")
        x = np.asarray(x, dtype=float) if self.selected is None else np.asarray(x, dtype=float)[:, self.selected]
        values, base = self.explainer(x)
        return values * self.y_std, base * self.y_std + self.y_mean

    def reasons(self, x: np.ndarray, raw: dict[str, float] | None = None, top: int = TOP, **context) -> list[dict]:
        """Per dimension of the one performance in `x` (1, D): base value and the `top` features that
        raised and lowered the rating most, with their musical words and effect in rating points
        (`context`: what a subclass's attributions need besides the vector)."""
        values, base = self.shap(x, **context)
        out = []
        for j, dim in enumerate(DIMENSIONS):
            v = values[0, :, j]
            order = np.argsort(v)
            row = {"dimension": dim, "base": float(base[j]), "value": float(base[j] + v.sum()),
                   "raised": [self._item(i, v[i], raw) for i in order[::-1][:top] if v[i] > 0],
                   "lowered": [self._item(i, v[i], raw) for i in order[:top] if v[i] < 0]}
            out.append(row)
        return out

    def _item(self, i: int, effect: float, raw: dict | None) -> dict:
        name = self.names[i]
        item = {"feature": name, "words": describe(name), "effect": round(float(effect) * 7, 4)}
        if raw and name in raw:
            item["feature_value"] = raw[name]
        return item
