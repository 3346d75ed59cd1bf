"""An experiment's finished cells as one pandas table, for analysis outside the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pianolab import track
from pianolab.ab.spec import Experiment, load_experiment
from pianolab.data.percepiano import load_dataset

DEFAULT_METRICS = ("pearson", "r2", "within_excerpt_pearson")


def results_table(experiment: Experiment | str | Path, root: Path | None = None,
                  metrics: tuple[str, ...] = DEFAULT_METRICS) -> pd.DataFrame:
    """One row per finished cell: variant, seed, fold, run folder and each metric on the test fold,
    recomputed from the cell's `predictions.parquet`. Unfinished cells are left out."""
    from pianolab.evaluate.metrics import METRICS

    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    data = exp.config(exp.variant_names[0]).data
    dataset = load_dataset(data.root, midi=data.midi)
    groups = dataset.column("group")
    rows = []
    for cell in exp.cells():
        folder = track.run_dir(cell.config, exp.name, cell.variant, root)
        if not track.is_done(folder):
            continue
        preds, pred, true = track.read_predictions(folder / "predictions.parquet")
        test = (preds["role"] == "test").to_numpy()
        idx = np.array([dataset.index[s] for s in preds["stem"][test]])
        row = {"variant": cell.variant, "seed": cell.seed, "fold": cell.fold, "folder": str(folder)}
        for name in metrics:
            row[name] = METRICS.get(name)(true[test], pred[test], groups=groups[idx]).value
        rows.append(row)
    return pd.DataFrame(rows, columns=["variant", "seed", "fold", "folder", *metrics])
