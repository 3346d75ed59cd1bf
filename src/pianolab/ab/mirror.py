"""Send an experiment to its tracker after `ab run` / `ab report`: every finished cell (the store is
brought in line with the run folders) and, once a report is written, the verdicts and report files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pianolab import track
from pianolab.ab.cells import cell_dir
from pianolab.ab.spec import Experiment


def record(exp: Experiment, root: Path | None = None, report_dir: Path | None = None) -> track.ExperimentRecord:
    """The experiment's finished cells with their tags; with `report_dir`, the report's verdicts too."""
    cells = [(cell_dir(exp, c, root), {"variant": c.variant, "seed": c.seed, "fold": c.fold}) for c in exp.cells()]
    info = {"hypothesis": exp.hypothesis, "primary_metric": exp.primary_metric, "rope": exp.rope,
            "alpha": exp.alpha, "seeds": exp.seeds, "folds": exp.folds, "split": exp.split}
    return track.ExperimentRecord(exp.name, root or track.runs_root(),
                                  [(f, t) for f, t in cells if track.is_done(f)], info,
                                  verdicts(exp, root) if report_dir else None, report_dir)


def verdicts(exp: Experiment, root: Path | None = None) -> dict[str, dict]:
    """{variant: {score_mean, score_sd, and for a variant its verdict's fields}} as the report states them."""
    from pianolab.ab.collect import collect
    from pianolab.ab.report import analyse

    out = {}
    for v, row in analyse(exp, collect(exp, root))["variants"].items():
        out[v] = {"score_mean": row["mean"], "score_sd": row["sd"]}
        if "verdict" in row:
            out[v].update({("delta" if k == "mean" else k): x
                           for k, x in dataclasses.asdict(row["verdict"]).items()})
    return out


def mirror_experiment(exp: Experiment, root: Path | None, tracker: str, report_dir: Path | None = None) -> bool:
    """Mirror the experiment into `tracker` (a failure warns and fails nothing)."""
    if tracker == "none":
        return True
    return track.mirror_experiment(record(exp, root, report_dir), tracker)
