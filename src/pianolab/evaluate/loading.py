"""Rebuild a finished run's model and its test inputs exactly as training saw them (feature store,
training-fold normalisation), for the sections that need the model itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pianolab.data.percepiano import Dataset
from pianolab.evaluate.runs import Probe, Run, model_device


def load_neural(run: Run):
    """(model in eval mode on the probe device, norm dict) from checkpoint.pt (weights only, no pickled
    code). The probe device is the GPU when there is one: the landscape, robustness and adversarial
    sections run hundreds of forward passes."""
    import torch

    from pianolab.models import create_model
    from pianolab.train.trainer import pick_device

    ckpt = torch.load(run.folder / "checkpoint.pt", map_location="cpu", weights_only=True)
    model = create_model(ckpt["model_name"], **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["model"])
    return model.to(pick_device("auto")).eval(), ckpt["norm"]


def _norm(run: Run) -> dict:
    if run.neural:
        import torch

        return torch.load(run.folder / "checkpoint.pt", map_location="cpu", weights_only=True)["norm"]
    from pianolab.models.persist import MODEL_FILE, load_model

    return load_model(run.folder / MODEL_FILE)["norm"]  # skops: trusted types only, no code runs


def vector_inputs(run: Run, dataset: Dataset, idx: np.ndarray, spectrogram: bool = True):
    """Store features of the items `idx` (a run's test fold) before scaling (without the spectrograms if
    not `spectrogram`), with peer columns over those items when the run used them (the test fold is one
    role, as in training)."""
    import dataclasses

    from pianolab.train.inputs import load_inputs, with_peer_columns

    features = run.cfg.features if spectrogram else dataclasses.replace(run.cfg.features, spectrogram=None)
    inputs = load_inputs(features, [dataset.items[i].midi_path for i in idx])
    if run.cfg.features.peer_centred:
        inputs = with_peer_columns(inputs, dataset.column("group")[idx])
    return inputs


@dataclass
class VectorProbe:
    """Scaled vector inputs `X` (n, d) of a run's test items, their labels `y`, excerpt `groups`,
    feature `names`, and `predict(X) -> (n, 19)` on the 0..1 scale (other inputs held fixed)."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    names: list[str]
    predict: Callable[[np.ndarray], np.ndarray]


def vector_probe(run: Run, dataset: Dataset) -> VectorProbe:
    """Test-fold vector inputs of a sklearn or neural (vector / hybrid) run, through the feature store."""
    from pianolab.predict import model_vector
    from pianolab.train.trainer import standardise

    idx, y, _ = run.predictions(dataset)
    inputs = vector_inputs(run, dataset, idx)
    keep = np.flatnonzero(inputs.ok)
    norm = _norm(run)
    X = model_vector(inputs.subset(keep), norm, run.folder)
    y_mean, y_std = np.asarray(norm["y_mean"]), np.asarray(norm["y_std"])
    if run.neural:
        import torch

        model, _ = load_neural(run)
        device, fixed = model_device(model), {}
        if inputs.spec is not None:
            fixed["spec"] = standardise(torch.from_numpy(inputs.spec[keep]).float().to(device), norm["spec_mean"],
                                        norm["spec_std"])

        def predict(Xs: np.ndarray) -> np.ndarray:
            outs = []
            with torch.no_grad():  # chunks of one test fold: the fixed inputs line up row by row
                for start in range(0, len(Xs), len(X)):
                    vec = torch.from_numpy(np.asarray(Xs[start : start + len(X)], dtype=np.float32)).to(device)
                    outs.append(model({**fixed, "vector": vec}).float().cpu().numpy())
            return np.concatenate(outs) * y_std + y_mean
    else:
        from pianolab.models.persist import MODEL_FILE, load_model

        est = load_model(run.folder / MODEL_FILE)["estimator"]
        predict = lambda Xs: est.predict(Xs) * y_std + y_mean  # noqa: E731
    return VectorProbe(X, y[keep], dataset.column("group")[idx[keep]], list(norm["vector_names"]), predict)


def render_waves(run: Run, paths) -> list[np.ndarray]:
    """Full renderings of MIDI files with the run's renderer (mono float, 16 kHz)."""
    from pianolab.render.renderers import make_renderer

    renderer = make_renderer(run.cfg.features.renderer)
    return [renderer.render(p.read_bytes()) for p in paths]


def spectrogram_featuriser(run: Run, norm: dict, device) -> Callable:
    """waves -> normalised (n, C, F, T) float tensor on `device`, as the feature store and training
    made it."""
    import torch

    from pianolab.features.spectrogram import LENGTH_POLICIES, compute_spectrograms
    from pianolab.train.inputs import _fit_frames, feature_spec, frames_for
    from pianolab.train.trainer import standardise

    f = run.cfg.features
    spec = feature_spec(f, f.spectrogram)
    policy = LENGTH_POLICIES.get(spec.length_policy)
    frames = frames_for(f)

    def featurise(waves: list[np.ndarray]) -> torch.Tensor:
        cut = [policy(np.asarray(w, dtype=np.float32), spec.sample_rate, spec.seconds, spec.max_seconds)
               for w in waves]
        specs = compute_spectrograms(cut, spec.kind, spec.sample_rate, spec.frame_rate)
        arr = np.stack([_fit_frames(s.astype(np.float32), frames) for s in specs])
        return standardise(torch.from_numpy(arr).to(device), norm["spec_mean"], norm["spec_std"])

    return featurise


def build_probe(run: Run, dataset: Dataset, n_items: int) -> Probe:
    """Model + the first `n_items` test items of a neural run: rendered audio, spectrogram (and vector)."""
    import torch

    from pianolab.predict import model_vector

    model, norm = load_neural(run)
    idx, y, _ = run.predictions(dataset)
    fold, idx, y = idx, idx[:n_items], y[:n_items]
    paths = [dataset.items[i].midi_path for i in idx]
    batch, waves, featurise = {}, None, None
    if run.cfg.features.spectrogram:
        waves = render_waves(run, paths)
        featurise = spectrogram_featuriser(run, norm, model_device(model))
        batch["spec"] = featurise(waves)
    if run.cfg.features.vector:  # the whole fold's features: peer columns are over all of it
        inputs = vector_inputs(run, dataset, fold, spectrogram=False).subset(np.arange(len(idx)))
        batch["vector"] = torch.from_numpy(model_vector(inputs, norm, run.folder)).to(model_device(model))
    return Probe(model, batch, y, [dataset.items[i].stem for i in idx], np.asarray(norm["y_mean"]),
                 np.asarray(norm["y_std"]), waves, featurise)
