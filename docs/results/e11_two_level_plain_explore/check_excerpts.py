"""Checks, in every finished `between_features: plain_mean` cell of an experiment, that the saved model finds
the test fold's excerpts from the inputs alone (`TwoLevel.excerpts` equals the dataset's excerpt groups, up to
names) and that its test predictions' excerpt means equal the plain model's. Rebuilds each cell's test
inputs from the feature store with the run's saved scaling (`evaluate.loading.vector_probe`).

    .venv/bin/python docs/results/e11_two_level_plain_explore/check_excerpts.py runs/e11_two_level_plain_explore
"""

import sys
from pathlib import Path

import numpy as np

from pianolab.advanced.two_level import group_means
from pianolab.data.percepiano import load_dataset
from pianolab.evaluate.loading import vector_probe
from pianolab.evaluate.runs import Run
from pianolab.models.persist import load_model


def main(root: str) -> None:
    ds, checked = load_dataset("data/percepiano"), 0
    for folder in sorted(Path(root).glob("*/*/fold*-seed*")):
        run = Run.load(folder)
        if run.cfg.model.name != "two_level" or run.cfg.model.params.get("between_features") != "plain_mean":
            continue
        probe = vector_probe(run, ds)
        est = load_model(folder / "model.skops")["estimator"].estimator
        found, g = est.excerpts(probe.X), probe.groups
        same = len(set(zip(found, g, strict=True))) == len(set(found)) == len(set(g))
        d = probe.X.shape[1] // 2
        plain = est.between_.predict(probe.X[:, :d])
        gap = np.abs(group_means(est.predict(probe.X), g) - group_means(plain, g)).max()
        print(f"{folder.relative_to(root)}: {len(set(g))} test excerpts, found {len(set(found))}, "
              f"same partition {same}, max |excerpt mean - plain excerpt mean| {gap:.1e}")
        checked += 1
        assert same and gap < 1e-6
    print(f"{checked} cells checked")


if __name__ == "__main__":
    main(sys.argv[1])
