"""Predict the 19 ratings of new performances with a finished run, through the same feature store.

A run folder knows which features its model needs (its `config.yaml`) and holds the
normalisation fitted on its training fold; `predict` computes exactly those features for the
inputs and refuses a model whose feature width no longer matches what the store produces.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pianolab.config import config_from_dict
from pianolab.data.percepiano import DIMENSIONS
from pianolab.errors import PianolabError, fail
from pianolab.train.inputs import Inputs, VectorScaler, load_inputs, load_wav_inputs, with_peer_columns

DEFAULT_MODEL = Path(__file__).resolve().parent / "default_model"


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """MIDI files, and the .mid/.midi files inside folders, in a stable order."""
    out = []
    for p in inputs:
        if p.is_dir():
            out += sorted(x for x in p.rglob("*") if x.suffix.lower() in {".mid", ".midi"})
        elif p.exists():
            out.append(p)
        else:
            raise fail(p, "no such file or folder")
    return out


def _load_run(folder: Path):
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    cfg_path = folder / "config.yaml"
    if not cfg_path.is_file():
        raise fail(folder, "not a run folder (no config.yaml)")
    cfg = config_from_dict(yaml.safe_load(cfg_path.read_text()), str(cfg_path))
    return folder, cfg


AUDIO = {".wav"}
MIDI = {".mid", ".midi"}


def predict_files(paths: list[Path], model: Path | None = None, device: str = "cpu") -> tuple[pd.DataFrame, list[str]]:
    """Predictions (stem + 19 named columns, 0..1) for the files that worked, and one error line
    for each file that did not. MIDI always works; WAV only for spectrogram-only models. A model
    trained with `features.peer_centred` takes the MIDI files of one call as performances of one
    excerpt."""
    folder, cfg = _load_run(model or DEFAULT_MODEL)
    audio_ok = bool(cfg.features.spectrogram) and not cfg.features.vector
    errors, midi, wavs = [], [], []
    for p in paths:
        suffix = p.suffix.lower()
        if suffix in MIDI:
            midi.append(p)
        elif suffix in AUDIO and audio_ok:
            wavs.append(p)
        else:
            errors.append(f"{p}: not a MIDI file" + ("" if suffix not in AUDIO else " (this model needs "
                          f"{_needs(cfg)} from MIDI; only spectrogram-only models take WAV)"))
    frames, names = [], []
    for files, loader in ((midi, lambda fs: load_inputs(cfg.features, fs, device=device, on_error="skip")),
                          (wavs, lambda fs: load_wav_inputs(cfg.features, fs))):
        if not files:
            continue
        inputs = loader(files)
        errors += [f"{p}: unreadable or empty {p.suffix[1:].upper()} file, skipped"
                   for p, ok in zip(files, inputs.ok, strict=True) if not ok]
        keep = np.flatnonzero(inputs.ok)
        if len(keep):
            kept = inputs.subset(keep)
            if cfg.features.peer_centred:  # the files of one call: performances of one excerpt
                kept = with_peer_columns(kept, np.zeros(len(keep)))
            frames.append(_predict(folder, kept, device))
            names += [files[i].stem.strip() for i in keep]
    if not frames:
        return pd.DataFrame(columns=["stem", *DIMENSIONS]), errors
    df = pd.DataFrame(np.concatenate(frames), columns=list(DIMENSIONS))
    df.insert(0, "stem", names)
    return df, errors


def _predict(folder: Path, inputs: Inputs, device: str) -> np.ndarray:
    """Predictions on the 0..1 label scale from a run's checkpoint.pt or model.joblib."""
    import torch

    if (folder / "checkpoint.pt").is_file():
        ckpt = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
        pred, norm = _predict_neural(ckpt, inputs, device, folder), ckpt["norm"]
    elif (folder / "model.joblib").is_file():
        import joblib

        saved = joblib.load(folder / "model.joblib")  # a local run folder of ours; pickles are trusted here
        norm = saved["norm"]
        pred = saved["estimator"].predict(model_vector(inputs, norm, folder))
    else:
        raise fail(folder, "run has no checkpoint.pt or model.joblib (not finished?)")
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
    model = create_model(ckpt["model_name"], **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    batch = {}
    if inputs.spec is not None:
        if inputs.spec.shape[1:3] != (ckpt["model_kwargs"].get("in_channels"), ckpt["model_kwargs"].get("n_freq")):
            raise PianolabError(f"model expects spectrograms of {ckpt['model_kwargs'].get('in_channels')} x "
                                f"{ckpt['model_kwargs'].get('n_freq')} bins, got {inputs.spec.shape[1:3]}")
        batch["spec"] = standardise(torch.from_numpy(inputs.spec).float().to(device), norm["spec_mean"],
                                    norm["spec_std"])
    if inputs.vector is not None:
        batch["vector"] = torch.from_numpy(model_vector(inputs, norm, folder)).to(device)
    with torch.no_grad():
        return model(batch).float().cpu().numpy()
