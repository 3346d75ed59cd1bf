"""Do two runs roots of one experiment agree? Per-cell primary scores, predictions and verdicts.

Used for issue 9 (the same experiment on 1 GPU and on N GPUs through Ray) and any backend comparison.

    python benchmarks/compare_runs.py experiments/b1_model_sizes.yaml ROOT_A ROOT_B
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pianolab import track
from pianolab.ab.collect import collect
from pianolab.ab.report import analyse
from pianolab.ab.runner import cell_dir
from pianolab.ab.spec import load_experiment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", type=Path)
    ap.add_argument("roots", type=Path, nargs=2)
    args = ap.parse_args()
    exp = load_experiment(args.experiment)
    a, b = (collect(exp, root) for root in args.roots)
    pred_diff = max(np.abs(_pred(exp, c, args.roots[0]) - _pred(exp, c, args.roots[1])).max() for c in exp.cells())
    va, vb = ({v: row.get("verdict") for v, row in analyse(exp, r)["variants"].items()} for r in (a, b))
    same = all(getattr(va[v], "label", None) == getattr(vb[v], "label", None) for v in va)
    print(f"{exp.name}: {a.scores.size} cells; max |cell {exp.primary_metric} difference| "
          f"{np.abs(a.scores - b.scores).max():.2e}; max |prediction difference| {pred_diff:.2e}; "
          f"mean {a.scores.mean():.4f} vs {b.scores.mean():.4f}; verdicts {'identical' if same else 'DIFFER'}")
    for v in va:
        print(f"  {v}: {getattr(va[v], 'label', 'baseline')} | {getattr(vb[v], 'label', 'baseline')}")


def _pred(exp, cell, root: Path) -> np.ndarray:
    return track.read_predictions(cell_dir(exp, cell, root) / "predictions.parquet")[1]


if __name__ == "__main__":
    main()
