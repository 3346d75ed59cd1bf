"""Snapshot ensembles (Huang et al. 2017) for the neural models: `ensemble.snapshots: M` trains with a
cosine learning rate restarted M times (`optim` schedule `cyclic_cosine`, `cycles: M`), keeps the
weights at the end of each cycle, and predicts the mean of the M snapshots' predictions.
"""

from __future__ import annotations

import numpy as np


def cycle_ends(epochs: int, cycles: int) -> list[int]:
    """The epochs (1-based, counted when they end) that close each of `cycles` equal cycles of
    `epochs`; the last is `epochs`. Cycle i of the `cyclic_cosine` schedule ends at the same step."""
    if not 1 <= cycles <= epochs:
        raise ValueError(f"snapshots need 1 <= cycles <= epochs, got {cycles} cycles over {epochs} epochs")
    return [round(epochs * (i + 1) / cycles) for i in range(cycles)]


def cycle_multiplier(progress: float, cycles: int, min_ratio: float = 0.0) -> float:
    """The LR multiplier at `progress` in [0, 1] of training: a cosine from 1 to `min_ratio` within
    each of `cycles` equal cycles, restarting at 1."""
    pos = min(progress, 1.0) * cycles
    within = 1.0 if pos >= cycles else pos - np.floor(pos)
    return float(min_ratio + (1 - min_ratio) * 0.5 * (1 + np.cos(np.pi * within)))


def cpu_copy(state: dict) -> dict:
    """A detached CPU copy of a model's state dict (one snapshot)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
