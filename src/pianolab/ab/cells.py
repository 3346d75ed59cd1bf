"""One cell of an experiment: its folder, its claim, whether its results are current, running it.

The lowest layer of the runner: `runner` (the schedule), `backends` and `ray_backend` (how a batch of
cells executes, registered by name in `BACKENDS`) all build on it, so none imports another's module.

A finished cell is reused only while it is current: its data version, split digest and feature
versions (recorded in meta.json when it started) equal those of the data, split file and feature
kinds now. A stale cell is rerun (one line says why) and is never mixed into a verdict (`collect`
refuses it). Each cell runs with a pinned number of CPU threads (torch and OpenMP/BLAS pools),
recorded in its meta.json, since results depend on it.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from pianolab import track
from pianolab.ab.spec import Cell, Experiment
from pianolab.config import RunConfig
from pianolab.registry import Registry

CLAIMED, SKIPPED, BUSY = "ran", "skipped", "busy"
LOCK = ".lock"


@dataclass(frozen=True)
class RunOptions:
    """How cells are executed: `backend` (a name in `BACKENDS`), `jobs` cells (or Ray tasks) at once,
    where run folders go (`root`: every worker must see it), the tracker, the Ray address and per-task
    resource requests (fractional GPUs allowed), and `threads`: CPU threads per cell (default: this
    machine's cores divided by `jobs`)."""

    backend: str = "local"
    jobs: int = 1
    root: Path | None = None
    tracker: str = "mlflow"
    address: str | None = None
    gpus_per_run: float = 0.0
    cpus_per_run: float = 1.0
    threads: int | None = None

    @property
    def cell_threads(self) -> int:
        return self.threads or max(1, len(os.sched_getaffinity(0)) // max(1, self.jobs))


Backend = Callable[[Experiment, list[Cell], RunOptions], Iterator[tuple[Cell, str, dict | None]]]
BACKENDS: Registry[Backend] = Registry("backend")  # filled by `backends` and `ray_backend` on import


def cell_dir(exp: Experiment, cell: Cell, root: Path | None = None) -> Path:
    return track.run_dir(cell.config, exp.name, cell.variant, root)


# --------------------------------------------------------------------------- provenance


@functools.lru_cache(maxsize=32)
def _data_and_split(root: Path, midi: Path, splits: Path, split: str, folds: int, repeats: int, seed: int,
                    stamps: tuple) -> tuple[str, str]:
    """(data version, split digest); `stamps` (modification times) make a changed file a new key."""
    from pianolab.data.percepiano import load_dataset
    from pianolab.data.splits import get_split

    dataset = load_dataset(root, midi=midi)
    return dataset.version, get_split(dataset, split, folds, repeats, seed, splits).digest


def current_provenance(cfg: RunConfig) -> dict:
    """What a cell of `cfg` would record now: data version, split digest, feature versions."""
    from pianolab.data.percepiano import MEAN_LABELS, STD_LABELS, default_data_root
    from pianolab.data.splits import splits_dir
    from pianolab.train.run import feature_versions

    d = cfg.data
    root, splits = Path(d.root) if d.root else default_data_root(), splits_dir()
    midi = Path(d.midi) if d.midi else root / "midi"
    stamps = tuple(p.stat().st_mtime_ns if p.exists() else 0
                   for p in (root / MEAN_LABELS, root / STD_LABELS, midi, splits))
    version, digest = _data_and_split(root.resolve(), midi.resolve(), splits.resolve(), d.split, d.folds,
                                      d.repeats, d.split_seed, stamps)
    return {"data_version": version, "split_digest": digest, "feature_versions": feature_versions(cfg)}


def stale_reason(meta: dict, cfg: RunConfig) -> str | None:
    """Why a finished cell's results are not current (None when they are)."""
    now = current_provenance(cfg)
    for key, what in (("data_version", "data version"), ("split_digest", "split digest"),
                      ("feature_versions", "feature versions")):
        if meta.get(key) != now[key]:
            return f"{what} {meta.get(key, 'unrecorded')} != current {now[key]}"
    return None


def _clear(folder: Path) -> None:
    """Empty a stale cell's folder (its lock file stays: this runner holds it)."""
    for p in folder.iterdir():
        if p.name != LOCK:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


# --------------------------------------------------------------------------- claiming and running


def _finished_and_current(folder: Path, cfg: RunConfig, echo) -> bool:
    if not track.is_done(folder):
        return False
    reason = stale_reason(track.read_meta(folder), cfg)
    if reason is not None and echo is not None:
        echo(f"stale: {folder}: {reason}; rerunning")
    return reason is None


def claim(folder: Path, cfg: RunConfig, wait: bool = False, echo=print) -> FileLock | str:
    """The cell's lock, held, when this runner should run it (unfinished, or finished but stale: then
    emptied); else SKIPPED (finished and current) or BUSY (another runner holds it)."""
    if _finished_and_current(folder, cfg, None):
        return SKIPPED
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK))
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        return BUSY
    if _finished_and_current(folder, cfg, echo):  # finished by another runner meanwhile
        lock.release()
        return SKIPPED
    if track.is_done(folder):  # stale
        _clear(folder)
    return lock


def unclaimed(status: str, folder: Path) -> tuple[str, dict | None]:
    """(status, summary) of a cell this runner did not claim: the summary when it is finished."""
    return status, (track.read_meta(folder).get("summary", {}) if status == SKIPPED else None)


def mirror_cell(exp_name: str, cell: Cell, folder: Path, tracker: str) -> None:
    """Mirror a finished cell's folder to the tracker, tagged with its variant, seed and fold."""
    track.mirror(folder, tracker, exp_name, {"variant": cell.variant, "seed": cell.seed, "fold": cell.fold})


def pin_threads(n: int) -> None:
    """Pin this process's CPU threads: torch's intra-op pool and the OpenMP/BLAS pools (scikit-learn)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(n)


def run_cell(exp_name: str, cell: Cell, root: Path | None, tracker: str, wait: bool = False, loaded=None,
             threads: int | None = None):
    """Run one cell under its lock; returns (status, summary or None). `loaded`: every item's inputs,
    read once for several cells (`train.run.Loaded`); `threads`: pin this process's CPU threads first
    (None: leave them, e.g. for cells run as threads of one process)."""
    from pianolab.train.run import execute

    folder = track.run_dir(cell.config, exp_name, cell.variant, root)
    lock = claim(folder, cell.config, wait)
    if isinstance(lock, str):
        return unclaimed(lock, folder)
    try:
        if threads is not None:
            pin_threads(threads)
        summary = execute(cell.config, folder, exp_name, cell.variant, loaded=loaded)
        mirror_cell(exp_name, cell, folder, tracker)
        return CLAIMED, summary
    finally:
        lock.release()
