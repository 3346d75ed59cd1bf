"""Run-to-run determinism: train one cell twice with the same seed and compare the predictions.

On the CPU pianolab is bit-exact (tested). On a GPU, bf16 autocast and non-deterministic kernels
(atomics in backward passes) make runs differ slightly; this measures by how much.

`--deterministic` sets `train.deterministic` (deterministic kernels, math attention): are the two
runs then identical, and at what cost in time?

    python benchmarks/gpu_determinism.py [--model ast_ultra_tiny] [--epochs 20] [--deterministic] [--out /tmp/det]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ast_ultra_tiny")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("/tmp/determinism"))
    args = ap.parse_args()

    from pianolab import track
    from pianolab.config import config_from_dict
    from pianolab.train.run import execute

    train = {"epochs": args.epochs, "deterministic": args.deterministic}
    cfg = config_from_dict({"features": {"spectrogram": "log_mel"}, "model": {"name": args.model},
                            "optim": {"lr": 3e-4}, "train": train, "track": {"tracker": "none"}})
    summaries, preds, seconds = [], [], []
    for k in range(2):
        folder = args.out / ("deterministic" if args.deterministic else "default") / f"run{k}"
        start = time.perf_counter()
        summaries.append(execute(cfg, folder))
        seconds.append(time.perf_counter() - start)
        preds.append(track.read_predictions(folder / "predictions.parquet")[1])
    diff = np.abs(preds[0] - preds[1])
    print(f"{args.model}, {args.epochs} epochs, fold 0 seed 0, deterministic={args.deterministic}, twice: "
          f"max |Δpred| {diff.max():.2e}, mean |Δpred| {diff.mean():.2e} (labels 0..1); pearson "
          f"{summaries[0]['pearson']:.4f} vs {summaries[1]['pearson']:.4f}; identical: {bool((diff == 0).all())}; "
          f"{seconds[0]:.1f} s and {seconds[1]:.1f} s per run")


if __name__ == "__main__":
    main()
