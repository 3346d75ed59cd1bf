"""Backends: how a batch of cells is executed. Each registers itself by name in `cells.BACKENDS` (the
table the runner reads) and yields `(cell, status, summary)` per cell, in any order; the runner handles
progress, busy cells and early stopping the same way for all of them, so statistics and reports do not
depend on the backend. Worker processes (`--jobs`) exit when the runner that spawned them dies."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor

from pianolab import track
from pianolab.ab.cells import BACKENDS, CLAIMED, RunOptions, claim, mirror_cell, pin_threads, run_cell, unclaimed
from pianolab.ab.spec import Cell, Experiment
from pianolab.train.run import is_estimator


@BACKENDS.register("local")
def local(exp: Experiment, cells: list[Cell], opts: RunOptions):
    """One cell at a time, or `jobs` cells at once in spawned processes (small models share a GPU)."""
    if opts.jobs <= 1:
        for c in cells:
            yield (c, *run_cell(exp.name, c, opts.root, opts.tracker, threads=opts.cell_threads))
        return
    with worker_threads(opts.jobs), workers(opts.jobs) as pool:
        futures = [(c, pool.submit(run_cell, exp.name, c, opts.root, opts.tracker, threads=opts.cell_threads))
                   for c in cells]
        for c, fut in futures:
            yield (c, *fut.result())


def workers(jobs: int) -> ProcessPoolExecutor:
    """`jobs` spawned worker processes that exit when this process dies (even by SIGKILL)."""
    return ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=die_with_parent,
                               initargs=(os.getpid(),))


def die_with_parent(parent: int, poll_s: float = 0.5) -> None:
    """Make this worker exit when process `parent` dies: the kernel sends SIGKILL on Linux
    (PR_SET_PDEATHSIG); elsewhere, and in case the spawning thread (not process) ended, a daemon thread
    polls the parent pid and exits."""
    import ctypes
    import signal
    import sys
    import threading
    import time

    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # died before the call above
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def worker_threads(jobs: int):
    """While `jobs` cells run at once, the processes spawned here get an equal share of this process's
    cores for OpenMP and BLAS (values the user set are kept). Unset, each starts one thread per core:
    six processes of gradient boosting (OpenMP threads that spin while they wait) on 16 cores finished
    no cell in 20 minutes on the GPU machine (docs/benchmarks.md)."""
    share = str(max(1, len(os.sched_getaffinity(0)) // jobs))
    added = [v for v in THREAD_VARIABLES if v not in os.environ]
    os.environ.update(dict.fromkeys(added, share))
    try:
        yield
    finally:
        for v in added:
            os.environ.pop(v, None)


@BACKENDS.register("packed")
def packed(exp: Experiment, cells: list[Cell], opts: RunOptions):
    """Each variant's unfinished cells trained together as one batched model
    (`pianolab.train.packed`), `jobs` variants at once in spawned processes (sharing the GPU: on one
    H200, two at once took 293.9 s where one after the other took 304.6 s, docs/benchmarks.md); variants
    that cannot be packed (scikit-learn models, BatchNorm, ...) run one cell at a time. Finished cells are
    skipped and busy ones left to their owner."""
    packs = []
    for variant in dict.fromkeys(c.variant for c in cells):
        todo, locks = [], []
        for c in (c for c in cells if c.variant == variant):
            folder = track.run_dir(c.config, exp.name, c.variant, opts.root)
            lock = claim(folder, c.config, wait=False)
            if isinstance(lock, str):
                yield (c, *unclaimed(lock, folder))
            else:
                todo.append((c, folder))
                locks.append(lock)
        packs.append((variant, todo, locks))
    jobs = min(opts.jobs, len(packs))
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(workers(jobs)) if jobs > 1 else None
        threads = opts.cell_threads
        futures = [(pack, pool.submit(_train_pack, exp.name, pack[0], pack[1], threads) if pool else None)
                   for pack in packs]
        for (variant, todo, locks), fut in futures:
            try:
                summaries = fut.result() if fut else _train_pack(exp.name, variant, todo, threads)
            finally:
                for lock in locks:
                    lock.release()
            if summaries is None:
                yield from local(exp, [c for c, _ in todo], opts)
                continue
            for (c, folder), summary in zip(todo, summaries, strict=True):
                mirror_cell(exp.name, c, folder, opts.tracker)
                yield c, CLAIMED, summary


def _train_pack(exp_name: str, variant: str, todo: list, threads: int) -> list[dict] | None:
    """The summaries of `todo` ((cell, folder) of one variant) trained as one pack with `threads` CPU
    threads; None when they cannot be packed (one cell, an estimator, a tuned or unpackable model)."""
    from pianolab.errors import PianolabError
    from pianolab.train.packed import execute_pack

    if len(todo) < 2 or not _packable(todo[0][0].config):
        return None
    pin_threads(threads)
    try:
        return execute_pack([c.config for c, _ in todo], [f for _, f in todo], exp_name, variant)
    except PianolabError:  # not packable: one at a time
        return None


def _packable(cfg) -> bool:
    """Neural cells of one variant stack when they share every setting; tuned cells may not, nor
    continual learning (two phases with their own heads and losses), nor a domain shift (its files are
    not the shared spectrograms' rows; self-training and DANN fit through `train.run.fit_cell`), nor
    few-shot adaptation (it adapts each cell's model on that cell's support items), nor self-supervised
    pretraining (each cell pretrains on its own training fold before its fit, `train.run.fit_cell`)."""
    return not is_estimator(cfg.model.name) and not cfg.tuning.trials and cfg.continual.strategy == "none" \
        and not cfg.domain.target and not cfg.adapt.k and cfg.pretrain.method == "none"


@BACKENDS.register("threads")
def threads(exp: Experiment, cells: list[Cell], opts: RunOptions):
    """`jobs` cells at once as threads of this process, each on its own CUDA stream: the kernels of
    small models overlap on one GPU (separate processes only take turns on it), and every item's
    inputs are read from the feature store once per feature setting, not once per cell. Not with
    `train.compile` or `train.deterministic`, which set the whole process. Measured faster than `local`
    on the CPU but ~3x slower on an H200 (launch-bound small models, one interpreter lock:
    docs/benchmarks.md)."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from pianolab.errors import PianolabError

    clash = next((c for c in cells if c.config.train.compile or c.config.train.deterministic), None)
    if clash is not None:
        raise PianolabError(f"backend 'threads' cannot run {clash.variant!r}: train.compile and "
                            "train.deterministic are settings of the whole process; use --backend local")
    pin_threads(opts.threads or len(os.sched_getaffinity(0)))  # one process shares its threads between cells
    shared = _inputs_read_once(cells)
    if any(_on_gpu(c) for c in cells):
        from pianolab.models.noise import fused_uniform

        fused_uniform()  # compile the keyed-noise kernel here, not in several threads at once
    with ThreadPoolExecutor(max(1, opts.jobs)) as pool:
        futures = {pool.submit(_run_on_own_stream, exp.name, c, opts, shared[_feature_key(c)]): c for c in cells}
        try:
            for fut in as_completed(futures):
                c = futures[fut]
                status, summary = fut.result()
                if status == CLAIMED:  # trackers are not thread-safe: mirrored from this thread
                    mirror_cell(exp.name, c, track.run_dir(c.config, exp.name, c.variant, opts.root), opts.tracker)
                yield c, status, summary
        except BaseException:
            pool.shutdown(cancel_futures=True)  # finished cells are kept; running ones resume next time
            raise


def _feature_key(cell: Cell) -> tuple:
    return cell.config.features, cell.config.data.root, cell.config.train.device


def _inputs_read_once(cells: list[Cell]) -> dict:
    """Every item's inputs (`train.run.Loaded`) per distinct feature setting of `cells`."""
    from pianolab.train.run import load_all_items
    from pianolab.train.trainer import pick_device

    shared = {}
    for c in cells:
        key = _feature_key(c)
        if key not in shared:
            shared[key] = load_all_items(c.config, pick_device(c.config.train.device))
    return shared


def _on_gpu(cell: Cell) -> bool:
    from pianolab.train.trainer import pick_device

    return pick_device(cell.config.train.device).type == "cuda"


def _run_on_own_stream(exp_name: str, cell: Cell, opts: RunOptions, loaded) -> tuple[str, dict | None]:
    import torch

    on_gpu = _on_gpu(cell)
    stream = torch.cuda.Stream() if on_gpu else None
    with torch.cuda.stream(stream) if on_gpu else contextlib.nullcontext():
        result = run_cell(exp_name, cell, opts.root, "none", loaded=loaded)
    if stream is not None:
        stream.synchronize()
    return result
