"""Run-to-run determinism: train one cell twice with the same seed and compare the predictions.

On the CPU pianolab is bit-exact (tested). On a GPU, bf16 autocast and non-deterministic kernels
(atomics in backward passes) make runs differ slightly; this measures by how much.

    python benchmarks/gpu_determinism.py [--model ast_ultra_tiny] [--epochs 20] [--out /tmp/det]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ast_ultra_tiny")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("/tmp/determinism"))
    args = ap.parse_args()

    from pianolab import track
    from pianolab.config import config_from_dict
    from pianolab.train.run import execute

    cfg = config_from_dict({"features": {"spectrogram": "log_mel"}, "model": {"name": args.model},
                            "optim": {"lr": 3e-4}, "train": {"epochs": args.epochs},
                            "track": {"tracker": "none"}})
    summaries, preds = [], []
    for k in range(2):
        folder = args.out / f"run{k}"
        summaries.append(execute(cfg, folder))
        preds.append(track.read_predictions(folder / "predictions.parquet")[1])
    diff = np.abs(preds[0] - preds[1])
    print(f"{args.model}, {args.epochs} epochs, fold 0 seed 0, twice: max |Δpred| {diff.max():.2e}, "
          f"mean |Δpred| {diff.mean():.2e} (labels 0..1); pearson {summaries[0]['pearson']:.4f} vs "
          f"{summaries[1]['pearson']:.4f}; identical: {bool((diff == 0).all())}")


if __name__ == "__main__":
    main()
