"""Runs on another split for the cross-composer / cross-performer sections.

Evaluating an experiment trains them when it has none: each variant's config with only the split
changed (training seed 0, every fold of that split), as cells of the same experiment, so they land in
its runs root under their own config hashes, run on the chosen backend and resume like any cell. A
single run folder cannot be re-trained this way: its section says how to make such runs.
"""

from __future__ import annotations

from dataclasses import replace

from pianolab.evaluate.context import Context, Run, experiment_runs


def cross_experiment(exp, split: str, dataset):
    """The experiment with only its split changed: one training seed, every fold of `split`."""
    from pianolab.data.splits import make_split

    folds = make_split(dataset, split, None, 1, 0).folds
    return replace(exp, split=split, folds=folds, split_seed=0, seeds=1, early_stop_min_seeds=None)


def split_runs(ctx: Context, split: str) -> dict[str, list[Run]]:
    """Each variant's finished runs on `split`: the context's own, else trained now (see module)."""
    have = {v: [r for r in ctx.runs[v] if r.cfg.data.split == split] for v in ctx.variants}
    if any(have.values()) or ctx.cross is None:
        return have
    from pianolab.ab.runner import run_cells

    exp = cross_experiment(ctx.cross.experiment, split, ctx.dataset)
    run_cells(exp, exp.cells(), ctx.cross.options, ctx.cross.echo)
    return experiment_runs(exp, ctx.cross.options.root)
