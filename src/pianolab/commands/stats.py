"""`pianolab stats ...`: checks of the statistical protocol itself."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(help="Statistics of the A/B engine: calibrate the decision rules on A/A simulations.",
                  no_args_is_help=True)


@app.callback()
def stats() -> None:
    """Statistics of the A/B engine."""


@app.command("calibrate")
def calibrate(
    simulations: Annotated[int, typer.Option(min=1, help="A/A experiments to simulate")] = 1000,
    seed: Annotated[int, typer.Option(help="random seed of the simulation")] = 0,
    generator: Annotated[str, typer.Option(help="cv (realistic repeated K-fold) | exchangeable "
                                           "(the Nadeau-Bengio model)")] = "cv",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """False-positive rate of each decision rule on simulated A/A experiments (must be <= alpha), and of
    the early-stop and equivalence rules at the ROPE's boundary (true difference +-ROPE)."""
    from pianolab.ab.calibrate import GENERATORS, AADesign
    from pianolab.ab.calibrate import calibrate as run_calibration

    if generator not in GENERATORS:
        raise typer.BadParameter(f"must be one of {', '.join(GENERATORS)}", param_hint="--generator")
    result = run_calibration(simulations, seed, AADesign(generator=generator))
    if as_json:
        typer.echo(json.dumps(result))
        return
    design, alpha = result["design"], result["alpha"]
    typer.echo(f"{simulations} simulated A/A experiments ({generator} generator, seed {seed}): "
               f"{design['seeds']} seeds x {design['folds']} folds, n_train {design['n_train']:g}, "
               f"n_test {design['n_test']:g}, alpha {alpha:g}, ROPE {design['rope']:g}")
    typer.echo(f"{'rule':<17} {'false positives':>15} {'95% Monte-Carlo CI':>20}  <= alpha")
    for rule, rate in result["false_positive_rate"].items():
        low, high = result["false_positive_ci"][rule]
        typer.echo(f"{rule:<17} {rate:>15.3f} {f'[{low:.3f}, {high:.3f}]':>20}  "
                   f"{'yes' if rate <= alpha else 'NO'}")
