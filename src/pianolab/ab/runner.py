"""Expand an experiment into cells and run them: skip finished, resume interrupted, lock per cell.

Two runners on one experiment never run a cell twice: each cell is claimed with a non-blocking
file lock on its folder; a runner that finds a cell busy moves on and, at the end, waits for it
(and runs it itself if its owner died before finishing). `--jobs N` runs N cells at once in
separate processes (several small models share one GPU). How cells are executed is a registered
backend (`pianolab.ab.backends`): `local` (this machine's processes), `packed` (several cells of one
variant trained together in one process), `ray` (one Ray task per cell, on a local instance or a
cluster) and `ray_packed` (one Ray task per variant's pack: several GPUs or machines).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from pianolab import track
from pianolab.ab.spec import BASELINE, Cell, Experiment

CLAIMED, SKIPPED, BUSY = "ran", "skipped", "busy"


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


def cell_dir(exp: Experiment, cell: Cell, root: Path | None = None) -> Path:
    return track.run_dir(cell.config, exp.name, cell.variant, root)


def claim(folder: Path, wait: bool = False) -> FileLock | str:
    """The cell's lock, held, when this runner should run it; else SKIPPED (finished) or BUSY."""
    if track.is_done(folder):
        return SKIPPED
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / ".lock"))
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        return BUSY
    if track.is_done(folder):  # finished by another runner meanwhile
        lock.release()
        return SKIPPED
    return lock


def unclaimed(status: str, folder: Path) -> tuple[str, dict | None]:
    """(status, summary) of a cell this runner did not claim: the summary when it is finished."""
    return status, (_summary(folder) if status == SKIPPED else None)


def mirror_cell(exp_name: str, cell: Cell, folder: Path, tracker: str) -> None:
    """Mirror a finished cell's folder to the tracker, tagged with its variant, seed and fold."""
    track.mirror(folder, tracker, exp_name, {"variant": cell.variant, "seed": cell.seed, "fold": cell.fold})


def run_cell(exp_name: str, cell: Cell, root: Path | None, tracker: str, wait: bool = False, loaded=None):
    """Run one cell under its lock; returns (status, summary or None). `loaded`: every item's inputs,
    read once for several cells (`train.run.Loaded`)."""
    from pianolab.train.run import execute

    folder = track.run_dir(cell.config, exp_name, cell.variant, root)
    lock = claim(folder, wait)
    if isinstance(lock, str):
        return unclaimed(lock, folder)
    try:
        summary = execute(cell.config, folder, exp_name, cell.variant, loaded=loaded)
        mirror_cell(exp_name, cell, folder, tracker)
        return CLAIMED, summary
    finally:
        lock.release()


def _summary(folder: Path) -> dict:
    return track.read_meta(folder).get("summary", {})


def _run_batch(exp: Experiment, cells: list[Cell], opts: RunOptions, progress: Progress) -> None:
    from pianolab.ab.backends import BACKENDS

    busy = []
    for cell, status, summary in BACKENDS.get(opts.backend)(exp, cells, opts):
        _note(cell, status, summary, busy, progress)
    for cell in busy:  # claimed by another runner: wait for it, run it if its owner died
        progress.update(cell, *run_cell(exp.name, cell, opts.root, opts.tracker, wait=True))


def _note(cell, status, summary, busy, progress) -> None:
    if status == BUSY:
        busy.append(cell)
    else:
        progress.update(cell, status, summary)


def plan(exp: Experiment, root: Path | None = None) -> dict:
    """Cells done/left and an estimate of the time left from finished cells' durations."""
    cells = exp.cells()
    done = [c for c in cells if track.is_done(cell_dir(exp, c, root))]
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
            paths = [it.midi_path for it in load_dataset(cfg.data.root).items]
            load_inputs(cfg.features, paths, progress=True, workers=workers or len(os.sched_getaffinity(0)))


@dataclass(frozen=True)
class RunOptions:
    """How cells are executed: `backend` (local | packed | ray | ray_packed), `jobs` cells (or Ray
    tasks) at once, where run folders go (`root`: every worker must see it), the tracker, and the Ray
    address and per-task resource requests (fractional GPUs allowed)."""

    backend: str = "local"
    jobs: int = 1
    root: Path | None = None
    tracker: str = "mlflow"
    address: str | None = None
    gpus_per_run: float = 0.0
    cpus_per_run: float = 1.0


def run_experiment(exp: Experiment, jobs: int = 1, root: Path | None = None, tracker: str = "mlflow",
                   echo=print, backend: str = "local", **backend_opts) -> list[str]:
    """Run every cell (seed by seed); returns the variants still active (early stopping may drop some)."""
    from pianolab.ab.backends import BACKENDS

    BACKENDS.get(backend)  # an unknown name fails before any work
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
        if exp.early_stop_min_seeds and seed + 1 >= exp.early_stop_min_seeds and seed + 1 < exp.seeds:
            stopped = _early_stopped(exp, active, seed + 1, root)
            for v in stopped:
                echo(f"early stop: {v} (corrected upper bound below baseline - ROPE after {seed + 1} seeds)")
            active = [v for v in active if v not in stopped]
    return active


def run_cells(exp: Experiment, cells: list[Cell], opts: RunOptions, echo=print) -> None:
    """Run these cells of `exp` (skipping finished ones) with the options' backend."""
    _prebuild_if_needed(exp, cells, opts.root)
    _run_batch(exp, cells, opts, Progress(total=len(cells), echo=echo))


def _prebuild_if_needed(exp: Experiment, cells: list[Cell], root: Path | None) -> None:
    if any(not track.is_done(cell_dir(exp, c, root)) for c in cells):
        prebuild_features(exp)


def _early_stopped(exp: Experiment, active: list[str], seeds_done: int, root) -> list[str]:
    from pianolab.ab.collect import collect
    from pianolab.ab.stats import early_stop

    res = collect(exp, root, seeds=seeds_done, variants=active)
    base = res.scores[res.variants.index(BASELINE)]
    out = []
    for i, v in enumerate(res.variants):
        if v != BASELINE:
            decision = early_stop(res.scores[i] - base, res.n_train, res.n_test, rope=exp.rope,
                                  alpha=exp.alpha, min_seeds=exp.early_stop_min_seeds,
                                  max_seeds=exp.seeds)
            if decision.stop:
                out.append(v)
    return out
