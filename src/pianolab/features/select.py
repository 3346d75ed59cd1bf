"""`top_k_selected`: feature selection by random-forest importance, fitted on the training fold only."""

from __future__ import annotations

import numpy as np

from pianolab.errors import PianolabError


def select_top_k(X_train: np.ndarray, Y_train: np.ndarray, k: int, seed: int = 0,
                 n_estimators: int = 200) -> np.ndarray:
    """Indices (k,) of the columns of X_train (n, d) with the largest impurity importance of a random
    forest fitted to Y_train (n, 19) (or (n,)); sorted by decreasing importance, ties by index."""
    from sklearn.ensemble import RandomForestRegressor

    X, Y = np.asarray(X_train, dtype=np.float64), np.asarray(Y_train, dtype=np.float64)
    if X.ndim != 2 or len(X) != len(Y):
        raise PianolabError(f"select_top_k: X_train {X.shape} and Y_train {Y.shape} do not match")
    if not 1 <= k <= X.shape[1]:
        raise PianolabError(f"select_top_k: k={k} must be in 1..{X.shape[1]}")
    forest = RandomForestRegressor(n_estimators=n_estimators, random_state=seed, n_jobs=-1)
    forest.fit(np.nan_to_num(X), Y)
    importance = forest.feature_importances_
    return np.lexsort((np.arange(X.shape[1]), -importance))[:k]
