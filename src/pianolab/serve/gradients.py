"""Why a neural model rated a performance as it did: integrated gradients over its vector features.

For a model fed with vector features (symbolic_mlp, the vector branch of the hybrids), the attribution
of feature i to dimension j is (x_i - b_i) x the mean gradient of output j along the straight line from
the baseline b to the input x (midpoint rule, `STEPS` points). b is the training mean vector: zero after
the run's scaling, which standardises with the training fold's mean. Completeness: per dimension, the
baseline's prediction plus the attributions equals the prediction, up to the quadrature error (tested).
A hybrid keeps its spectrogram fixed along the path (the vector branch is explained, given the audio).
A snapshot ensemble is explained by the mean of its snapshots' attributions (they are linear in the
model). Written in torch (a few lines) rather than with captum, which the project does not install.
Spectrogram-only models get no reasons (`NO_REASONS_SPEC`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pianolab.errors import PianolabError
from pianolab.serve.explain import Explanations

STEPS = 64
NO_REASONS_SPEC = ("explanations are not available for spectrogram-only models: their inputs are time-frequency "
                   "bins, not features with musical names (attention rollout maps exist in `pianolab evaluate` "
                   "diagnostics, not per request)")


def integrated_gradients(f, x, baseline, steps: int = STEPS):
    """(attributions (n, D, K), f(baseline) (K,)) of f: (m, D) -> (m, K) torch tensors at the rows of x
    (n, D), along straight lines from `baseline` (D,); float64 numpy out."""
    import torch

    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    b = torch.as_tensor(np.asarray(baseline), dtype=torch.float32).reshape(1, -1)
    alphas = ((torch.arange(steps, dtype=torch.float32) + 0.5) / steps)[:, None]
    out = []
    for row in x:
        path = (b + alphas * (row[None] - b)).requires_grad_(True)
        y = f(path)
        grads = torch.stack([torch.autograd.grad(y[:, k].sum(), path, retain_graph=k < y.shape[1] - 1)[0]
                             for k in range(y.shape[1])], dim=-1)  # (steps, D, K)
        out.append(((row - b[0])[:, None] * grads.mean(0)).detach().double().numpy())
    with torch.no_grad():
        base = f(b)[0].double().numpy()
    return np.stack(out), base


class NeuralExplanations(Explanations):
    """Explains the predictions of a neural run (folder with checkpoint.pt) fed with vector features."""

    method = "integrated_gradients"

    def __init__(self, folder: Path, steps: int = STEPS):
        import torch

        from pianolab.models import create_model

        folder = Path(folder)
        ckpt = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
        norm = ckpt["norm"]
        if not norm.get("vector_names"):
            raise PianolabError(NO_REASONS_SPEC)
        snapshots = folder / "snapshots.pt"
        states = torch.load(snapshots, map_location="cpu", weights_only=True) if snapshots.is_file() \
            else [ckpt["model"]]
        self.models = []
        for state in states:
            model = create_model(ckpt["model_name"], **ckpt["model_kwargs"]).eval()
            model.load_state_dict(state)
            self.models.append(model)
        self.uses_spec = "spec" in getattr(self.models[0], "inputs", ("vector",))
        self.names = list(norm["vector_names"])
        self.columns, self.selected, self.steps = np.asarray(self.names), None, steps
        self.n_scaled = len(norm["columns"])
        self.y_std, self.y_mean = np.asarray(norm["y_std"], float), np.asarray(norm["y_mean"], float)

    def baseline(self) -> np.ndarray:
        """The training mean of the model vector: zero for the scaled features; a stacked column has no
        saved training mean, so a run with `features.stack` is refused."""
        if len(self.names) != self.n_scaled:
            raise PianolabError("no integrated gradients for a run with stacked predictions (features.stack): "
                                "their training mean is not saved")
        return np.zeros(len(self.names), dtype=np.float32)

    def forward(self, spec=None):
        """The model's prediction as a function of the vector (standardised target scale)."""
        import torch

        if self.uses_spec and spec is None:
            raise PianolabError("integrated gradients of a hybrid need the performance's spectrogram")

        def f(v):
            batch = {"vector": v}
            if self.uses_spec:
                batch["spec"] = spec.expand(len(v), *spec.shape[1:])
            return torch.stack([m(batch).float() for m in self.models]).mean(0)

        return f

    def shap(self, x: np.ndarray, spec=None) -> tuple[np.ndarray, np.ndarray]:
        """(attributions (n, D, 19), baseline prediction (19,)) on the 0..1 label scale, for model vectors
        `x`; `spec` (1, C, F, T): the standardised spectrogram of a hybrid's input."""
        if x.shape[1] != len(self.names):
            raise PianolabError(f"model vector has {x.shape[1]} columns, the model {len(self.names)}")
        values, base = integrated_gradients(self.forward(spec), x, self.baseline(), self.steps)
        return values * self.y_std, base * self.y_std + self.y_mean


def explanations_for(served) -> Explanations:
    """The explainer of a served model: SHAP for estimator runs, integrated gradients for neural runs
    with vector features; PianolabError (saying why) for spectrogram-only runs."""
    if served.is_estimator:
        return Explanations(served.saved)
    if not served.cfg.features.vector:
        raise PianolabError(NO_REASONS_SPEC)
    return NeuralExplanations(served.folder)
