"""A finished run folder (`Run`) and a rebuilt model with a batch of its test items (`Probe`): what the
evaluation sections read, below both `context` (which groups them) and `loading` (which builds probes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from pianolab import track
from pianolab.config import RunConfig, config_from_dict
from pianolab.data.percepiano import Dataset
from pianolab.errors import fail


@dataclass(frozen=True)
class Run:
    """One finished run folder and its config; `variant` names its experiment arm."""

    folder: Path
    cfg: RunConfig
    variant: str

    @classmethod
    def load(cls, folder: Path, variant: str = "run") -> Run:
        folder = Path(folder)
        if not (folder / "config.yaml").is_file():
            raise fail(folder, "not a run folder (no config.yaml)")
        if not track.is_done(folder):
            raise fail(folder, "run not finished (meta.json status is not 'done')")
        cfg = config_from_dict(yaml.safe_load((folder / "config.yaml").read_text()), str(folder / "config.yaml"))
        return cls(folder, cfg, variant)

    @cached_property
    def meta(self) -> dict:
        return track.read_meta(self.folder)

    @property
    def cell(self) -> tuple[int, int]:
        """(seed, fold) of this run: the pairing key between variants."""
        return self.cfg.train.seed, self.cfg.data.fold

    @property
    def neural(self) -> bool:
        from pianolab.train.run import is_estimator

        return not is_estimator(self.cfg.model.name)

    @property
    def has_model(self) -> bool:
        """Whether the folder keeps its trained model (a copy may hold predictions only)."""
        return (self.folder / ("checkpoint.pt" if self.neural else "model.skops")).is_file()

    @property
    def has_spectrogram(self) -> bool:
        return self.neural and bool(self.cfg.features.spectrogram)

    @property
    def has_vector(self) -> bool:
        return bool(self.cfg.features.vector)

    def predictions(self, dataset: Dataset, role: str = "test") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item indices into `dataset`, true (n, 19), pred (n, 19)) of one role."""
        rows, pred, true = track.read_predictions(self.folder / "predictions.parquet")
        keep = (rows["role"] == role).to_numpy()
        idx = np.array([dataset.index[s] for s in rows["stem"][keep]], dtype=int)
        return idx, true[keep], pred[keep]


def model_device(model):
    """The device of a torch model's weights."""
    return next(model.parameters()).device


@dataclass
class Probe:
    """A rebuilt model and a normalised batch of test items.

    `predict(batch) -> (n, 19)` on the 0..1 label scale; `batch` holds torch tensors ("spec",
    "vector"); `y` (n, 19) labels; `y_mean`/`y_std` the training standardisation (model outputs are
    standardised); `waves` the full rendered audio of the items and `featurise(waves)` the
    normalised spectrogram tensor the model was trained on (both None for vector-only models).
    """

    model: object
    batch: dict
    y: np.ndarray
    stems: list[str]
    y_mean: np.ndarray
    y_std: np.ndarray
    waves: list[np.ndarray] | None = None
    featurise: Callable[[list[np.ndarray]], object] | None = None
    sample_rate: int = 16000

    @property
    def device(self):
        """Where the model's weights are (the probe's tensors live there too)."""
        return model_device(self.model)

    def predict(self, batch: dict) -> np.ndarray:
        import torch

        self.model.eval()
        with torch.no_grad():
            out = self.model(batch).float().cpu().numpy()
        return out * self.y_std + self.y_mean
