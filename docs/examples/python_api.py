"""pianolab from Python: rate performances, then read an experiment's results into pandas.

Run from the repository root after the quickstart (`pianolab ab run experiments/quickstart.yaml`):

    python docs/examples/python_api.py [EXPERIMENT.yaml] [MIDI ...]
"""

import sys
from pathlib import Path

from pianolab.ab.table import results_table
from pianolab.predict import predict_files

experiment = sys.argv[1] if len(sys.argv) > 1 else "experiments/quickstart.yaml"
midi = [Path(p) for p in sys.argv[2:]] or sorted(Path("data/percepiano/midi").glob("*.mid"))[:3]

# 1. The 19 ratings (0..1 = rating / 7) of some performances, with the shipped model.
ratings, errors = predict_files(midi)
print(ratings.set_index("stem").iloc[:, :4].round(3).to_string())
for e in errors:
    print("error:", e)

# 2. Every finished cell of an experiment, its metrics recomputed from the saved predictions.
cells = results_table(experiment)
print(cells.groupby("variant")[["pearson", "r2", "within_excerpt_pearson"]].agg(["mean", "std"]).round(3))
