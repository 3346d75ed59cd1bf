"""`pianolab monitor`: a window of served traffic against the model's training reference.

Reference: the raw vector features of the run's training rows (same split, fold and feature store as
training) and the run's held-out predictions (predictions.parquet). Per feature and per predicted
dimension: PSI over the reference's deciles and scipy's two-sample KS test (p-values adjusted with
Benjamini-Hochberg across the columns of a family); a column drifts when PSI > `psi` and the adjusted
p < `alpha`. Also: the share of served values outside the training range, latency percentiles of the
answers, live accuracy on the feedback, and the transcription quality of the recordings served
(`transcription`: per signal of `pianolab.transcribe.quality` the median and 10th/90th percentiles,
the share of recordings with a signal outside the bounds set from the training MIDIs). An alarm is
raised (exit code 1) when a configured threshold is passed.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pianolab.ab.stats import benjamini_hochberg
from pianolab.data.percepiano import DIMENSIONS
from pianolab.errors import PianolabError
from pianolab.serve import drift
from pianolab.serve.model import ServedModel
from pianolab.serve.store import PredictionLog


@dataclass(frozen=True)
class Thresholds:
    psi: float = 0.25  # a column drifts when its PSI passes this ...
    alpha: float = 0.01  # ... and its BH-adjusted KS p is below this
    feature_share: float = 0.0  # alarm: share of drifted features above this (default: any drifted feature)
    prediction_share: float = 0.0  # alarm: share of drifted predicted dimensions above this
    outside: float = 0.05  # alarm: mean per-feature share of values outside the training range above this
    latency_p95_ms: float | None = None  # alarm: p95 latency of the answers above this
    min_pearson: float | None = None  # alarm: live mean Pearson r on feedback below this
    min_window: int = 20  # fewer served requests: no drift verdict (exit 0, says so)
    transcription_share: float | None = None  # alarm: share of recordings with a suspect transcription above


def reference_features(model: ServedModel, cache: Path | None = None) -> pd.DataFrame:
    """Raw vector features of the run's training rows (cached as parquet in `cache` when given)."""
    from dataclasses import replace

    from pianolab.data.percepiano import load_dataset
    from pianolab.train.inputs import load_inputs
    from pianolab.train.run import fold_roles, val_fraction

    key = hashlib.sha256(f"{model.folder.resolve()}|{(model.folder / 'config.yaml').read_text()}".encode())
    path = None if cache is None else Path(cache) / f"{model.name}-{key.hexdigest()[:12]}.parquet"
    if path is not None and path.is_file():
        return pd.read_parquet(path)
    if not model.cfg.features.vector:
        raise PianolabError(f"{model.name}: no vector features to monitor (spectrogram-only model)")
    dataset = load_dataset(model.cfg.data.root, midi=model.cfg.data.midi)
    rows = fold_roles(model.cfg, dataset, val_fraction(model.cfg))[0].train
    paths = [dataset.items[i].midi_path for i in rows]
    inputs = load_inputs(replace(model.cfg.features, spectrogram=None), paths, on_error="skip")
    df = pd.DataFrame(inputs.vector[inputs.ok], columns=inputs.vector_names)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path)
    return df


def reference_predictions(model: ServedModel) -> pd.DataFrame | None:
    """The run's held-out predictions (0..1, one column per dimension), None when it saved none."""
    if model.labels is None:
        return None
    return model.labels[[f"pred_{d}" for d in DIMENSIONS]].set_axis(list(DIMENSIONS), axis=1)


def _family(ref: pd.DataFrame, cur: pd.DataFrame, t: Thresholds) -> pd.DataFrame:
    """One row per shared column: psi, ks, p, p_adjusted, outside, drifted."""
    cols = [c for c in ref.columns if c in cur.columns]
    rows = []
    for c in cols:
        r, x = ref[c].to_numpy(float), cur[c].to_numpy(float)
        stat, p = drift.ks(r, x)
        rows.append({"column": c, "psi": drift.psi(r, x), "ks": stat, "p": p, "outside": drift.outside(r, x),
                     "ref_median": float(np.nanmedian(r)), "served_median": float(np.nanmedian(x))})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_adjusted"] = benjamini_hochberg(out["p"].to_numpy()).p_adjusted
    out["drifted"] = (out["psi"] > t.psi) & (out["p_adjusted"] < t.alpha)
    return out.sort_values("psi", ascending=False, ignore_index=True)


def live_accuracy(log: PredictionLog, model: str) -> dict | None:
    """Pearson r (mean over dimensions) and MAE (rating points) of `model` on the feedback received."""
    from pianolab.evaluate.metrics import METRICS

    fb, pred = log.feedback(), log.predictions()
    pred = pred[pred["model"] == model].drop_duplicates("input_hash", keep="last")
    both = fb.merge(pred, on="input_hash", suffixes=("_true", ""))
    if len(both) < 3:
        return {"n": len(both), "pearson": None, "mae_rating": None}
    y = both[[f"{d}_true" for d in DIMENSIONS]].to_numpy(float)
    p = both[list(DIMENSIONS)].to_numpy(float)
    return {"n": len(both), "pearson": float(METRICS.get("pearson")(y, p).value),
            "mae_rating": float(7 * np.abs(y - p).mean())}


