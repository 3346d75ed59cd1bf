"""Wall time of one whole A/B experiment per backend, from a warm feature cache (issue 8).

Default: experiments/ab_wall_time.yaml (2 variants x 5 seeds x 4 folds, ultra_tiny AST, 100 epochs),
run with each named backend into a fresh runs root and fresh torch.compile caches (spawned workers start
with nothing compiled; a backend run in this process keeps what an earlier one compiled: put it first);
prints wall time, cells/min and GPU utilisation (nvidia-smi every 200 ms: over the whole run, and while
training, i.e. between the first and the last epoch record of any cell), and checks that every backend
gives the same per-cell scores.

    python benchmarks/ab_wall_time.py [--backends local,local:8,threads:8,packed] [--epochs N] [--seeds S]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from gpu_util import GpuSampler

from pianolab.ab.collect import collect
from pianolab.ab.runner import prebuild_features, run_experiment
from pianolab.ab.spec import load_experiment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", type=Path, default=Path("experiments/ab_wall_time.yaml"))
    ap.add_argument("--backends", default="local,local:8,packed",
                    help="comma list of BACKEND[:JOBS] (local:8 = eight processes sharing the GPU, threads:8 = "
                    "eight threads of one process, each on its own CUDA stream)")
    ap.add_argument("--epochs", type=int, default=None, help="override the experiment's epoch budget")
    ap.add_argument("--seeds", type=int, default=None, help="override the number of seeds")
    args = ap.parse_args()
    exp = load_experiment(args.experiment)
    if args.epochs or args.seeds:
        from dataclasses import replace

        exp = replace(exp, epochs=args.epochs or exp.epochs, seeds=args.seeds or exp.seeds)
    start = time.perf_counter()
    prebuild_features(exp)
    print(f"{exp.name}: {len(exp.variant_names)} variants x {exp.seeds} seeds x {exp.folds} folds, "
          f"{exp.epochs} epochs; features ready in {time.perf_counter() - start:.0f} s")
    scores = {}
    for item in args.backends.split(","):
        backend, _, jobs = item.partition(":")
        root = Path(tempfile.mkdtemp(prefix=f"abwall-{backend}-"))
        for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):  # compiled from nothing, for every backend
            os.environ[var] = tempfile.mkdtemp(prefix=f"abwall-{var.lower()}-")
        with GpuSampler() as gpu:
            t0 = time.perf_counter()
            run_experiment(exp, jobs=int(jobs or 1), root=root, tracker="none", echo=lambda s: None,
                           backend=backend)
            wall = time.perf_counter() - t0
        res = collect(exp, root)
        scores[item] = res.scores
        cells = res.scores.size
        print(f"{item:<10} wall {wall:7.1f} s  {cells / wall * 60:6.1f} cells/min  "
              f"mean pearson {res.scores.mean():.4f}  whole run: {gpu.summary()}")
        window = _training_window(root)
        if window is not None:
            print(f"{'':<10} while training ({window[1] - window[0]:.0f} s): {gpu.summary(window)}")
    first = next(iter(scores.values()))
    for item, s in scores.items():
        print(f"max |cell difference| {item} vs {next(iter(scores))}: {np.abs(s - first).max():.2e}")


def _training_window(root: Path) -> tuple[float, float] | None:
    """Unix times of the first and the last epoch record of any run under `root` (None: no epochs)."""
    stamps = [json.loads(line).get("finished_at") for f in root.rglob("metrics.jsonl")
              for line in f.read_text().splitlines() if line.strip()]
    stamps = [t for t in stamps if t is not None]
    return (min(stamps), max(stamps)) if stamps else None


if __name__ == "__main__":
    main()
