"""Cold start (issue 8): render + features + a whole A/B from an empty feature cache, one command.

Points the feature store at a fresh folder, then times `prebuild_features` (render every performance,
log-mel on the GPU when present, all worker processes) and the experiment's cells with one backend.

    python benchmarks/cold_start.py [--experiment experiments/ab_wall_time.yaml] [--backend packed]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from gpu_util import GpuSampler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", type=Path, default=Path("experiments/ab_wall_time.yaml"))
    ap.add_argument("--backend", default="packed")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="feature-building processes")
    args = ap.parse_args()
    os.environ["PIANOLAB_CACHE"] = tempfile.mkdtemp(prefix="pianolab-cold-cache-")
    from pianolab.ab.collect import collect
    from pianolab.ab.runner import prebuild_features, run_experiment
    from pianolab.ab.spec import load_experiment

    exp = load_experiment(args.experiment)
    root = Path(tempfile.mkdtemp(prefix="pianolab-cold-runs-"))
    t0 = time.perf_counter()
    prebuild_features(exp, workers=args.workers)
    features = time.perf_counter() - t0
    with GpuSampler() as gpu:
        run_experiment(exp, jobs=args.jobs, root=root, tracker="none", echo=lambda s: None, backend=args.backend)
    total = time.perf_counter() - t0
    res = collect(exp, root)
    print(f"{exp.name} from an empty cache: features {features:.0f} s, cells {total - features:.0f} s, "
          f"total {total:.0f} s ({res.scores.size} cells, {args.backend}); mean pearson "
          f"{res.scores.mean():.4f}; {gpu.summary()}")


if __name__ == "__main__":
    main()