def analyse(log: PredictionLog, model: ServedModel, t: Thresholds, last: int | None = None,
            since: float | None = None, cache: Path | None = None) -> dict:
    """Every number of the monitoring report, and its alarms."""
    served = log.predictions(since=since, last=last)
    answers = served[served["role"] == "answer"]
    mine = served[served["model"] == model.name]
    out = {"model": model.name, "window": {"requests": int(answers["request_id"].nunique()),
                                           "predictions_by_model": int(len(mine)), "last": last, "since": since},
           "thresholds": asdict(t), "alarms": []}
    lat = answers["latency_ms"].to_numpy(float)
    out["latency_ms"] = ({f"p{q}": float(np.percentile(lat, q)) for q in (50, 95, 99)} if len(lat) else None)
    out["accuracy"] = live_accuracy(log, model.name)
    rejected = log.table("rejected")
    out["rejected"] = int(len(rejected if since is None else rejected[rejected["at"] >= since]))
    out["transcription"] = transcription(answers)
    tr = out["transcription"]
    if t.transcription_share is not None and tr["recordings"] and tr["suspect_share"] > t.transcription_share:
        out["alarms"].append(f"transcription quality: {tr['suspect']}/{tr['recordings']} recordings suspect "
                             f"({tr['suspect_share']:.0%} > {t.transcription_share:.0%}): "
                             + ", ".join(f"{k} {v}x" for k, v in tr["reasons"].items()))
    if out["window"]["requests"] < t.min_window:
        out["note"] = f"{out['window']['requests']} served requests < min_window {t.min_window}: no drift verdict"
        out["features"] = out["predictions"] = pd.DataFrame()
        return out
    feats = pd.DataFrame([f for f in answers["features"].map(_json) if f is not None])
    out["features"] = _family(reference_features(model, cache), feats, t) if len(feats) else pd.DataFrame()
    ref_pred = reference_predictions(model)
    out["predictions"] = (_family(ref_pred, mine[list(DIMENSIONS)], t) if ref_pred is not None and len(mine)
                          else pd.DataFrame())
    _alarms(out, t)
    return out


def transcription(answers: pd.DataFrame) -> dict:
    """The transcription-quality signals of the recordings among `answers` (rows with `quality`)."""
    from collections import Counter

    from pianolab.transcribe.quality import BOUNDS, SIGNALS

    rows = [q for q in (answers["quality"].map(_json) if "quality" in answers else []) if q is not None]
    reasons = Counter(r.split(" ")[0] for q in rows for r in q.get("suspect", []))
    n_bad = sum(bool(q.get("suspect")) for q in rows)
    signals = {}
    for name in SIGNALS:
        v = np.array([q[name] for q in rows if q.get(name) is not None], dtype=float)
        if len(v):
            signals[name] = {"n": len(v), "p10": float(np.percentile(v, 10)), "median": float(np.median(v)),
                             "p90": float(np.percentile(v, 90)), "bounds": list(BOUNDS.get(name, (None, None)))}
    return {"recordings": len(rows), "suspect": n_bad, "suspect_share": n_bad / len(rows) if rows else 0.0,
            "reasons": dict(reasons.most_common()), "signals": signals}


def _json(text):
    import json

    return json.loads(text) if isinstance(text, str) else None  # NULL: None, or NaN in a column of NULLs


def _alarms(out: dict, t: Thresholds) -> None:
    f, p = out["features"], out["predictions"]
    if len(f):
        share = float(f["drifted"].mean())
        out["feature_drift_share"] = share
        if share > t.feature_share:
            out["alarms"].append(f"feature drift: {int(f['drifted'].sum())}/{len(f)} features drifted "
                                 f"({share:.0%} > {t.feature_share:.0%}): {', '.join(f[f['drifted']]['column'][:8])}")
        out["outside_share"] = float(f["outside"].mean())
        if out["outside_share"] > t.outside:
            out["alarms"].append(f"inputs outside the training range: mean share {out['outside_share']:.1%} "
                                 f"> {t.outside:.0%}")
    if len(p):
        share = float(p["drifted"].mean())
        out["prediction_drift_share"] = share
        if share > t.prediction_share:
            out["alarms"].append(f"prediction drift: {int(p['drifted'].sum())}/{len(p)} dimensions drifted: "
                                 f"{', '.join(p[p['drifted']]['column'][:8])}")
    lat = out["latency_ms"]
    if t.latency_p95_ms is not None and lat and lat["p95"] > t.latency_p95_ms:
        out["alarms"].append(f"latency p95 {lat['p95']:.0f} ms > {t.latency_p95_ms:g} ms")
    acc = out["accuracy"]
    if t.min_pearson is not None and acc and acc["pearson"] is not None and acc["pearson"] < t.min_pearson:
        out["alarms"].append(f"live accuracy: mean Pearson r {acc['pearson']:.3f} < {t.min_pearson:g} "
                             f"on {acc['n']} rated performances")
