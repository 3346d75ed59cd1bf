"""Overhead of the Ray backend per run, against the local backend, on this machine (CPU).

Runs one tiny experiment (ridge on the symbolic features, 2 variants x SEEDS x FOLDS cells, tracker
none) into fresh runs roots: local backend with --jobs 1 and 2, then the Ray backend on a local
instance with 2 CPUs, cold (the timing includes starting Ray and its workers) and warm (the same
instance again, into another root). A warm-up local run first fills the splits and imports.
Prints wall time and seconds per run, Ray's start-up time (cold - warm), the Ray backend's extra
seconds per run against the local backend (negative: faster) and, warm, against a perfect split of
the serial local run over the same number of workers.

    python benchmarks/ray_overhead.py [--seeds 3] [--folds 4] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml

from pianolab.ab.runner import run_experiment
from pianolab.ab.spec import load_experiment


def experiment(folder: Path, seeds: int, folds: int):
    data = {"name": "ray_overhead", "hypothesis": "Weaker ridge regularisation fits better.",
            "baseline": {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge"},
                         "track": {"tracker": "none"}},
            "variants": {"alpha_small": {"model.params.alpha": 0.1}},
            "seeds": seeds, "split": {"name": "excerpt", "folds": folds}}
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_experiment(path)


def timed(exp, root: Path, **opts) -> float:
    t0 = time.perf_counter()
    run_experiment(exp, root=root, tracker="none", echo=lambda s: None, **opts)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=2, help="cells at once: local --jobs and the Ray CPUs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["PIANOLAB_SPLITS"] = str(tmp / "splits")
        os.environ["PIANOLAB_NO_BAR"] = "1"
        exp = experiment(tmp, args.seeds, args.folds)
        n = len(exp.cells())
        timed(exp, tmp / "warmup")
        walls = {"local, jobs 1": timed(exp, tmp / "local1"),
                 f"local, jobs {args.jobs}": timed(exp, tmp / "local2", jobs=args.jobs),
                 "ray, cold instance": timed(exp, tmp / "ray_cold", backend="ray", jobs=args.jobs),
                 "ray, warm instance": timed(exp, tmp / "ray_warm", backend="ray", jobs=args.jobs)}
    print(f"{n} runs (2 variants x {args.seeds} seeds x {args.folds} folds, ridge), {os.cpu_count()} CPUs")
    print(f"{'backend':<20} {'wall s':>8} {'s/run':>7}")
    for name, wall in walls.items():
        print(f"{name:<20} {wall:8.2f} {wall / n:7.3f}")
    print(f"Ray start-up (instance and workers, once per process): "
          f"{walls['ray, cold instance'] - walls['ray, warm instance']:.1f} s")
    local = walls[f"local, jobs {args.jobs}"]
    for name in ("ray, cold instance", "ray, warm instance"):
        print(f"{name}: {(walls[name] - local) / n:+.3f} s per run vs local jobs {args.jobs}, "
              f"{(walls[name] - walls['local, jobs 1']) / n:+.3f} s vs local jobs 1")
    ideal = walls["local, jobs 1"] / args.jobs
    print(f"ray, warm instance vs local jobs 1 split perfectly over {args.jobs} workers: "
          f"{(walls['ray, warm instance'] - ideal) / n:+.3f} s per run (an upper bound on Ray's cost per task)")


if __name__ == "__main__":
    main()
