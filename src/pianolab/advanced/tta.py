"""Test-time augmentation: a test item's prediction is the mean over itself and N-1 MIDI-augmented
copies (`ensemble.tta: N`, copies drawn by `render.augment` under `ensemble.tta_preset`).

`train.run` loads and prepares the copies like the originals (scaling, top-k columns, stacking, all
fitted on the training fold); `tta_mean` averages the model's predictions over them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def tta_mean(predict: Callable[[object], np.ndarray], copies: Sequence) -> np.ndarray:
    """(n, k): the mean of `predict(c)` over the copies (the original first), row by row."""
    if not copies:
        raise ValueError("test-time augmentation needs at least the original copy")
    return np.mean([np.asarray(predict(c), dtype=np.float64) for c in copies], axis=0)
