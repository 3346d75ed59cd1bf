"""`pianolab evaluate TARGET`: metrics, diagnostics and robustness of a finished run or experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def evaluate(
    target: Annotated[Path, typer.Argument(help="run folder or experiment YAML")],
    only: Annotated[str | None, typer.Option(help="comma-separated sections or groups (default: all)")] = None,
    out: Annotated[Path | None, typer.Option(help="output folder (default: <run>/evaluation or "
                                                  "<runs>/<experiment>/evaluation)")] = None,
    runs: Annotated[Path | None, typer.Option("--runs", help="runs root (default: $PIANOLAB_RUNS or runs/)")] = None,
    max_runs: Annotated[int, typer.Option(help="runs per variant for the model-based sections")] = 2,
    probe_items: Annotated[int, typer.Option(help="test items per run for the audio sections")] = 32,
    jobs: Annotated[int, typer.Option(help="experiment: cross-split runs trained at once")] = 1,
    backend: Annotated[str, typer.Option(help="experiment: how cross-split runs are executed (as in "
                                              "`ab run`)")] = "local",
) -> None:
    """Evaluate a finished run or experiment: writes evaluation.md, evaluation.html, evaluation.json and PNGs."""
    from pianolab.evaluate.suite import evaluate_target

    names = [s.strip() for s in only.split(",") if s.strip()] if only else None
    paths = evaluate_target(target, names, out, runs, max_runs, probe_items, typer.echo, jobs, backend)
    typer.echo(f"evaluation: {paths['markdown']}  {paths['html']}")
