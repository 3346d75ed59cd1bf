"""In-domain reference for e2_domain_renderer_classic: the baseline's model and features without the
domain shift (trained and tested on the bench's own renders), same split and seeds."""
import numpy as np, pathlib
from pianolab.ab.spec import load_experiment
from pianolab.config import replace
from pianolab.train import run
exp = load_experiment("experiments/needs_renders/e2_domain_renderer_classic.yaml")
base = exp.config("baseline")
rs = []
for seed in range(3):
    for fold in range(4):
        cfg = replace(base, data={"fold": fold, "repeat": seed}, train={"seed": seed}, domain={"target": None})
        out = run.execute(cfg, pathlib.Path(f"/tmp/indomain/f{fold}s{seed}"))
        rs.append(out["pearson"]); print(seed, fold, round(out["pearson"], 4), flush=True)
print("mean", np.mean(rs), "sd", np.std(rs, ddof=1))
