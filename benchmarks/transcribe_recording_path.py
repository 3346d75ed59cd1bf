"""The recording path, measured: the same models scored on the clean MIDI and on transcriptions of
rendered audio, with the same excerpt-group cross-validation.

The models are the shipped ones, as their configs define them (configs/default_model.yaml,
configs/with_score_model.yaml). TRANSCRIPTIONS holds one `<PercePiano stem>.mid` per labelled
performance (the transcription of its render; benchmarks/transcribe_gpu.sh). For each model and each
of 4 excerpt-group folds (split `excerpt`, seed 100, as e1_best_symbolic), three rows of out-of-fold predictions:
  clean -> clean              train and test on the performance MIDI (the MIDI path)
  clean -> transcribed        train on the MIDI, test on the transcriptions (a recording given to a model
                              trained on MIDI, as `pianolab predict` does)
  transcribed -> transcribed  train and test on transcriptions
  both -> transcribed, both -> clean   train on the MIDI and the transcriptions of the training items
                              (two rows each), test on either: one model for MIDI and recordings
Pearson r per dimension over all out-of-fold predictions (pooled), mean over the 19 dimensions; seeds
0..S-1 averaged. Writes OUT/results.json and OUT/table.md.

    python benchmarks/transcribe_recording_path.py transcriptions docs/results/recording_path --seeds 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

MODELS = {"default": "configs/default_model.yaml", "with-score": "configs/with_score_model.yaml"}  # shipped


def shipped(name: str) -> tuple[list[str], str, dict]:
    """(vector feature kinds, estimator, its params) of a shipped model's config."""
    from pianolab.config import load_config

    cfg = load_config(Path(MODELS[name]))
    return list(cfg.features.vector), cfg.model.name, dict(cfg.model.params)


def features(kinds: list[str], paths: list[Path], workers: int) -> np.ndarray:
    from pianolab.config import config_from_dict
    from pianolab.train.inputs import load_inputs

    cfg = config_from_dict({"features": {"vector": kinds}})
    inputs = load_inputs(cfg.features, paths, on_error="skip", workers=workers)
    return inputs.vector, inputs.ok


def cv(x_train_all: list, x_tests: dict, y, folds, index, estimator: str, params: dict, seed: int) -> dict:
    """Out-of-fold predictions on each of `x_tests` ({name: features}) of one model per fold fitted on the
    training items of every domain in `x_train_all` (one feature array per domain, same items and labels)."""
    from pianolab.models.classic import create_estimator
    from pianolab.train.inputs import VectorScaler

    pred = {name: np.full_like(y, np.nan) for name in x_tests}
    for fold in folds:
        tr = np.array([index[s] for s in fold.train if s in index])
        te = np.array([index[s] for s in fold.test if s in index])
        x_tr = np.vstack([x[tr] for x in x_train_all])
        scaler = VectorScaler.fit(x_tr)
        model = create_estimator(estimator, seed, **params).fit(scaler.transform(x_tr),
                                                                np.tile(y[tr], (len(x_train_all), 1)))
        for name, x in x_tests.items():
            pred[name][te] = model.predict(scaler.transform(x[te]))
    return pred


def main(argv=None) -> None:
    from pianolab.data.percepiano import DIMENSIONS, load_dataset
    from pianolab.data.splits import make_split
    from pianolab.evaluate.metrics import pearson_cols

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("transcriptions", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated keys of MODELS")
    a = ap.parse_args(argv)
    ds = load_dataset()
    folds = make_split(ds, "excerpt", folds=4, seed=100).repeats[0]
    trans = {p.stem: p for p in a.transcriptions.glob("*.mid")}
    items = [it for it in ds.items if it.stem in trans]
    y = np.array([it.labels for it in items], dtype=np.float64)
    res = {"items": len(items), "labelled": len(ds.items), "split": "excerpt, 4 folds, seed 100",
           "seeds": a.seeds, "metric": "pooled out-of-fold Pearson r per dimension", "models": {}}
    for name in a.models.split(","):
        kinds, est, params = shipped(name)
        t = time.perf_counter()
        xc, okc = features(kinds, [it.midi_path for it in items], a.workers)
        xt, okt = features(kinds, [trans[it.stem] for it in items], a.workers)
        keep = okc & okt
        index = {it.stem: i for i, it in enumerate(np.array(items, dtype=object)[keep])}
        xc, xt, yk = xc[keep], xt[keep], y[keep]
        rows, domains = {}, {"clean": xc, "transcribed": xt}
        for train, tests in {"clean": ("clean", "transcribed"), "transcribed": ("transcribed",),
                             "both": ("transcribed", "clean")}.items():
            x_train = [xc, xt] if train == "both" else [domains[train]]
            preds = [cv(x_train, {t: domains[t] for t in tests}, yk, folds, index, est, params, s)
                     for s in range(a.seeds)]
            for test in tests:
                per = np.mean([pearson_cols(yk, p[test]) for p in preds], axis=0)
                label = f"{train} -> {test}"
                rows[label] = {"mean_r": round(float(np.nanmean(per)), 4),
                               "per_dim": {d: round(float(r), 4) for d, r in zip(DIMENSIONS, per, strict=True)}}
                print(name, label, rows[label]["mean_r"], flush=True)
        res["models"][name] = {"items_used": int(keep.sum()), "features_s": round(time.perf_counter() - t, 1),
                               "rows": rows}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(res, indent=1))
    lines = []
    for name, m in res["models"].items():
        labels = list(m["rows"])
        kinds, est, _ = shipped(name)
        lines += [f"### {name}: {est} on {' + '.join(kinds)} ({m['items_used']} performances)", "",
                  "| dimension | " + " | ".join(labels) + " | loss (clean -> transcribed) |",
                  "|---|" + "---|" * (len(labels) + 1)]
        for d in ["mean", *DIMENSIONS]:
            vals = [m["rows"][lb]["mean_r"] if d == "mean" else m["rows"][lb]["per_dim"][d] for lb in labels]
            lines.append(f"| {'**mean r**' if d == 'mean' else d} | " + " | ".join(f"{v:.3f}" for v in vals)
                         + f" | {vals[1] - vals[0]:+.3f} |")
        lines.append("")
    (a.out / "table.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
