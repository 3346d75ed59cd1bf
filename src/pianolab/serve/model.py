"""A registered run loaded once and kept in memory, predicting one uploaded file at a time.

MIDI into an estimator run (scikit-learn model saved by `pianolab.models.persist`, loaded from trusted
types only) takes the in-memory path: the run's features from the feature store, its saved scaling,
its estimator. Anything else (a recording, a neural run) goes through `pianolab.predict.predict_files`,
so the server accepts whatever `pianolab predict` accepts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pianolab.data.percepiano import DIMENSIONS
from pianolab.errors import PianolabError, fail
from pianolab.features.scores import find_score

CARD = "model_card.json"
SCALE = "0..1 = rating / 7 (the PercePiano labels' scale); rating = value x 7"


@dataclass
class Prediction:
    values: np.ndarray  # (19,) on the 0..1 label scale
    features: dict[str, float] | None  # the raw vector features (None for inputs without them)
    vector: np.ndarray | None  # the model's input vector (scaled, selected), for explanations
    quality: dict | None = None  # a recording's transcription-quality signals (pianolab.transcribe.quality)


def load_saved(folder: Path) -> dict:
    """The saved estimator dict ({"estimator", "norm", ...}) of an estimator run, without pickles."""
    from pianolab.models import persist

    path = Path(folder) / persist.MODEL_FILE
    if path.is_file():
        return persist.load_model(path)
    persist.refuse_pickles(folder)
    raise fail(folder, f"run has no {persist.MODEL_FILE} (not an estimator run, or not finished)")


class ServedModel:
    """Run folder `folder` served under `name`."""

    def __init__(self, name: str, folder: Path):
        from pianolab.predict import _load_run

        self.name = name
        self.folder, self.cfg = _load_run(Path(folder))
        self.is_estimator = not (self.folder / "checkpoint.pt").is_file()
        self.saved = load_saved(self.folder) if self.is_estimator else None

    @cached_property
    def card(self) -> dict:
        """model_card.json when the run has one, else what its config.yaml and meta.json say."""
        path = self.folder / CARD
        if path.is_file():
            card = json.loads(path.read_text())
        else:
            meta = self.folder / "meta.json"
            card = {"config": yaml.safe_load((self.folder / "config.yaml").read_text()),
                    "meta": json.loads(meta.read_text()) if meta.is_file() else {}}
        return {"name": self.name, "folder": str(self.folder), "dimensions": list(DIMENSIONS), "scale": SCALE,
                "source": CARD if path.is_file() else "config.yaml + meta.json", **card}

    @cached_property
    def labels(self) -> pd.DataFrame | None:
        """The run's held-out labels and predictions (predictions.parquet), None when it has none."""
        path = self.folder / "predictions.parquet"
        return pd.read_parquet(path) if path.is_file() else None

    def predict(self, path: Path, kind: str, score: Path | None = None) -> Prediction:
        """The 19 ratings of the file at `path` (`kind` from `sniff`, `score` an optional score file);
        PianolabError for a file that cannot be predicted."""
        from pianolab.predict import needs_score

        if kind == "midi":
            from pianolab.features.midicheck import midi_problem

            problem = midi_problem(path)
            if problem:
                raise fail(path.name, problem)
            if needs_score(self.cfg) and score is None and find_score(path) is None:
                raise fail(path.name, f"model {self.name} needs the score of the performance: upload it as `score`")
            if self.is_estimator and self.cfg.features.vector and not self.cfg.features.spectrogram:
                return self._predict_vector(path, score)
        from pianolab.predict import predict_files

        df, errors = predict_files([path], self.folder, scores={path: score} if score else None)
        if errors or df.empty:
            raise PianolabError(errors[0] if errors else f"{path.name}: not predicted")
        features = self.features(path, kind, score)
        vector = self.vector_from_features(features) if features else None  # a neural run's, for its reasons
        quality = None if kind == "midi" else self.recording_quality(path)
        return Prediction(df[list(DIMENSIONS)].to_numpy(dtype=float)[0], features, vector, quality)

    def recording_quality(self, path: Path) -> dict:
        """The transcription-quality signals of a recording just predicted (audio only for a model that
        hears the recording itself); a failure is recorded, never raised."""
        from pianolab.predict import _hears_audio
        from pianolab.transcribe.quality import recording_quality

        try:
            return recording_quality(path, transcribed=not _hears_audio(self.folder))
        except PianolabError as e:
            return {"error": str(e).replace(f"{path.parent}/", ""), "suspect": ["quality not measured"]}

    def features(self, path: Path, kind: str, score: Path | None = None) -> dict[str, float] | None:
        """The raw vector features of a MIDI input (for the log), None otherwise."""
        if kind != "midi" or not self.cfg.features.vector:
            return None
        inputs = self._inputs(path, score)
        return dict(zip(inputs.vector_names, map(float, inputs.vector[0]), strict=True))

    def vector_from_features(self, features: dict[str, float] | None) -> np.ndarray:
        """The model vector (1, D) of logged raw features (to explain a served prediction again)."""
        from pianolab.predict import model_vector
        from pianolab.train.inputs import Inputs

        if not self.cfg.features.vector or not features:
            raise PianolabError(f"no explanation: {self.name} is not a run fed with MIDI features")
        vec = np.array([[features[k] for k in features]], dtype=np.float32)
        return model_vector(Inputs(None, vec, list(features), np.ones(1, bool)), self.norm, self.folder)

    @cached_property
    def norm(self) -> dict:
        """The run's saved scaling (model.skops or checkpoint.pt)."""
        if self.is_estimator:
            return self.saved["norm"]
        import torch

        return torch.load(self.folder / "checkpoint.pt", map_location="cpu", weights_only=True)["norm"]

    def explain_context(self, path: Path, kind: str, score: Path | None = None) -> dict:
        """What the explainer needs besides the model vector: a hybrid's standardised spectrogram."""
        if self.is_estimator or not (self.cfg.features.spectrogram and self.cfg.features.vector):
            return {}
        import torch

        from pianolab.features.scores import given_scores
        from pianolab.train.inputs import load_inputs
        from pianolab.train.trainer import standardise

        if kind != "midi":
            raise PianolabError("explanations of a hybrid need a MIDI performance")
        with given_scores({path: score} if score else {}):
            inputs = load_inputs(replace(self.cfg.features, vector=[]), [path], on_error="skip")
        if not inputs.ok[0] or inputs.spec is None:
            raise fail(path.name, "spectrogram could not be computed for the explanation")
        return {"spec": standardise(torch.from_numpy(inputs.spec).float(), self.norm["spec_mean"],
                                    self.norm["spec_std"])}

    def _inputs(self, path: Path, score: Path | None = None):
        from pianolab.features.scores import given_scores
        from pianolab.train.inputs import load_inputs, with_peer_columns

        with given_scores({path: score} if score else {}):
            inputs = load_inputs(replace(self.cfg.features, spectrogram=None), [path], on_error="skip")
        if not inputs.ok[0]:
            raise fail(path.name, "features could not be computed from this MIDI file")
        return with_peer_columns(inputs, np.zeros(1)) if self.cfg.features.peer_centred else inputs

    def _predict_vector(self, path: Path, score: Path | None) -> Prediction:
        from pianolab.predict import model_vector

        inputs = self._inputs(path, score)
        norm = self.saved["norm"]
        x = model_vector(inputs, norm, self.folder)
        z = np.asarray(self.saved["estimator"].predict(x), dtype=float).reshape(1, -1)
        values = z[0] * np.asarray(norm["y_std"]) + np.asarray(norm["y_mean"])
        raw = dict(zip(inputs.vector_names, map(float, inputs.vector[0]), strict=True))
        return Prediction(values, raw, x)
