"""Build features for many files and specs into the store, sharing one render per (file, render key).

Work per file (`_work`, run inline or in a process pool): read + augment the MIDI, compute MIDI kinds,
render once per (renderer, sample rate, augment, copy), compute classic kinds, and either compute
spectrograms there (CPU) or return the length-policy waves so the main process batches them on the
GPU. Errors are per (file, spec): a bad file is reported by name and skipped or raised.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from pianolab.errors import PianolabError
from pianolab.features.kinds import get_kind
from pianolab.features.scores import input_key
from pianolab.features.spectrogram import LENGTH_POLICIES, compute_spectrograms
from pianolab.features.store import FeatureSpec, FeatureTable, Store, file_sha256

GPU_FLUSH = 64  # waves pending before a batched GPU pass
VERSIONED = ("pianolab", "numpy", "torch", "mido", "librosa", "parangonar", "partitura")


@cache
def versions() -> dict[str, str]:
    out = {}
    for pkg in VERSIONED:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def _message(path: Path, e: Exception) -> str:
    text = str(e) if isinstance(e, PianolabError) else f"{path}: {e.__class__.__name__}: {e}"
    return text if str(path) in text else f"{path}: {text}"


def _work(path: Path, specs: list[tuple[int, FeatureSpec]], spectrogram_here: bool,
          device: str | None = None, renders: dict | None = None) -> dict:
    """-> {'out': {spec_idx: array}, 'waves': {spec_idx: wave}, 'errors': {spec_idx: msg}, 'records'}.
    `device`: where the non-spectrogram audio kinds may do their array work (None: numpy). `renders`:
    renders by (path, render key) to reuse and fill (one file's own by default)."""
    from pianolab.render.augment import augmented_bytes
    from pianolab.render.renderers import make_renderer

    out, waves, errors, records = {}, {}, {}, {}
    renders = {} if renders is None else renders
    copies: dict[tuple, bytes] = {}  # MIDI bytes by (augment, copy): read and checked once per file
    for idx, spec in specs:
        kind = get_kind(spec.kind)
        try:
            if (spec.augment, spec.copy) not in copies:
                copies[spec.augment, spec.copy] = augmented_bytes(path, spec.augment, spec.copy)
            data = copies[spec.augment, spec.copy]
            if kind.input == "midi":
                out[idx] = kind.compute(data, path, spec)
                continue
            renderer = make_renderer(spec.renderer, spec.sample_rate)
            records[idx] = {"renderer": renderer.settings()}
            key = (str(path), spec.render_key)
            if key not in renders:
                try:
                    wave = renderer.render(data)
                    if not len(wave):
                        raise PianolabError("rendered audio is silent")
                    renders[key] = wave
                except Exception as e:  # noqa: BLE001 - reported per file below
                    renders[key] = e
            wave = renders[key]
            if isinstance(wave, Exception):
                raise wave
            if not kind.spectrogram:
                out[idx] = kind.compute(wave, spec, device)
                continue
            policy = LENGTH_POLICIES.get(spec.length_policy)
            cut = policy(wave, spec.sample_rate, spec.seconds, spec.max_seconds)
            if spectrogram_here:
                out[idx] = compute_spectrograms([cut], spec.kind, spec.sample_rate, spec.frame_rate, "cpu")[0]
            else:
                waves[idx] = cut
        except Exception as e:  # noqa: BLE001 - any failure of one file is that file's error
            errors[idx] = _message(path, e)
    return {"out": out, "waves": waves, "errors": errors, "records": records}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def warm_up(specs: list[FeatureSpec]) -> None:
    """Run each kind's `warm_up` once here, before parallel workers start (see FeatureKind)."""
    done = set()
    for spec in specs:
        kind = get_kind(spec.kind)
        if kind.warm_up is not None and (spec.kind, spec.sample_rate) not in done:
            kind.warm_up(spec)
            done.add((spec.kind, spec.sample_rate))


def _resolve_device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def build(midi_paths: list[Path], specs: list[FeatureSpec], cache_dir=None, device: str | None = None,
          on_error: str = "skip", progress: bool = False, workers: int = 0,
          renders: dict | None = None) -> list[FeatureTable]:
    """One FeatureTable per spec, aligned with `midi_paths` (see `load_features`). `renders` (inline
    builds, workers <= 1): a dict of renders that several builds of the same files share, so that each
    file is rendered once (it holds every render in memory)."""
    if on_error not in ("skip", "raise"):
        raise PianolabError(f"on_error must be 'skip' or 'raise', not {on_error!r}")
    store, paths, device = Store(cache_dir), [Path(p) for p in midi_paths], _resolve_device(device)
    tables = [FeatureTable(s, [None] * len(paths), get_kind(s.kind).names) for s in specs]
    pending: dict[int, list[tuple[int, FeatureSpec]]] = {}
    shas: dict[int, str] = {}

    def skip(i: int, si: int, msg: str) -> None:
        if on_error == "raise":
            raise PianolabError(msg)
        tables[si].skipped.append((paths[i], msg))

    for i, p in enumerate(paths):
        try:
            shas[i] = file_sha256(p)
        except OSError as e:
            for si in range(len(specs)):
                skip(i, si, f"{p}: unreadable ({e.__class__.__name__})")
            continue
        for si, s in enumerate(specs):
            hit = store.get(s, input_key(shas[i], p, get_kind(s.kind).uses_score))
            if hit is not None:
                tables[si].arrays[i], tables[si].hits = hit, tables[si].hits + 1
            else:
                pending.setdefault(i, []).append((si, s))

    here = device == "cpu"
    gpu_queue: list[tuple[int, int, np.ndarray, dict]] = []

    def flush() -> None:
        for si in sorted({q[1] for q in gpu_queue}):
            group = [q for q in gpu_queue if q[1] == si]
            s = specs[si]
            arrays = compute_spectrograms([q[2] for q in group], s.kind, s.sample_rate, s.frame_rate, device)
            for (i, _, _, rec), arr in zip(group, arrays, strict=True):
                save(i, si, arr, rec)
        gpu_queue.clear()

    def save(i: int, si: int, arr: np.ndarray, rec: dict) -> None:
        arr = np.asarray(arr, dtype=np.float32)
        key = input_key(shas[i], paths[i], get_kind(specs[si].kind).uses_score)  # + the score's hash, if read
        store.put(specs[si], key, arr, {"input": paths[i].name, "versions": versions(), **rec})
        tables[si].arrays[i], tables[si].computed = arr, tables[si].computed + 1

    def collect(i: int, res: dict) -> None:
        for si, msg in res["errors"].items():
            skip(i, si, msg)
        for si, arr in res["out"].items():
            save(i, si, arr, res["records"].get(si, {}))
        for si, wave in res["waves"].items():
            gpu_queue.append((i, si, wave, res["records"].get(si, {})))
        if len(gpu_queue) >= GPU_FLUSH:
            flush()

    bar = _bar(len(pending), progress, store)
    if workers > 1 and len(pending) > 1:
        warm_up([s for todo in pending.values() for _, s in todo])
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as ex:
            futures = {ex.submit(_work, paths[i], todo, here): i for i, todo in pending.items()}
            try:
                for fut in _as_completed(futures):
                    collect(futures[fut], fut.result())
                    bar.update(1)
            except BaseException:
                ex.shutdown(cancel_futures=True)
                raise
    else:
        for i, todo in pending.items():
            collect(i, _work(paths[i], todo, here, None if here else device, renders))
            bar.update(1)
    flush()
    bar.close()
    return tables


def _as_completed(futures):
    from concurrent.futures import as_completed

    return as_completed(futures)


class _NoBar:
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def _bar(total: int, progress: bool, store: Store):
    if not progress:
        return _NoBar()
    from tqdm import tqdm

    start = time.monotonic()

    class Bar(tqdm):
        def close(self):
            mb = store.size_bytes() / 1e6
            self.set_postfix_str(f"cache {mb:.1f} MB, {time.monotonic() - start:.1f} s")
            super().close()

    return Bar(total=total, unit="file", desc="features", disable=os.environ.get("PIANOLAB_NO_BAR") == "1")


def load_features(midi_paths: list[Path], spec: FeatureSpec, cache_dir: Path | str | None = None,
                  device: str | None = None, on_error: str = "skip", progress: bool = False,
                  workers: int = 0) -> FeatureTable:
    """Features of every file in `midi_paths` under `spec`, from the cache or computed and cached.

    `on_error`: 'skip' records (path, reason) in `.skipped` and leaves None; 'raise' raises the
    first PianolabError. `device`: torch device for spectrograms (default cuda when available).
    `workers` > 1 renders and featurises in that many processes.
    """
    return build(midi_paths, [spec], cache_dir, device, on_error, progress, workers)[0]
