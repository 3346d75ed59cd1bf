"""What an evaluation section sees: finished run folders grouped by variant, the dataset, an output
folder, and (lazily, cached) rebuilt models with a batch of each run's test items.

A `Run` is one finished run folder; `Context.runs` maps variant -> runs (a single run folder is the
variant "run"). `Probe` holds a rebuilt model and a normalised test batch; sections that need one ask
`Context.probe(run)`, and tests may put a hand-made probe into `Context.probes`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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
        return (self.folder / ("checkpoint.pt" if self.neural else "model.joblib")).is_file()

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


@dataclass(frozen=True)
class CrossRuns:
    """What an experiment's evaluation needs to train runs on another split (`cross_split`): the
    experiment, how its cells run (`pianolab.ab.runner.RunOptions`) and a progress printer."""

    experiment: object
    options: object
    echo: Callable[[str], None] = print


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


@dataclass
class Context:
    """Runs by variant, the dataset, the output folder and limits shared by every section."""

    runs: dict[str, list[Run]]
    dataset: Dataset
    out: Path
    max_runs: int = 2
    probe_items: int = 32
    baseline: str | None = None
    cross: CrossRuns | None = None
    probes: dict[Path, Probe] = field(default_factory=dict)
    vector_probes: dict[Path, object] = field(default_factory=dict)

    @property
    def variants(self) -> list[str]:
        return list(self.runs)

    def all_runs(self) -> list[Run]:
        return [r for runs in self.runs.values() for r in runs]

    def selected(self, variant: str, keep: Callable[[Run], bool], needs_model: bool = True) -> list[Run]:
        """The first `max_runs` runs of a variant that pass `keep` (same cells for every variant) and,
        with `needs_model`, keep their trained model."""
        return [r for r in self.runs[variant] if keep(r) and (r.has_model or not needs_model)][: self.max_runs]

    def skip_note(self, variant: str, keep: Callable[[Run], bool], not_applicable: str) -> str:
        """Why a model-based section has no run of `variant`: the runs it applies to (`keep`) lack their
        trained model, or `not_applicable` (the section does not apply to this kind of model)."""
        runs = [r for r in self.runs[variant] if keep(r)]
        if runs:
            return (f"Not run: {len(runs)} run folder(s) of this variant hold no trained model (checkpoint.pt / "
                    "model.joblib), only predictions; evaluate the original run folders.")
        return not_applicable

    def oof(self, variant: str) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """{seed: (item idx, true, pred)} test predictions pooled over the folds of each seed."""
        parts: dict[int, list] = {}
        for run in self.runs[variant]:
            parts.setdefault(run.cfg.train.seed, []).append(run.predictions(self.dataset))
        return {s: tuple(np.concatenate(x) for x in zip(*p, strict=True)) for s, p in sorted(parts.items())}

    def probe(self, run: Run) -> Probe:
        """The run's model and first `probe_items` test items (built once per run)."""
        if run.folder not in self.probes:
            from pianolab.evaluate.loading import build_probe

            self.probes[run.folder] = build_probe(run, self.dataset, self.probe_items)
        return self.probes[run.folder]

    def vector_probe(self, run: Run):
        """The run's scaled test-fold vector inputs and predictor (`loading.VectorProbe`), built once."""
        if run.folder not in self.vector_probes:
            from pianolab.evaluate.loading import vector_probe

            self.vector_probes[run.folder] = vector_probe(run, self.dataset)
        return self.vector_probes[run.folder]

    def path(self, *parts: str) -> Path:
        """A sub-folder of the output folder (created)."""
        p = self.out.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)

