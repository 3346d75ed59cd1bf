"""Gather an experiment's saved predictions into the arrays the statistics take.

Scores are recomputed from `predictions.parquet` (never from logged scalars), so a new metric needs
no retraining. Refuses to compare cells whose data version or split assignments differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pianolab import track
from pianolab.ab.spec import Experiment
from pianolab.data.percepiano import Dataset, load_dataset
from pianolab.errors import PianolabError


@dataclass
class Results:
    """`scores[variant, seed, fold]`, `per_dim[variant, seed, fold, dim]` of the primary metric on the
    test fold; `oof[variant][seed]` = (item indices, true, pred) pooled over the folds of a seed."""

    variants: list[str]
    metric: str
    scores: np.ndarray
    per_dim: np.ndarray
    n_train: float
    n_test: float
    oof: dict
    folders: dict
    dataset: Dataset

    def groups(self) -> np.ndarray:
        return self.dataset.column("group")


def collect(exp: Experiment, root: Path | None = None, seeds: int | None = None,
            variants: list[str] | None = None, metric: str | None = None) -> Results:
    from pianolab.evaluate.metrics import METRICS

    metric = metric or exp.primary_metric
    fn = METRICS.get(metric)
    variants = variants or exp.variant_names
    seeds = seeds or exp.seeds
    dataset = load_dataset(exp.config(variants[0]).data.root)
    groups = dataset.column("group")
    scores = np.full((len(variants), seeds, exp.folds), np.nan)
    per_dim = np.full((len(variants), seeds, exp.folds, 19), np.nan)
    oof, folders, sizes, versions = {}, {}, [], {}
    for i, v in enumerate(variants):
        oof[v] = {}
        for s in range(seeds):
            parts = []
            for k in range(exp.folds):
                folder = track.run_dir(exp.config(v, s, k), exp.name, v, root)
                if not track.is_done(folder):
                    raise PianolabError(f"{folder}: run not finished; run `pianolab ab run {exp.source}`")
                meta = track.read_meta(folder)
                key = (s, k)
                ident = (meta["data_version"], meta["split_digest"])
                if versions.setdefault(key, ident) != ident:
                    raise PianolabError(f"{folder}: data version or split differs from the other variants' "
                                        f"seed {s} fold {k}; refusing to compare")
                rows, pred, true = track.read_predictions(folder / "predictions.parquet")
                test = (rows["role"] == "test").to_numpy()
                idx = np.array([dataset.index[x] for x in rows["stem"][test]])
                r = fn(true[test], pred[test], groups=groups[idx])
                scores[i, s, k] = r.value
                if r.per_dim is not None:
                    per_dim[i, s, k] = r.per_dim
                parts.append((idx, true[test], pred[test]))
                folders[(v, s, k)] = folder
                sizes.append((meta["n_train"] + meta.get("n_val", 0), meta["n_test"]))
            oof[v][s] = tuple(np.concatenate(x) for x in zip(*parts, strict=False))
    n_train, n_test = np.mean(sizes, axis=0)
    return Results(variants, metric, scores, per_dim, float(n_train), float(n_test), oof, folders, dataset)
