"""Predict the 19 ratings of new performances with a finished run, through the same feature store.

A run folder knows which features its model needs (its `config.yaml`) and holds the
normalisation fitted on its training fold; `predict` computes exactly those features for the
inputs and refuses a model whose feature width no longer matches what the store produces.
Without `model`, each performance goes to a shipped model (`SHIPPED_MODELS`): `with-score` when a
score is given for it or found (a PercePiano name), else `default`, which needs only the performance;
a recording, once transcribed, goes to their twins trained on transcriptions (`recording`,
`recording-with-score`).
Models load without pickles (`pianolab.models.persist`).
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pianolab.audio import AUDIO_SUFFIXES
from pianolab.config import config_from_dict
from pianolab.data.percepiano import DIMENSIONS
from pianolab.errors import PianolabError, fail
from pianolab.train.inputs import Inputs, VectorScaler, hears_audio, load_inputs, load_wav_inputs, with_peer_columns

SHIPPED = Path(__file__).resolve().parent / "models_shipped"
SHIPPED_MODELS = {"default": SHIPPED / "default", "with-score": SHIPPED / "with_score",
                  "recording": SHIPPED / "recording", "recording-with-score": SHIPPED / "recording_with_score"}
FOR_RECORDINGS = {"default": "recording", "with-score": "recording-with-score"}  # trained on transcriptions
DEFAULT_MODEL = SHIPPED_MODELS["default"]
AUDIO = set(AUDIO_SUFFIXES)  # recordings: transcribed to performance MIDI first (pianolab.transcribe)
MIDI = {".mid", ".midi"}
COLUMNS = ["path", "stem", "model", *DIMENSIONS]


class PredictWarning(UserWarning):
    """Something the user should know about a prediction that still ran (printed as `warning: ...`)."""


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """MIDI files, and the .mid/.midi files inside folders, in a stable order; any other path is kept
    as given (a missing one is reported by `predict_files` among the other results)."""
    out = []
    for p in map(Path, inputs):
        if p.is_dir():
            out += sorted(x for x in p.rglob("*") if x.suffix.lower() in MIDI | AUDIO)
        else:
            out.append(p)
    return out


def read_manifest(path: Path) -> tuple[list[Path], dict[Path, Path], dict[Path, str]]:
    """(performances, {performance: score}, {performance: group}) of a CSV with a header row and the
    columns `performance`, optional `score` and `group`; relative paths resolve against its folder."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise fail(path, f"unreadable manifest ({e.__class__.__name__}: {e})") from None
    header = set(rows[0]) if rows else set()
    if "performance" not in header:
        raise fail(path, "manifest needs a header row with a 'performance' column (optional: score, group)")
    unknown = sorted(header - {"performance", "score", "group"})
    if unknown:
        raise fail(path, f"unknown manifest column(s) {', '.join(unknown)}; valid: performance, score, group")
    here = path.parent
    perfs, scores, groups = [], {}, {}
    for row in rows:
        perf = here / row["performance"].strip()
        perfs.append(perf)
        if (row.get("score") or "").strip():
            scores[perf] = here / row["score"].strip()
        if (row.get("group") or "").strip():
            groups[perf] = row["group"].strip()
    return perfs, scores, groups


def resolve_model(model: Path | str | None) -> Path:
    """A shipped model's folder by name ('default', 'with-score'), or the run folder given."""
    if model is None:
        return DEFAULT_MODEL
    return SHIPPED_MODELS.get(str(model), Path(model))


def _load_run(folder: Path):
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    cfg_path = folder / "config.yaml"
    if not cfg_path.is_file():
        raise fail(folder, "not a run folder (no config.yaml)")
    cfg = config_from_dict(yaml.safe_load(cfg_path.read_text()), str(cfg_path))
    return folder, cfg


def needs_score(cfg) -> bool:
    """Whether the run's features read the performance's score."""
    from pianolab.features.kinds import get_kind

    return any(get_kind(k).uses_score for k in cfg.features.vector)


def model_name(folder: Path) -> str:
    """The shipped name of a model folder, else its path."""
    return next((name for name, f in SHIPPED_MODELS.items() if f.resolve() == Path(folder).resolve()), str(folder))


