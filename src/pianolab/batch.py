"""Where the batches of `pianolab predict` run: in this process, in worker processes, or as Ray tasks.

Each backend maps `fn` over the batches and yields `(batch, result)` as each finishes (not in order),
so the caller can write rows as they come and a rerun skips what was written. Workers inherit the
data, feature-cache and transcription-cache folders of this process (absolute paths), so their
features and transcriptions land in the same content-addressed stores.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pianolab.errors import PianolabError
from pianolab.registry import Registry


@dataclass(frozen=True)
class BatchOptions:
    """jobs: batches at a time; address: an existing Ray cluster (`auto`, HOST:PORT), Ray only;
    gpus: GPUs per Ray task (e.g. 0.25 lets four tasks share one for transcription)."""

    jobs: int = 1
    address: str | None = None
    gpus: float = 0.0


Backend = Callable[[Callable, list, BatchOptions], Iterator[tuple[Any, Any]]]
BATCH_BACKENDS: Registry[Backend] = Registry("predict backend")


@BATCH_BACKENDS.register("local")
def run_local(fn: Callable, batches: list, opts: BatchOptions) -> Iterator[tuple[Any, Any]]:
    """In this process (`jobs` 1) or in `jobs` worker processes on this machine."""
    if opts.address or opts.gpus:
        raise PianolabError("--address and --gpus-per-task are Ray options: add --backend ray")
    if opts.jobs == 1:
        for b in batches:
            yield b, fn(b)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // opts.jobs)
    with ProcessPoolExecutor(opts.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_pin_threads, initargs=(threads,)) as pool:
        futures = {pool.submit(fn, b): b for b in batches}
        for f in as_completed(futures):
            yield futures[f], f.result()


def _pin_threads(threads: int) -> None:
    """One worker's share of the cores (torch and the BLAS pools), so `jobs` workers do not oversubscribe."""
    import torch

    torch.set_num_threads(threads)


@BATCH_BACKENDS.register("ray")
def run_ray(fn: Callable, batches: list, opts: BatchOptions) -> Iterator[tuple[Any, Any]]:
    """One Ray task per batch on a local instance (`jobs` CPUs) or an existing cluster (`address`); every
    node must see this process's data and cache folders at the same absolute paths."""
    try:
        import ray
    except ImportError:
        raise PianolabError("--backend ray needs Ray: pip install 'pianolab[ray]'") from None
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if not ray.is_initialized():
        try:
            ray.init(address=opts.address, **quiet) if opts.address else \
                ray.init(num_cpus=opts.jobs, include_dashboard=False, **quiet)
        except ConnectionError as e:
            raise PianolabError(f"--address {opts.address}: {e}") from None
    from pianolab.ab.ray_backend import shared_paths  # the folders every node must see, as for ab's Ray backend

    task = ray.remote(_call).options(num_cpus=1, num_gpus=opts.gpus, runtime_env={"env_vars": shared_paths()})
    pending = {task.remote(fn, b): b for b in batches}
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        yield pending.pop(ref), ray.get(ref)


def _call(fn: Callable, batch: Any) -> Any:
    """A Ray task (Ray makes tasks of plain functions, not of partials)."""
    return fn(batch)
