"""What fewer trees cost a mean ensemble of gradient boosting and extra trees (`ensemble_gb_et`).

    python benchmarks/shrink_ensemble.py configs/with_score_model.yaml --folds-run 0 1 --grid 300:500 150:100 100:50

One fit per fold of the config at the bench's full size (300 boosting iterations per dimension, 500
extra trees), then, from that same fit, the ensemble cut to its first GB iterations and first extra
trees (`--grid GB:ET`): the mean of the first k trees of a forest and the first m stages of boosting
are what a model with k trees or m iterations fits (same seed, same data), so one fit gives the whole
curve. Per grid point: mean overall and within-excerpt Pearson r over the folds run (excerpt split,
4 folds, split seed 100, training seed 0) and the size of the cut model as a compressed skops file.
"""

from __future__ import annotations

import argparse
import copy
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pianolab.config import load_config, replace
from pianolab.models.classic import create_estimator
from pianolab.models.persist import save_model
from pianolab.train.run import prepare_cell, summarise

FULL = {"gradient_boosting__max_iter": 300, "extra_trees__n_estimators": 500, "extra_trees__min_samples_leaf": 2}


def cut(est, gb_iters: int, et_trees: int):
    """A copy of the fitted ClassicRegressor(MeanEnsemble([GB, ET])) with fewer stages and trees."""
    small = copy.deepcopy(est)
    gb, et = small.estimator.fitted_
    for h in gb.estimators_:
        h._predictors = h._predictors[:gb_iters]  # n_iter_ is len(_predictors)
    et.estimators_, et.n_estimators = et.estimators_[:et_trees], et_trees
    return small


def size_mb(obj) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        save_model(obj, Path(tmp) / "m.skops")
        return (Path(tmp) / "m.skops").stat().st_size / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--folds-run", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--grid", nargs="+", default=["300:500", "150:100", "100:50"])
    args = ap.parse_args()
    grid = [tuple(map(int, g.split(":"))) for g in args.grid]
    res = {g: [] for g in grid}
    started = time.perf_counter()
    for fold in args.folds_run:
        cfg = replace(load_config(args.config), data={"split": "excerpt", "folds": 4, "split_seed": 100, "fold": fold},
                      model={"params": FULL})
        with tempfile.TemporaryDirectory() as tmp:
            cell = prepare_cell(cfg, Path(tmp) / "run", "bench", "", torch.device("cpu"))
        norm, x, test = cell.norm, cell.part["train"].vector, cell.part["test"].vector
        est = create_estimator(cfg.model.name, seed=cfg.train.seed, **cfg.model.params)
        est.fit(x, (cell.targets["train"] - norm["y_mean"]) / norm["y_std"])
        y, groups = cell.dataset.labels[cell.roles.test], cell.dataset.column("group")[cell.roles.test]
        for g in grid:
            small = cut(est, *g)
            s = summarise(y, small.predict(test) * norm["y_std"] + norm["y_mean"], groups)
            res[g].append((s["pearson"], s["within_excerpt_pearson"], size_mb(small)))
            print(f"fold {fold} {g[0]}:{g[1]} r {res[g][-1][0]:.4f} within {res[g][-1][1]:.4f} "
                  f"{res[g][-1][2]:.2f} MB", flush=True)
        print(f"fold {fold} done ({time.perf_counter() - started:.0f} s)", flush=True)
    out = io.StringIO()
    out.write(f"folds {args.folds_run} of excerpt-k4 split seed 100, training seed 0, min_samples_leaf 2\n")
    out.write("| GB iterations : ET trees | overall r | within-excerpt r | model MB (one fold) |\n|---|---|---|---|\n")
    for g, rows in res.items():
        a = np.array(rows)
        out.write(f"| {g[0]} : {g[1]} | {a[:, 0].mean():.4f} | {a[:, 1].mean():.4f} | {a[:, 2].mean():.2f} |\n")
    print(out.getvalue(), flush=True)


if __name__ == "__main__":
    main()
