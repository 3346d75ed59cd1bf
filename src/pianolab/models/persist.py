"""Save and load fitted scikit-learn models without pickles: loading a model folder runs no code.

Models are written with skops (`skops.io`), which stores an object tree of named types and plain
arrays; `load_model` first lists every type a file would create and refuses the file, with one line,
unless each is in skops' own trusted set or in `TRUSTED` (the estimators pianolab fits). Pickled
files (`*.joblib` of older runs) are never opened: they are refused by name.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from pianolab.errors import fail
from pianolab.models.boosters import TRUSTED_TYPES

MODEL_FILE = "model.skops"
PICKLES = ("model.joblib", "stack.joblib")  # what older pianolab versions wrote: refused, never loaded
TRUSTED = (  # beyond skops' defaults: the classes pianolab's estimators are made of (models.classic)
    "pianolab.models.classic.ClassicRegressor",
    "pianolab.advanced.ensembles.MeanEnsemble",
    "pianolab.advanced.ensembles.StackedEnsemble",
    "pianolab.advanced.ensembles.ResidualBooster",
    "pianolab.advanced.ensembles.NonNegativeBlend",
    "pianolab.advanced.two_level.TwoLevel",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",  # the `mlp` estimator's fitted optimiser state
) + TRUSTED_TYPES  # the boosting libraries' models (models.boosters)


def save_model(obj: Any, path: Path) -> None:
    """Write `obj` (estimators, dicts, lists, arrays) as a compressed skops file."""
    import skops.io as sio

    sio.dump(obj, path, compression=zipfile.ZIP_DEFLATED, compresslevel=9)


def load_model(path: Path) -> Any:
    """The object saved at `path`, created only from trusted types; anything else is a PianolabError."""
    import skops.io as sio

    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise fail(path, "not a skops model file (pickles are never loaded; retrain the run)")
    try:
        untrusted = sorted(set(sio.get_untrusted_types(file=path)) - set(TRUSTED))
    except Exception as e:  # noqa: BLE001 - a damaged or foreign archive, whatever skops raises
        raise fail(path, f"unreadable skops model ({e.__class__.__name__}: {e})") from None
    if untrusted:
        raise fail(path, f"refused: the model holds types pianolab does not trust ({', '.join(untrusted)})")
    try:
        return sio.load(path, trusted=list(TRUSTED))
    except Exception as e:  # noqa: BLE001
        raise fail(path, f"unreadable skops model ({e.__class__.__name__}: {e})") from None


def refuse_pickles(folder: Path) -> None:
    """A one-line error for a run folder that holds only pickled models of an older pianolab."""
    for name in PICKLES:
        if (Path(folder) / name).is_file():
            raise fail(Path(folder) / name, "pickled model of an older pianolab: never loaded (it could run "
                                            "code); retrain the run to get model.skops")
