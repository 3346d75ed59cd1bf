"""Backends: how a batch of cells is executed. Each is registered by name and yields
`(cell, status, summary)` per cell, in any order; the runner handles progress, busy cells and early
stopping the same way for all of them, so statistics and reports do not depend on the backend."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor

from pianolab.ab.runner import RunOptions, run_cell
from pianolab.ab.spec import Cell, Experiment
from pianolab.registry import Registry

Backend = Callable[[Experiment, list[Cell], RunOptions], Iterator[tuple[Cell, str, dict | None]]]
BACKENDS: Registry[Backend] = Registry("backend")


@BACKENDS.register("local")
def local(exp: Experiment, cells: list[Cell], opts: RunOptions):
    """One cell at a time, or `jobs` cells at once in spawned processes (small models share a GPU)."""
    if opts.jobs <= 1:
        for c in cells:
            yield (c, *run_cell(exp.name, c, opts.root, opts.tracker))
        return
    with ProcessPoolExecutor(opts.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [(c, pool.submit(run_cell, exp.name, c, opts.root, opts.tracker)) for c in cells]
        for c, fut in futures:
            yield (c, *fut.result())
