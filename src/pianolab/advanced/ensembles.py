"""Averaging ensembles of multi-output regressors (scikit-learn's VotingRegressor is single-output)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone


class MeanEnsemble(RegressorMixin, BaseEstimator):
    """Fits every member on the same data; predicts the (weighted) mean of their predictions.

    members: list of unfitted regressors, each mapping X (n, d) to Y (n, k); weights: one per member
    (default equal).
    """

    def __init__(self, members: list, weights: list[float] | None = None):
        self.members = members
        self.weights = weights

    def fit(self, X, y) -> MeanEnsemble:
        self.fitted_ = [clone(m).fit(X, y) for m in self.members]
        return self

    def predict(self, X) -> np.ndarray:
        preds = np.stack([np.asarray(m.predict(X)).reshape(len(X), -1) for m in self.fitted_])
        w = np.ones(len(preds)) if self.weights is None else np.asarray(self.weights, dtype=float)
        return np.tensordot(w / w.sum(), preds, axes=1)
