"""Expand an experiment into cells and run them: skip finished, resume interrupted, lock per cell.

Two runners on one experiment never run a cell twice: each cell is claimed with a non-blocking
file lock on its folder; a runner that finds a cell busy moves on and, at the end, waits for it
(and runs it itself if its owner died before finishing). `--jobs N` runs N cells at once in
separate processes (several small models share one GPU). A finished cell is reused only while its
data version, split and feature versions are current (`pianolab.ab.cells`). How cells are executed
is a backend registered in `cells.BACKENDS` by `pianolab.ab.backends` and `ray_backend`: `local`
(this machine's processes), `packed` (several cells of one variant trained together in one process),
`ray` (one Ray task per cell, on a local instance or a
cluster) and `ray_packed` (one Ray task per variant's pack: several GPUs or machines).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from pianolab import track
from pianolab.ab.cells import (  # noqa: F401  (cell_dir, RunOptions and run_cell are this module's API too)
    BACKENDS,
    BUSY,
    CLAIMED,
    RunOptions,
    cell_dir,
    run_cell,
    stale_reason,
)
from pianolab.ab.spec import Cell, Experiment


@dataclass
class Progress:
    total: int
    echo: object = print
    done: int = 0
    ran: int = 0
    started: float = field(default_factory=time.perf_counter)

    def update(self, cell: Cell, status: str, summary: dict | None) -> None:
        self.done += 1
        self.ran += status == CLAIMED
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.ran * (self.total - self.done) if self.ran else 0.0
        score = f"  pearson {summary['pearson']:.3f}" if summary and "pearson" in summary else ""
        self.echo(f"[{self.done}/{self.total}] {cell.variant} seed {cell.seed} fold {cell.fold}: "
                  f"{status}{score}  ({elapsed:.0f}s elapsed, ETA {eta:.0f}s)")


def backend_table():
    """The backend table, with every backend module imported (each registers itself on import)."""
    from pianolab.ab import backends, ray_backend  # noqa: F401

    return BACKENDS


def _run_batch(exp: Experiment, cells: list[Cell], opts: RunOptions, progress: Progress) -> None:
    busy = []
    for cell, status, summary in backend_table().get(opts.backend)(exp, cells, opts):
        _note(cell, status, summary, busy, progress)
    for cell in busy:  # claimed by another runner: wait for it, run it if its owner died
        progress.update(cell, *run_cell(exp.name, cell, opts.root, opts.tracker, wait=True,
                                        threads=opts.cell_threads))


def _note(cell, status, summary, busy, progress) -> None:
    if status == BUSY:
        busy.append(cell)
    else:
        progress.update(cell, status, summary)


def plan(exp: Experiment, root: Path | None = None) -> dict:
    """Cells done (finished and current: stale ones will rerun) and left, and an estimate of the time
    left from finished cells' durations."""
    cells = exp.cells()
    done = [c for c in cells if track.is_done(cell_dir(exp, c, root))
            and stale_reason(track.read_meta(cell_dir(exp, c, root)), c.config) is None]
    durations = []
    for c in done:
        meta = track.read_meta(cell_dir(exp, c, root))
        durations.append(meta["finished"] - meta["started"])
    per_run = sum(durations) / len(durations) if durations else None
    left = len(cells) - len(done)
    return {"cells": len(cells), "done": len(done), "left": left, "variants": exp.variant_names,
            "seeds": exp.seeds, "folds": exp.folds, "seconds_per_run": per_run,
            "estimated_seconds_left": None if per_run is None else per_run * left}


def prebuild_features(exp: Experiment, workers: int | None = None) -> None:
    """Fill the feature store once, in parallel, with every input the variants need, so that the
    cells (several at a time with --jobs) only read it."""
    import os

    from pianolab.data.percepiano import load_dataset
    from pianolab.train.inputs import load_inputs

    seen = []
    for v in exp.variant_names:
        cfg = exp.config(v)
        if cfg.features not in seen:
            seen.append(cfg.features)
            paths = [it.midi_path for it in load_dataset(cfg.data.root, midi=cfg.data.midi).items]
            load_inputs(cfg.features, paths, progress=True, workers=workers or len(os.sched_getaffinity(0)))


def run_experiment(exp: Experiment, jobs: int = 1, root: Path | None = None, tracker: str = "mlflow",
                   echo=print, backend: str = "local", **backend_opts) -> list[str]:
    """Run every cell (seed by seed); returns the variants still active (early stopping may drop some:
    their cells after the look that stopped them are never run)."""
    backend_table().get(backend)  # an unknown name fails before any work
    opts = RunOptions(backend=backend, jobs=jobs, root=root, tracker=tracker, **backend_opts)
    _prebuild_if_needed(exp, exp.cells(), root)
    active = exp.variant_names
    progress = Progress(total=len(exp.cells()), echo=echo)
    if not exp.early_stop_min_seeds:  # no sequential rule: the backend gets every cell at once
        _run_batch(exp, exp.cells(), opts, progress)
        return active
    for seed in range(exp.seeds):
        cells = [c for c in exp.cells(active) if c.seed == seed]
        progress.total -= len([c for c in exp.cells() if c.seed == seed]) - len(cells)
        _run_batch(exp, cells, opts, progress)
        if seed + 1 >= exp.early_stop_min_seeds and seed + 1 < exp.seeds:
            stopped = _early_stopped(exp, active, seed + 1, root)
            for v, s in stopped.items():
                echo(f"early stop: {v} after {seed + 1} seeds ({s.decision.reason})")
            active = [v for v in active if v not in stopped]
    return active


def run_cells(exp: Experiment, cells: list[Cell], opts: RunOptions, echo=print) -> None:
    """Run these cells of `exp` (skipping finished ones) with the options' backend."""
    _prebuild_if_needed(exp, cells, opts.root)
    _run_batch(exp, cells, opts, Progress(total=len(cells), echo=echo))


def _prebuild_if_needed(exp: Experiment, cells: list[Cell], root: Path | None) -> None:
    if any(not track.is_done(cell_dir(exp, c, root)) for c in cells):
        prebuild_features(exp)


def _early_stopped(exp: Experiment, active: list[str], seeds_done: int, root) -> dict:
    """The active variants the early-stop rule stops at this look ({variant: collect.Stopped}): the same
    replay of the rule as `collect`, on the primary metric signed so that positive = better."""
    from pianolab.ab.collect import collect

    return collect(exp, root, seeds=seeds_done, variants=active).stopped
