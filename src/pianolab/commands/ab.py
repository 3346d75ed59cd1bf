"""`pianolab ab ...`: run an experiment, report on it, plan its power."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="A/B experiments: run, report, power.", no_args_is_help=True)

Root = Annotated[Path | None, typer.Option("--runs", help="runs root (default: $PIANOLAB_RUNS or runs/)")]
# The names of track.SINKS and ab.backends.BACKENDS (tests/test_cli_choices.py keeps them equal); listed
# here so that `--help` shows them without importing torch.
Tracker = Enum("Tracker", {n: n for n in ("mlflow", "wandb", "none")}, type=str)
Backend = Enum("Backend", {n: n for n in ("local", "packed", "threads", "ray", "ray_packed")}, type=str)
TrackerOpt = Annotated[Tracker, typer.Option(help="where finished runs and the report are mirrored")]


@app.command("run")
def run(
    experiment: Path,
    jobs: Annotated[int, typer.Option(help="cells run at once (several small runs share a GPU)")] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and stop")] = False,
    tracker: TrackerOpt = Tracker.mlflow,
    report: Annotated[bool, typer.Option(help="write the report when done")] = True,
    runs: Root = None,
    backend: Annotated[Backend, typer.Option(help="how cells are executed")] = Backend.local,
    address: Annotated[str | None, typer.Option(help="ray: cluster to use (auto or HOST:PORT; default: "
                                                "start a local instance with --jobs tasks at once)")] = None,
    gpus_per_run: Annotated[float | None, typer.Option(min=0, help="ray: GPUs per task (a cell, or a "
                                                       "variant's pack); fractions share a GPU (0.25: four "
                                                       "per GPU); default 1 if this machine has a GPU, else 0")] = None,
    cpus_per_run: Annotated[float, typer.Option(min=0, help="ray: CPUs per task")] = 1.0,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads per cell, pinned and recorded "
                                                "(default: cores / --jobs; ray: --cpus-per-run)")] = None,
) -> None:
    """Run every variant x seed x fold cell (finished cells are skipped), then write the report."""
    from pianolab.ab.runner import plan, run_experiment
    from pianolab.ab.spec import load_experiment

    exp = load_experiment(experiment)
    p = plan(exp, runs)
    eta = "unknown" if p["estimated_seconds_left"] is None else f"{p['estimated_seconds_left']:.0f}s"
    typer.echo(f"{exp.name}: {len(p['variants'])} variants x {exp.seeds} seeds x {exp.folds} folds = "
               f"{p['cells']} runs; {p['done']} done, {p['left']} left (estimated {eta})")
    if dry_run:
        for v in p["variants"]:
            typer.echo(f"  {v}")
        return
    if gpus_per_run is None:
        from pianolab.ab.ray_backend import default_gpus_per_run

        gpus_per_run = default_gpus_per_run()
    tracker, backend = tracker.value, backend.value
    run_experiment(exp, jobs=jobs, root=runs, tracker=tracker, echo=typer.echo, backend=backend,
                   address=address, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run, threads=threads)
    if report:
        _report(exp, runs, tracker)
    else:
        from pianolab.ab.mirror import mirror_experiment

        mirror_experiment(exp, runs, tracker)


def _report(exp, runs, tracker: str = "none") -> None:
    from pianolab.ab.mirror import mirror_experiment
    from pianolab.ab.report import write_report

    paths = write_report(exp, runs, echo=typer.echo)
    typer.echo(f"report: {paths['markdown']}  {paths['html']}")
    mirror_experiment(exp, runs, tracker, paths["markdown"].parent)


@app.command("report")
def report(experiment: Path, runs: Root = None, tracker: TrackerOpt = Tracker.mlflow) -> None:
    """Statistics, verdicts and plots of a finished experiment (Markdown + HTML + terminal table)."""
    from pianolab.ab.spec import load_experiment

    _report(load_experiment(experiment), runs, tracker.value)


@app.command("power")
def power(
    experiment: Path,
    delta: Annotated[float | None, typer.Option(help="difference to detect (default: the ROPE)")] = None,
    power_: Annotated[float, typer.Option("--power", help="target power")] = 0.8,
    runs: Root = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Seeds x folds needed to detect a difference, from the finished cells' variance (the pilot)."""
    from pianolab.ab.collect import collect
    from pianolab.ab.report import power_table
    from pianolab.ab.spec import load_experiment

    exp = load_experiment(experiment)
    rows = power_table(exp, collect(exp, runs), delta if delta is not None else exp.rope, power_)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        typer.echo("  ".join(f"{k}={v}" for k, v in r.items()))
