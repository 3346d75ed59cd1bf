"""In-domain reference for e2_domain_renderer_classic: the baseline's model and features without the
domain shift (trained and tested on the bench's own renders), on the same split and seeds.

    python docs/results/e2_domain_renderer_classic/in_domain.py
"""

import pathlib
import tempfile

import numpy as np

from pianolab.ab.spec import load_experiment
from pianolab.config import replace
from pianolab.train import run

base = load_experiment("experiments/needs_renders/e2_domain_renderer_classic.yaml").config("baseline")
scores = []
with tempfile.TemporaryDirectory() as out:
    for seed in range(3):
        for fold in range(4):
            cfg = replace(base, data={"fold": fold, "repeat": seed}, train={"seed": seed}, domain={"target": None})
            scores.append(run.execute(cfg, pathlib.Path(out) / f"fold{fold}-seed{seed}")["pearson"])
            print(f"seed {seed} fold {fold}: pearson {scores[-1]:.4f}", flush=True)
print(f"mean {np.mean(scores):.4f} sd {np.std(scores, ddof=1):.4f} over {len(scores)} cells")
