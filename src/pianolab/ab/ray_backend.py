"""Ray backend: one Ray task per cell, on a local Ray instance or an existing cluster.

Each task calls the same `run_cell` as the local backend (per-cell lock, skip finished, resume
interrupted), so run folders, statistics and reports do not depend on the backend. Tasks write to
one runs root given as an absolute path, and read the data, feature cache and splits at the absolute
paths this process uses: every node must see those paths (a shared file system with file locks).
A task asks Ray for `gpus_per_run` GPUs (a fraction such as 0.25 lets four small runs share a GPU)
and `cpus_per_run` CPUs. A local instance started here gets `jobs x cpus_per_run` CPUs (so at most
`jobs` cells run at once), is reused by the later batches of the process and is stopped by Ray when
the process exits; an instance or cluster that was already connected is used as it is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

from pianolab import track
from pianolab.ab.runner import RunOptions, run_cell
from pianolab.ab.spec import Cell, Experiment
from pianolab.errors import PianolabError

INSTALL = "the ray backend needs Ray: pip install 'pianolab[ray]'"


def default_gpus_per_run() -> float:
    """1 when this machine has a CUDA GPU, else 0 (a cluster whose driver has none: set it)."""
    import torch

    return 1.0 if torch.cuda.is_available() else 0.0


def shared_paths() -> dict[str, str]:
    """The data, feature cache and splits folders of this process as absolute paths, by env var."""
    from pianolab.data.percepiano import DATA_ENV, default_data_root
    from pianolab.data.splits import SPLITS_ENV, splits_dir
    from pianolab.features.store import CACHE_ENV, default_cache_dir

    folders = {DATA_ENV: default_data_root(), CACHE_ENV: default_cache_dir(), SPLITS_ENV: splits_dir()}
    return {k: str(v.resolve()) for k, v in folders.items()}


def run_on_ray(exp: Experiment, cells: list[Cell], opts: RunOptions) -> Iterator[tuple[Cell, str, dict | None]]:
    """Submit one task per cell and yield `(cell, status, summary)` as tasks finish."""
    _check_request(opts)
    ray = _import_ray()
    _connect(ray, opts)
    root = (opts.root or track.runs_root()).resolve()
    task = ray.remote(run_cell).options(num_cpus=opts.cpus_per_run, num_gpus=opts.gpus_per_run,
                                        runtime_env={"env_vars": shared_paths()})
    pending = {task.remote(exp.name, c, root, opts.tracker): c for c in cells}
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        cell = pending.pop(ref)
        try:
            status, summary = ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, PianolabError):  # keep a bad-input error one line long
                raise PianolabError(f"{cell.variant} seed {cell.seed} fold {cell.fold}: {e.cause}") from None
            raise
        yield cell, status, summary


def _import_ray():
    try:
        import ray
    except ImportError:
        raise PianolabError(INSTALL) from None
    return ray


def _check_request(opts: RunOptions) -> None:
    if opts.gpus_per_run < 0 or opts.cpus_per_run < 0:
        raise PianolabError("--gpus-per-run and --cpus-per-run must be >= 0")
    if opts.gpus_per_run > 1 and not float(opts.gpus_per_run).is_integer():
        raise PianolabError(f"--gpus-per-run {opts.gpus_per_run}: above 1 it must be a whole number")


def _connect(ray, opts: RunOptions) -> None:
    """Connect to `opts.address` (e.g. `auto` or HOST:PORT), else start a local instance, unless this
    process is connected already. A local instance must have the GPUs the runs ask for."""
    if ray.is_initialized():
        return
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if opts.address:
        try:
            ray.init(address=opts.address, **quiet)
        except ConnectionError as e:
            raise PianolabError(f"--address {opts.address}: {e}") from None
        return
    ray.init(num_cpus=max(1, math.ceil(opts.jobs * opts.cpus_per_run)), include_dashboard=False, **quiet)
    gpus = ray.cluster_resources().get("GPU", 0)
    if opts.gpus_per_run > gpus:
        raise PianolabError(f"--gpus-per-run {opts.gpus_per_run}: the local Ray instance has {gpus:g} GPUs")
