"""Ray backends, on a local Ray instance or an existing cluster: `ray` (one task per cell) and
`ray_packed` (one task per variant, which trains the variant's cells as one packed model on its GPU).

Each task calls the same code as the local backends (`run_cell`, or the `packed` backend: per-cell
lock, skip finished, resume interrupted), so run folders, statistics and reports do not depend on
the backend. Tasks write to one runs root given as an absolute path, and read the data, feature
cache and splits at the absolute paths this process uses: every node must see those paths (a shared
file system with file locks).
A task asks Ray for `gpus_per_run` GPUs (a fraction such as 0.25 lets four small runs share a GPU)
and `cpus_per_run` CPUs. A local instance started here gets `jobs x cpus_per_run` CPUs (so at most
`jobs` tasks run at once), is reused by the later batches of the process and is stopped by Ray when
the process exits; an instance or cluster that was already connected is used as it is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import replace

from pianolab import track
from pianolab.ab.backends import packed
from pianolab.ab.cells import BACKENDS, RunOptions, run_cell
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


@BACKENDS.register("ray")
def run_on_ray(exp: Experiment, cells: list[Cell], opts: RunOptions) -> Iterator[tuple[Cell, str, dict | None]]:
    """One Ray task per cell, on a local instance or a cluster (`pip install 'pianolab[ray]'`); yields
    `(cell, status, summary)` as tasks finish."""
    remote, root = _start(opts)
    task = remote(_cell_task)
    yield from _gather({task.remote(exp.name, c, root, opts.tracker, _task_threads(opts)): [c] for c in cells})


@BACKENDS.register("ray_packed")
def run_packs_on_ray(exp: Experiment, cells: list[Cell], opts: RunOptions) -> Iterator[tuple[Cell, str, dict | None]]:
    """One Ray task per variant, training that variant's cells packed (the `packed` backend: several GPUs,
    one pack each); yields per cell."""
    remote, root = _start(opts)
    task = remote(_pack_task)
    inner = replace(opts, backend="packed", jobs=1, root=root, threads=_task_threads(opts))
    groups = {v: [c for c in cells if c.variant == v] for v in dict.fromkeys(c.variant for c in cells)}
    yield from _gather({task.remote(exp, group, inner): group for group in groups.values()})


def _task_threads(opts: RunOptions) -> int:
    """CPU threads a task pins: `threads` when given, else its CPU request (at least 1)."""
    return opts.threads or max(1, math.floor(opts.cpus_per_run))


def _cell_task(experiment: str, cell: Cell, root, tracker: str, threads: int) -> list[tuple[Cell, str, dict | None]]:
    return [(cell, *run_cell(experiment, cell, root, tracker, threads=threads))]


def _pack_task(exp: Experiment, cells: list[Cell], opts: RunOptions) -> list[tuple[Cell, str, dict | None]]:
    return list(packed(exp, cells, opts))


def _start(opts: RunOptions):
    """Check the request, connect, and return (a decorator making a task with the per-run resources
    and the shared paths, the absolute runs root)."""
    _check_request(opts)
    ray = _import_ray()
    _connect(ray, opts)
    options = {"num_cpus": opts.cpus_per_run, "num_gpus": opts.gpus_per_run,
               "runtime_env": {"env_vars": shared_paths()}}
    return (lambda fn: ray.remote(fn).options(**options)), (opts.root or track.runs_root()).resolve()


def _gather(pending: dict) -> Iterator[tuple[Cell, str, dict | None]]:
    """Yield each task's `(cell, status, summary)` rows as it finishes; a bad-input error stays one line."""
    import ray

    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        first = pending.pop(ref)[0]
        try:
            rows = ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, PianolabError):
                raise PianolabError(f"{first.variant} seed {first.seed} fold {first.fold}: {e.cause}") from None
            raise
        yield from rows


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
