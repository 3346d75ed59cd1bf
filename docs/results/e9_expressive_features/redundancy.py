"""Within-excerpt signal of each symbolic_expressive feature, and how much of it the baseline vector
(symbolic_aligned + symbolic_relative) already holds. Every column and label is centred on its excerpt
group's mean first (the within-excerpt view), over all 1001 performances; no model is fitted on labels.

Run from the repository root, features cached: `.venv/bin/python docs/results/e9_expressive_features/redundancy.py`
"""

import numpy as np

from pianolab.data.percepiano import DIMENSIONS, load_dataset
from pianolab.features.build import load_features
from pianolab.features.expressive import EXPRESSIVE_NAMES
from pianolab.features.kinds import get_kind
from pianolab.features.store import FeatureSpec

BASELINE = ("symbolic_aligned", "symbolic_relative")


def centred(m: np.ndarray, groups: np.ndarray) -> np.ndarray:
    m = m.copy()
    for g in np.unique(groups):
        m[groups == g] -= m[groups == g].mean(0)
    return m


def z(m: np.ndarray) -> np.ndarray:
    s = m.std(0)
    return (m - m.mean(0)) / np.where(s > 0, s, 1.0)


def in_sample_r2(x: np.ndarray, design: np.ndarray) -> float:
    coef, *_ = np.linalg.lstsq(design, x, rcond=None)
    return float(1 - ((x - design @ coef) ** 2).sum() / max(((x - x.mean()) ** 2).sum(), 1e-12))


def main() -> None:
    data = load_dataset("data/percepiano")
    paths = [it.midi_path for it in data.items]
    groups = np.array([it.group for it in data.items])
    x = centred(load_features(paths, FeatureSpec("symbolic_expressive")).matrix().astype(float), groups)
    base = centred(np.hstack([load_features(paths, FeatureSpec(k)).matrix().astype(float) for k in BASELINE]),
                   groups)
    names = [f"{k}:{n}" for k in BASELINE for n in get_kind(k).names]
    y = centred(np.array([it.labels for it in data.items]), groups)
    n = len(y)
    with_labels = z(x).T @ z(y) / n
    with_base = z(x).T @ z(base) / n
    design = np.hstack([z(base), np.ones((n, 1))])
    noise = in_sample_r2(np.random.default_rng(0).standard_normal(n), design)
    print(f"baseline columns {base.shape[1]}: best within-excerpt |r| with a label "
          f"{np.abs(z(base).T @ z(y) / n).max():.2f}; in-sample R2 of pure noise from them {noise:.2f}")
    print("| feature | max within-excerpt abs r with a label (dimension) | closest baseline column | abs r | "
          "in-sample R2 from the baseline |")
    print("|---|---|---|---|---|")
    for i, name in enumerate(EXPRESSIVE_NAMES):
        j, k = np.argmax(np.abs(with_base[i])), np.argmax(np.abs(with_labels[i]))
        print(f"| {name} | {abs(with_labels[i, k]):.2f} ({DIMENSIONS[k]}) | {names[j]} | {abs(with_base[i, j]):.2f} | "
              f"{in_sample_r2(x[:, i], design):.2f} |")


if __name__ == "__main__":
    main()
