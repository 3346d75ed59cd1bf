"""`features.stack`: a classic estimator's predictions as extra vector features (stacking).

A model fed the 19 predictions of a strong tree ensemble only has to learn what the ensemble misses
(for a hybrid: what the audio adds). On the training fold (the training part and its validation
carve-out) the columns are out-of-fold: each of K estimators is fitted without one group of excerpts
(GroupKFold) and predicts that group, so they are as noisy as the columns of unseen items; test and
new items get the predictions of one estimator fitted on the whole training fold, saved beside the
run's model (`STACK_FILE`, a skops file: see models.persist), on the same rows as that estimator
trained on its own. Neural models take these columns as their prior (`prior_columns`): they output
the trees' prediction plus a learned correction whose output layer starts at zero, so training starts
from the trees.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pianolab.data.percepiano import DIMENSIONS
from pianolab.errors import PianolabError, fail

STACK_FILE = "stack.skops"
STACK_NAMES = [f"stack:{d}" for d in DIMENSIONS]


def fit_stack(name: str, x: np.ndarray, z: np.ndarray, groups: np.ndarray, seed: int, folds: int = 4,
              make: Callable | None = None):
    """(out-of-fold predictions (n, 19) of the training rows, estimator fitted on all of them).
    `x`: scaled training vectors, `z`: standardised targets, `groups`: each row's excerpt."""
    from sklearn.model_selection import GroupKFold

    from pianolab.models.classic import create_estimator

    make = make or (lambda: create_estimator(name, seed=seed))
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise PianolabError(f"features.stack needs training items of at least 2 excerpts, got {n_groups}")
    oof = np.zeros(z.shape, dtype=np.float32)
    for fit_rows, held_out in GroupKFold(n_splits=min(folds, n_groups)).split(x, z, groups):
        oof[held_out] = make().fit(x[fit_rows], z[fit_rows]).predict(x[held_out])
    return oof, make().fit(x, z)


def with_stack(x: np.ndarray, estimator) -> np.ndarray:
    """Scaled vectors (n, d) -> (n, d + 19): the estimator's predictions appended."""
    return np.hstack([x, estimator.predict(x).reshape(len(x), -1)]).astype(np.float32)


def save_stack(norm: dict, folder: Path | None) -> None:
    """Write the fitted stack estimator of `norm`, if any, into the run folder."""
    if folder is not None and "stack" in norm:
        from pianolab.models.persist import save_model

        save_model(norm["stack"], folder / STACK_FILE)


def with_saved_stack(x: np.ndarray, folder: Path) -> np.ndarray:
    """`x` with the predictions of the run folder's saved stack estimator appended, if it has one."""
    from pianolab.models.persist import load_model

    path = Path(folder) / STACK_FILE
    if not path.is_file():
        if (Path(folder) / "stack.joblib").is_file():
            raise fail(Path(folder) / "stack.joblib", "pickled stack model of an older pianolab: never loaded "
                                                      "(it could run code); retrain the run")
        return x
    return with_stack(x, load_model(path))
