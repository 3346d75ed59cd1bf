"""Gather an experiment's saved predictions into the arrays the statistics take.

Scores are recomputed from `predictions.parquet` (never from logged scalars), so a new metric needs
no retraining. Refuses any cell that is stale (its data version, split digest or feature versions are
not the current ones: `pianolab.ab.cells.stale_reason`), so every compared cell has the same data and
split assignments. With an `early_stop` rule the rule is replayed on the finished cells
(the same decisions the runner took): a stopped variant is set apart in `Results.stopped` with the
cells it ran, and is not among `Results.variants` (so it is not in Holm's family).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pianolab import track
from pianolab.ab.cells import stale_reason
from pianolab.ab.spec import BASELINE, Experiment
from pianolab.ab.stats import EarlyStop, early_stop
from pianolab.data.percepiano import Dataset, load_dataset
from pianolab.errors import PianolabError


@dataclass
class Stopped:
    """A variant stopped by the early-stop rule after `seeds` seeds: the decision, and its cells so far
    (`scores[seed, fold]` of the collected metric, `diffs[seed, fold]` against the baseline signed so
    that positive = better)."""

    seeds: int
    decision: EarlyStop
    scores: np.ndarray
    diffs: np.ndarray


@dataclass
class Results:
    """`scores[variant, seed, fold]`, `per_dim[variant, seed, fold, dim]` of the primary metric on the
    test fold; `oof[variant][seed]` = (item indices, true, pred) pooled over the folds of a seed.
    `stopped`: variants the early-stop rule stopped (not in `variants`); `environment`: one line per
    recorded setting that differs between cells (GPU, thread count, Python, package versions)."""

    variants: list[str]
    metric: str
    scores: np.ndarray
    per_dim: np.ndarray
    n_train: float
    n_test: float
    oof: dict
    folders: dict
    dataset: Dataset
    stopped: dict[str, Stopped] = field(default_factory=dict)
    environment: list[str] = field(default_factory=list)

    def groups(self) -> np.ndarray:
        return self.dataset.column("group")

    @property
    def sign(self) -> float:
        """+1 for metrics where higher is better, -1 otherwise (so that a positive difference = better)."""
        return metric_sign(self.metric)

    def diffs(self, i: int) -> np.ndarray:
        """d[seed, fold] of variant i against the baseline, signed so that positive = better."""
        return self.sign * (self.scores[i] - self.scores[self.variants.index(BASELINE)])


def metric_sign(metric: str) -> float:
    from pianolab.evaluate.metrics import METRICS

    return 1.0 if METRICS.get(metric).higher_is_better else -1.0


def _read_cell(exp: Experiment, v: str, s: int, k: int, root, dataset: Dataset):
    """(folder, meta, test item indices, true, pred) of a finished, current cell; None when unfinished."""
    cfg = exp.config(v, s, k)
    folder = track.run_dir(cfg, exp.name, v, root)
    if not track.is_done(folder):
        return None
    meta = track.read_meta(folder)
    if (reason := stale_reason(meta, cfg)) is not None:
        raise PianolabError(f"{folder}: stale cell ({reason}); rerun it with `pianolab ab run {exp.source}`")
    rows, pred, true = track.read_predictions(folder / "predictions.parquet")
    test = (rows["role"] == "test").to_numpy()
    idx = np.array([dataset.index[x] for x in rows["stem"][test]])
    return folder, meta, idx, true[test], pred[test]


def collect(exp: Experiment, root: Path | None = None, seeds: int | None = None,
            variants: list[str] | None = None, metric: str | None = None) -> Results:
    """The finished cells of the first `seeds` seeds (default all) of `variants` (default all), scored
    with `metric` (default the primary one). Unfinished cells are an error, except those a stopped
    variant will never run."""
    from pianolab.evaluate.metrics import METRICS

    metric = metric or exp.primary_metric
    fns = {m: METRICS.get(m) for m in {metric, exp.primary_metric}}
    variants = variants or exp.variant_names
    seeds = seeds or exp.seeds
    data = exp.config(variants[0]).data
    dataset = load_dataset(data.root, midi=data.midi)
    groups = dataset.column("group")
    shape = (len(variants), seeds, exp.folds)
    scores = {m: np.full(shape, np.nan) for m in fns}
    per_dim = np.full((*shape, 19), np.nan)
    cells, sizes = {}, np.full((seeds, exp.folds, 2), np.nan)
    for i, v in enumerate(variants):
        for s in range(seeds):
            for k in range(exp.folds):
                cell = _read_cell(exp, v, s, k, root, dataset)
                if cell is None:
                    continue
                folder, meta, idx, true, pred = cell
                for m, fn in fns.items():
                    r = fn(true, pred, groups=groups[idx])
                    scores[m][i, s, k] = r.value
                    if m == metric and r.per_dim is not None:
                        per_dim[i, s, k] = r.per_dim
                cells[(v, s, k)] = (folder, meta, idx, true, pred)
                # the smallest training part among the variants of this cell (they differ under a domain
                # shift: source vs target labels): the larger, conservative Nadeau-Bengio correction
                sizes[s, k] = np.fmin(sizes[s, k], (meta["n_train"] + meta.get("n_val", 0), meta["n_test"]))
    stops = _replay_early_stop(exp, variants, scores[exp.primary_metric], sizes)
    for (v, s, k) in ((v, s, k) for v in variants for s in range(seeds) for k in range(exp.folds)):
        if (v, s, k) not in cells and not (v in stops and s >= stops[v][0]):
            folder = track.run_dir(exp.config(v, s, k), exp.name, v, root)
            raise PianolabError(f"{folder}: run not finished; run `pianolab ab run {exp.source}`")
    return _results(exp, variants, metric, scores[metric], per_dim, sizes, cells, stops, dataset)


def _replay_early_stop(exp: Experiment, variants: list[str], primary: np.ndarray,
                       sizes: np.ndarray) -> dict[str, tuple[int, EarlyStop]]:
    """{variant: (seeds run, decision)} of the variants the rule stops, looking after each seed s from
    min_seeds to seeds − 1 exactly as the runner does, on differences signed so that positive = better."""
    if not exp.early_stop_min_seeds or BASELINE not in variants:
        return {}
    base, sign, out = variants.index(BASELINE), metric_sign(exp.primary_metric), {}
    for i, v in enumerate(variants):
        if v == BASELINE:
            continue
        for s in range(exp.early_stop_min_seeds, min(primary.shape[1], exp.seeds - 1) + 1):
            d = sign * (primary[i, :s] - primary[base, :s])
            if np.isnan(d).any():
                break  # this look's cells are not all finished: the runner has not looked yet
            n_train, n_test = sizes[:s].reshape(-1, 2).mean(axis=0)
            decision = early_stop(d, n_train, n_test, rope=exp.rope, alpha=exp.alpha,
                                  min_seeds=exp.early_stop_min_seeds, max_seeds=exp.seeds)
            if decision.stop:
                out[v] = (s, decision)
                break
    return out


def _results(exp, variants, metric, scores, per_dim, sizes, cells, stops, dataset) -> Results:
    keep = [i for i, v in enumerate(variants) if v not in stops]
    base = variants.index(BASELINE) if BASELINE in variants else None
    sign = metric_sign(metric)
    stopped = {v: Stopped(stops[v][0], stops[v][1], scores[i, :stops[v][0]],
                          sign * (scores[i, :stops[v][0]] - scores[base, :stops[v][0]]))
               for i, v in enumerate(variants) if v in stops}
    oof, folders = {}, {}
    for (v, s, k), (folder, _, idx, true, pred) in cells.items():
        folders[(v, s, k)] = folder
        if v not in stops:
            oof.setdefault(v, {}).setdefault(s, []).append((idx, true, pred))
    oof = {v: {s: tuple(np.concatenate(x) for x in zip(*parts, strict=True)) for s, parts in sorted(by.items())}
           for v, by in oof.items()}
    n_train, n_test = np.nanmean(sizes.reshape(-1, 2), axis=0)
    return Results([variants[i] for i in keep], metric, scores[keep], per_dim[keep], float(n_train),
                   float(n_test), oof, folders, dataset, stopped,
                   environment_differences([meta for _, meta, *_ in cells.values()]))


ENVIRONMENT_KEYS = ("gpu", "threads", "python")


def environment_differences(metas: list[dict]) -> list[str]:
    """One line per recorded setting whose value differs between cells ("threads: 4 (12 cells), 2 (4
    cells)"): GPU, CPU thread count, Python and every recorded package version; [] when all agree."""
    values: dict[str, list] = {k: [m.get(k, "unrecorded") for m in metas] for k in ENVIRONMENT_KEYS}
    for name in sorted({p for m in metas for p in m.get("packages", {})}):
        values[name] = [m.get("packages", {}).get(name, "unrecorded") for m in metas]
    out = []
    for key, seen in values.items():
        counts = Counter("none" if x is None else str(x) for x in seen)
        if len(counts) > 1:
            out.append(f"{key}: " + ", ".join(f"{value} ({n} cells)" for value, n in counts.most_common()))
    return out
