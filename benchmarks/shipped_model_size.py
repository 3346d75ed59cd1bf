"""Accuracy and size of candidate shipped models: excerpt-group CV (4 folds, one seed) per config.

    python benchmarks/shipped_model_size.py configs/default_model.yaml --set model.name=random_forest ...

Each candidate is a config plus `--set` overrides (one candidate per `--candidate "k=v k=v"`). For each,
every fold of the excerpt split (split seed 100, the seed of the e1/e5 reports) is trained with the
bench's own runner; the table gives mean overall and within-excerpt Pearson r over the folds and the
size of one fold's model.skops (a model on all items is about 4/3 of the training items, so a little
larger). Runs go to a temporary folder.
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
import time
from pathlib import Path

import numpy as np

from pianolab.config import load_config, replace
from pianolab.train.run import execute


def measure(config: Path, overrides: list[str], folds: int, root: Path) -> dict:
    cfg = load_config(config, overrides)
    scores, sizes, started = [], [], time.perf_counter()
    for fold in range(folds):
        c = replace(cfg, data={"split": "excerpt", "folds": folds, "split_seed": 100, "fold": fold})
        folder = root / f"{abs(hash(tuple(overrides)))}-{fold}"
        scores.append(execute(c, folder))
        sizes.append((folder / "model.skops").stat().st_size)
    return {"pearson": np.mean([s["pearson"] for s in scores]),
            "within": np.mean([s["within_excerpt_pearson"] for s in scores]),
            "mb": np.mean(sizes) / 1e6, "seconds": time.perf_counter() - started}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--candidate", action="append", default=[], help="space-separated key=value overrides")
    ap.add_argument("--folds", type=int, default=4)
    args = ap.parse_args()
    print("| candidate | overall r | within-excerpt r | model.skops MB (one fold) | s |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for cand in args.candidate or [""]:
            res = measure(args.config, shlex.split(cand), args.folds, Path(tmp))
            print(f"| {cand or '(config as is)'} | {res['pearson']:.4f} | {res['within']:.4f} | {res['mb']:.2f} "
                  f"| {res['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
