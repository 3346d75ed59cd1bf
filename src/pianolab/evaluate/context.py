"""What an evaluation section sees: finished run folders grouped by variant, the dataset, an output
folder, and (lazily, cached) rebuilt models with a batch of each run's test items.

A `Run` is one finished run folder (`pianolab.evaluate.runs`); `Context.runs` maps variant -> runs (a
single run folder is the variant "run"). `Probe` holds a rebuilt model and a normalised test batch;
sections that need one ask `Context.probe(run)`, and tests may put a hand-made probe into
`Context.probes`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pianolab import track
from pianolab.data.percepiano import Dataset
from pianolab.errors import PianolabError
from pianolab.evaluate.runs import Probe, Run


@dataclass(frozen=True)
class CrossRuns:
    """What an experiment's evaluation needs to train runs on another split (`cross_split`): the
    experiment, how its cells run (`pianolab.ab.runner.RunOptions`) and a progress printer."""

    experiment: object
    options: object
    echo: Callable[[str], None] = print


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
                    "model.skops), only predictions; evaluate the original run folders.")
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


def experiment_runs(exp, runs_root: Path | None) -> dict[str, list[Run]]:
    """Finished cells of every variant, in the same (seed, fold) order for each."""
    runs: dict[str, list[Run]] = {}
    for cell in sorted(exp.cells(), key=lambda c: (c.seed, c.fold)):
        folder = track.run_dir(cell.config, exp.name, cell.variant, runs_root)
        if track.is_done(folder):
            runs.setdefault(cell.variant, []).append(Run.load(folder, cell.variant))
    if not runs:
        raise PianolabError(f"{exp.source}: no finished runs; run `pianolab ab run {exp.source}` first")
    return {v: runs[v] for v in exp.variant_names if v in runs}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)

