"""Gradient-boosting libraries as classic estimators: LightGBM, XGBoost (multi-output trees) and
CatBoost (MultiRMSE), each registered by name beside the scikit-learn ones (`models.classic`).

Each library is imported only when its estimator is built (the `boost` extra installs them). The
types each fitted model is made of are listed in `TRUSTED_TYPES`, so that `models.persist` can load
them from skops files without running code.
"""

from __future__ import annotations

from collections.abc import Callable

from sklearn.base import BaseEstimator
from sklearn.multioutput import MultiOutputRegressor

from pianolab.errors import PianolabError


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PianolabError(f"estimator needs {module}: pip install -c constraints.txt -e \".[boost]\"") from None


def lightgbm(seed: int) -> BaseEstimator:
    """One LightGBM model per dimension (small leaves and column sampling for ~750 items)."""
    lgb = _require("lightgbm")
    return MultiOutputRegressor(lgb.LGBMRegressor(
        n_estimators=400, learning_rate=0.03, num_leaves=15, min_child_samples=10, subsample=0.8,
        subsample_freq=1, colsample_bytree=0.5, reg_lambda=1.0, random_state=seed, n_jobs=1, verbose=-1))


def xgboost(seed: int) -> BaseEstimator:
    """XGBoost with multi-output trees: one tree predicts all 19 dimensions (shared splits)."""
    xgb = _require("xgboost")
    return xgb.XGBRegressor(
        n_estimators=400, learning_rate=0.03, max_depth=4, subsample=0.8, colsample_bytree=0.5,
        reg_lambda=1.0, tree_method="hist", multi_strategy="multi_output_tree", random_state=seed, n_jobs=1)


def catboost(seed: int) -> BaseEstimator:
    """CatBoost with the MultiRMSE loss: symmetric trees fitted to all 19 dimensions jointly."""
    cb = _require("catboost")
    return cb.CatBoostRegressor(iterations=800, learning_rate=0.05, depth=6, loss_function="MultiRMSE",
                                random_seed=seed, thread_count=1, verbose=0, allow_writing_files=False)


BOOSTERS: dict[str, Callable[[int], BaseEstimator]] = {"lightgbm": lightgbm, "xgboost": xgboost,
                                                       "catboost": catboost}
TRUSTED_TYPES = ("collections.OrderedDict", "lightgbm.basic.Booster", "lightgbm.sklearn.LGBMRegressor",
                 "xgboost.core.Booster", "xgboost.sklearn.XGBRegressor", "catboost.core.CatBoostRegressor")