@dataclass
class Request:
    """What one call predicts: performances, the scores and excerpt groups given for some of them."""

    paths: list[Path]
    scores: dict[Path, Path]
    groups: dict[Path, str]


def predict_files(paths: list[Path], model: Path | str | None = None, device: str = "cpu",
                  scores: dict[Path, Path] | None = None,
                  groups: dict[Path, str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """`predict_table`'s predictions as stem + the 19 named columns (0..1), and its error lines."""
    df, errors = predict_table(paths, model, device, scores, groups)
    return df[["stem", *DIMENSIONS]], errors


def predict_batch(paths: list[Path], model: Path | str | None = None, device: str = "cpu",
                  scores: dict[Path, Path] | None = None,
                  groups: dict[Path, str] | None = None) -> tuple[pd.DataFrame, list[str], list[str]]:
    """`predict_table` on one batch of `pianolab predict`, with its PredictWarnings as lines (a batch may
    run in another process, where warnings would not reach the user)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df, errors = predict_table(paths, model, device, scores, groups)
    return df, errors, [str(w.message) for w in caught if issubclass(w.category, PredictWarning)]


def predict_table(paths: list[Path], model: Path | str | None = None, device: str = "cpu",
                  scores: dict[Path, Path] | None = None,
                  groups: dict[Path, str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Predictions (path, stem, model + 19 named columns, 0..1) for the files that worked, and one
    error line for each file that did not. `scores`: the score file of some performances (MIDI or
    MusicXML); `groups`: their excerpt, for a peer-centred model. Without `model`, a performance with a
    score (given or found) goes to the shipped `with-score` model, the others to `default` (a recording:
    to `recording-with-score` and `recording`). Recordings are transcribed to MIDI first, except for a
    model whose features all come from audio (`train.inputs.hears_audio`), which hears them as they are.
    Warnings (e.g. a peer-centred model given unrelated files) are issued as `PredictWarning`."""
    from pianolab.features.scores import given_scores

    req = Request([Path(p) for p in paths], {Path(k): Path(v) for k, v in (scores or {}).items()},
                  {Path(k): v for k, v in (groups or {}).items()})
    req, recordings, errors = (req, {}, []) if model is not None and _hears_audio(resolve_model(model)) \
        else _transcribed(req)
    frames = []
    with given_scores(req.scores):
        routes: dict[Path, list[Path]] = {}
        for p in req.paths:
            problem = _input_problem(p)
            if problem:
                errors.append(f"{p}: {problem}")
                continue
            chosen = resolve_model(model) if model is not None else SHIPPED_MODELS[_shipped_for(p, recordings)]
            routes.setdefault(chosen, []).append(p)
        for folder, files in routes.items():
            df, errs = _predict_with(folder, files, req, device)
            frames.append(df)
            errors += errs
    frames = [f for f in frames if len(f)]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    return _as_recordings(out, errors, recordings)


def _shipped_for(path: Path, recordings: dict[Path, Path]) -> str:
    """The shipped model for a performance: `with-score` when its score is given or found, else `default`;
    their `recording` twins (trained on transcriptions) when it is a recording's transcription."""
    from pianolab.features.scores import find_score

    slot = "with-score" if find_score(path) is not None else "default"
    return FOR_RECORDINGS[slot] if path in recordings else slot


def _hears_audio(folder: Path) -> bool:
    """Whether the model in `folder` reads audio only (`train.inputs.hears_audio`): it takes recordings as they are."""
    return hears_audio(_load_run(folder)[1].features)


def _transcribed(req: Request) -> tuple[Request, dict[Path, Path], list[str]]:
    """`req` with each recording replaced by its performance MIDI (`pianolab.transcribe`, cached; on the
    GPU when there is one), {transcription: recording}, and one error line per unreadable recording."""
    audio = [p for p in req.paths if p.suffix.lower() in AUDIO]
    if not audio:
        return req, {}, []
    from pianolab.transcribe import transcribe_files

    midi, errors = transcribe_files(audio)
    sub = lambda p: midi.get(p, p)
    kept = [sub(p) for p in req.paths if p.suffix.lower() not in AUDIO or p in midi]
    return (Request(kept, {sub(k): v for k, v in req.scores.items()}, {sub(k): v for k, v in req.groups.items()}),
            {m: a for a, m in midi.items()}, errors)


def _as_recordings(df: pd.DataFrame, errors: list[str], recordings: dict[Path, Path]):
    """Rows and error lines of transcriptions named by their recordings again."""
    if not recordings:
        return df, errors
    names = {str(m): str(a) for m, a in recordings.items()}
    df["path"] = [names.get(p, p) for p in df["path"]]
    return df, [next((names[m] + e[len(m):] for m in names if e.startswith(m + ": ")), e) for e in errors]


def _input_problem(path: Path) -> str | None:
    """Why `path` cannot be predicted at all (before any model is chosen), or None."""
    from pianolab.features.midicheck import midi_problem

    suffix = path.suffix.lower()
    if suffix in MIDI or not path.is_file():
        return midi_problem(path)
    if suffix in AUDIO:
        return None
    return (f"not a MIDI or audio file ({suffix or 'no extension'}; predict takes .mid/.midi and recordings: "
            f"{', '.join(AUDIO_SUFFIXES)})")


def _predict_with(folder: Path, files: list[Path], req: Request, device: str) -> tuple[pd.DataFrame, list[str]]:
    """Predictions of one model for its files, and the error lines of those it could not predict."""
    from pianolab.features.scores import find_score

    folder, cfg = _load_run(folder)
    name = model_name(folder)
    audio_ok = _hears_audio(folder)
    errors, midi, wavs = [], [], []
    for p in files:
        if p.suffix.lower() in MIDI:
            if needs_score(cfg) and find_score(p) is None:
                errors.append(f"{p}: no score given or found for {p.name} (model {name} needs one: pass "
                              "--score FILE or a manifest with a score column)")
            else:
                midi.append(p)
        elif audio_ok:
            wavs.append(p)
        else:
            errors.append(f"{p}: this model needs {_needs(cfg)} from MIDI; only models whose features all come "
                          "from audio take recordings")
    frames = []
    for batch, loader in ((midi, lambda fs: load_inputs(cfg.features, fs, device=device, on_error="skip")),
                          (wavs, lambda fs: load_wav_inputs(cfg.features, fs))):
        if not batch:
            continue
        inputs = loader(batch)
        errors += [f"{p}: {_feature_problem(p, cfg)}" for p, ok in zip(batch, inputs.ok, strict=True) if not ok]
        keep = np.flatnonzero(inputs.ok)
        if not len(keep):
            continue
        kept, kept_paths = inputs.subset(keep), [batch[i] for i in keep]
        if cfg.features.peer_centred:
            kept = with_peer_columns(kept, peer_groups(kept_paths, req.groups))
        df = pd.DataFrame(_predict(folder, kept, device), columns=list(DIMENSIONS))
        df.insert(0, "model", name)
        df.insert(0, "stem", [p.stem.strip() for p in kept_paths])
        df.insert(0, "path", [str(p) for p in kept_paths])
        frames.append(df)
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)), errors


def _feature_problem(path: Path, cfg) -> str:
    """The feature store's reason for failing on `path` (computed again, for this one file)."""
    from pianolab.features.build import load_features
    from pianolab.train.inputs import feature_spec

    kinds = ([cfg.features.spectrogram] if cfg.features.spectrogram else []) + list(cfg.features.vector)
    for kind in kinds:
        try:
            load_features([path], feature_spec(cfg.features, kind), on_error="raise")
        except PianolabError as e:
            return str(e).removeprefix(f"{path}: ")
    return f"unreadable or empty {path.suffix[1:].upper()} file"


def peer_groups(paths: list[Path], groups: dict[Path, str]) -> np.ndarray:
    """The excerpt of each performance for peer-centred features: the group given (manifest), else its
    PercePiano name's group; files with neither are taken as one excerpt, with a warning."""
    from pianolab.data.percepiano import parse_stem
    from pianolab.features.scores import real

    out, unknown = [], []
    for p in paths:
        group = groups.get(p)
        if group is None:
            try:
                group = parse_stem(Path(real(p)).stem).group
            except PianolabError:
                group, _ = "?", unknown.append(p)
        out.append(group)
    if unknown and len(paths) > 1:
        warnings.warn(PredictWarning(
            f"peer-centred model: {len(unknown)} file(s) without an excerpt group (no manifest group column, "
            "no PercePiano name) are taken as performances of one excerpt; give each its group in a manifest "
            "if they are unrelated"), stacklevel=2)
    return np.asarray(out)


def _predict(folder: Path, inputs: Inputs, device: str) -> np.ndarray:
    """Predictions on the 0..1 label scale from a run's checkpoint.pt or model.skops."""
    import torch

    from pianolab.models.persist import MODEL_FILE, load_model, refuse_pickles

    if (folder / "checkpoint.pt").is_file():
        ckpt = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
        pred, norm = _predict_neural(ckpt, inputs, device, folder), ckpt["norm"]
    elif (folder / MODEL_FILE).is_file():
        saved = load_model(folder / MODEL_FILE)  # skops: trusted types only, nothing runs
        norm = saved["norm"]
        pred = saved["estimator"].predict(model_vector(inputs, norm, folder))
    else:
        refuse_pickles(folder)
        raise fail(folder, f"run has no checkpoint.pt or {MODEL_FILE} (not finished?)")
    return np.asarray(pred) * np.asarray(norm["y_std"]) + np.asarray(norm["y_mean"])


def _needs(cfg) -> str:
    kinds = ([cfg.features.spectrogram] if cfg.features.spectrogram else []) + list(cfg.features.vector)
    return ", ".join(kinds)


def model_vector(inputs: Inputs, norm: dict, folder: Path) -> np.ndarray:
    """The vectors of `inputs` as the model of the run `folder` takes them: scaled and selected with its
    training statistics, its stacked predictions appended (features.stack); a one-line error when the
    feature store no longer produces the features it was trained on."""
    from pianolab.features.stack import with_saved_stack

    cols = np.asarray(norm["columns"], dtype=int)
    names = norm["vector_names"][: len(cols)]  # then the stacked predictions' names, if any
    scaler = VectorScaler.from_state(norm["scaler"])
    if inputs.vector.shape[1] != len(scaler.mean):
        raise fail(folder, f"model was trained on {len(scaler.mean)} vector features but the feature store "
                           f"now produces {inputs.vector.shape[1]}; retrain the model")
    if [inputs.vector_names[c] for c in cols] != names:
        raise fail(folder, "feature names differ from the model's; retrain the model")
    return with_saved_stack(scaler.transform(inputs.vector)[:, cols], folder)


def _predict_neural(ckpt: dict, inputs: Inputs, device: str, folder: Path) -> np.ndarray:
    import torch

    from pianolab.models import create_model
    from pianolab.train.trainer import standardise

    norm = ckpt["norm"]
    model = create_model(ckpt["model_name"], **ckpt["model_kwargs"]).to(device).eval()
    batch = {}
    if inputs.spec is not None:
        if inputs.spec.shape[1:3] != (ckpt["model_kwargs"].get("in_channels"), ckpt["model_kwargs"].get("n_freq")):
            raise PianolabError(f"model expects spectrograms of {ckpt['model_kwargs'].get('in_channels')} x "
                                f"{ckpt['model_kwargs'].get('n_freq')} bins, got {inputs.spec.shape[1:3]}")
        batch["spec"] = standardise(torch.from_numpy(inputs.spec).float().to(device), norm["spec_mean"],
                                    norm["spec_std"])
    if inputs.vector is not None:
        batch["vector"] = torch.from_numpy(model_vector(inputs, norm, folder)).to(device)
    snapshots = folder / "snapshots.pt"  # ensemble.snapshots: the run's prediction is their mean
    states = torch.load(snapshots, map_location="cpu", weights_only=True) if snapshots.is_file() else [ckpt["model"]]
    out = []
    with torch.no_grad():
        for state in states:
            model.load_state_dict(state)
            out.append(model(batch).float().cpu().numpy())
    return np.mean(out, axis=0)
