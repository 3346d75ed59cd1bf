"""`pianolab serve`, `monitor`, `promote`, `registry ...` and `ab live`: a model in production.

Needs the `serve` extra (FastAPI, uvicorn, python-multipart, Jinja2, shap, httpx).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from pianolab.errors import PianolabError

registry_app = typer.Typer(help="The model registry: run folders behind champion/challenger.", no_args_is_help=True)

Registry = Annotated[Path | None, typer.Option("--registry", help="registry folder (default: $PIANOLAB_REGISTRY "
                                               "or registry/)")]
Log = Annotated[Path | None, typer.Option("--log", help="prediction log (default: <registry>/predictions.sqlite)")]


def _registry(folder: Path | None):
    from pianolab.serve.registry import ModelRegistry

    return ModelRegistry(folder)


def _log_path(registry, log: Path | None) -> Path:
    return log or registry.folder / "predictions.sqlite"


def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    model: Annotated[str, typer.Option(help="alias, registered name or run folder that answers")] = "champion",
    challenger: Annotated[str, typer.Option(help="alias, name or run folder of the challenger")] = "challenger",
    mode: Annotated[str, typer.Option(help="champion | shadow (challenger predicts unseen) | split")] = "champion",
    share: Annotated[float, typer.Option(help="split mode: share of clients the challenger answers")] = 0.0,
    registry: Registry = None,
    log: Log = None,
    max_mb: Annotated[float, typer.Option(help="largest upload accepted (MB)")] = 20.0,
    timeout: Annotated[float, typer.Option(help="time limit of one prediction (s)")] = 30.0,
    workers: Annotated[int, typer.Option(min=1, help="predictions computed at once")] = 2,
    keep_inputs: Annotated[bool, typer.Option(help="also store the uploaded files in the log")] = False,
) -> None:
    """Serve ratings over HTTP (POST /predict, /feedback; GET /health, /model; docs at /docs)."""
    import uvicorn

    from pianolab.serve.app import Settings, create_app
    from pianolab.serve.deploy import Deployment

    reg = _registry(registry)
    if max_mb <= 0 or timeout <= 0:
        raise PianolabError("--max-mb and --timeout must be positive")
    settings = Settings(registry=reg.folder, log=_log_path(reg, log), model=model, challenger=challenger,
                        deployment=Deployment(mode, share), max_bytes=int(max_mb * 2**20), timeout_s=timeout,
                        workers=workers, keep_inputs=keep_inputs)
    app = create_app(settings)
    names = app.state.server.models
    typer.echo(f"serving {', '.join(f'{a}={m.name}' for a, m in names.items())} ({mode}) on http://{host}:{port}"
               f"  log {settings.log}", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


@registry_app.command("register")
def register(
    name: str, run: Path,
    verdict: Annotated[Path | None, typer.Option(help="the offline A/B report/verdict that chose this model")] = None,
    alias: Annotated[str | None, typer.Option(help="point champion or challenger at it")] = None,
    registry: Registry = None,
) -> None:
    """Register a finished run folder under NAME."""
    reg = _registry(registry)
    data = reg.register(name, run, verdict, alias)
    typer.echo(f"{reg.path}: {name} -> {data['models'][name]['path']}" + (f" (alias {alias})" if alias else ""))


@registry_app.command("alias")
def alias(alias_: Annotated[str, typer.Argument(metavar="ALIAS")], name: str, registry: Registry = None) -> None:
    """Point ALIAS (champion or challenger) at the registered model NAME."""
    reg = _registry(registry)
    reg.set_alias(alias_, name, "set by hand")
    typer.echo(f"{reg.path}: {alias_} -> {name}")


@registry_app.command("list")
def list_models(registry: Registry = None) -> None:
    """The registered models, their aliases and the verdict that chose each."""
    reg = _registry(registry)
    data = reg.read()
    by_name = {v: k for k, v in data["aliases"].items()}
    for name, entry in sorted(data["models"].items()):
        typer.echo(f"{name:<20} {by_name.get(name, ''):<10} {entry['path']}  verdict: {entry['verdict'] or '-'}")


def promote(
    registry: Registry = None,
    reason: Annotated[str, typer.Option(help="why (recorded in the registry history)")] = "promoted by hand",
) -> None:
    """Move the champion alias to the challenger (the registry history keeps the old one)."""
    reg = _registry(registry)
    old, new = reg.promote(reason)
    typer.echo(f"{reg.path}: champion {old or '-'} -> {new}; challenger cleared")


def monitor(
    model: Annotated[str, typer.Option(help="alias, name or run folder to monitor")] = "champion",
    registry: Registry = None,
    log: Log = None,
    last: Annotated[int | None, typer.Option(help="window: the last N served requests")] = None,
    since_hours: Annotated[float | None, typer.Option(help="window: requests of the last H hours")] = None,
    report: Annotated[Path, typer.Option(help="HTML report")] = Path("monitor.html"),
    as_json: Annotated[bool, typer.Option("--json", help="print the analysis as JSON")] = False,
    psi: Annotated[float, typer.Option(help="a column drifts when PSI passes this ...")] = 0.25,
    alpha: Annotated[float, typer.Option(help="... and its BH-adjusted KS p is below this")] = 0.01,
    feature_share: Annotated[float, typer.Option(help="alarm: share of drifted features above")] = 0.0,
    prediction_share: Annotated[float, typer.Option(help="alarm: share of drifted dimensions above")] = 0.0,
    outside: Annotated[float, typer.Option(help="alarm: mean share outside the training range above")] = 0.05,
    latency_p95_ms: Annotated[float | None, typer.Option(help="alarm: answer latency p95 above (ms)")] = None,
    min_pearson: Annotated[float | None, typer.Option(help="alarm: live mean Pearson r below")] = None,
    min_window: Annotated[int, typer.Option(help="fewer requests: no drift verdict")] = 20,
    transcription_share: Annotated[float | None, typer.Option(
        help="alarm: share of served recordings with a suspect transcription above")] = None,
) -> None:
    """Drift, range, latency and live accuracy of served traffic; exit code 1 on an alarm."""
    from pianolab.serve.model import ServedModel
    from pianolab.serve.monitor import Thresholds, analyse
    from pianolab.serve.report import as_json as to_json
    from pianolab.serve.report import render_report
    from pianolab.serve.store import PredictionLog

    reg = _registry(registry)
    path = _log_path(reg, log)
    if not path.is_file():
        raise PianolabError(f"{path}: no prediction log")
    thresholds = Thresholds(psi, alpha, feature_share, prediction_share, outside, latency_p95_ms, min_pearson,
                            min_window, transcription_share)
    since = None if since_hours is None else time.time() - 3600 * since_hours
    a = analyse(PredictionLog(path), ServedModel(*reg.resolve(model)), thresholds, last, since,
                cache=reg.folder / "references")
    report.write_text(render_report(a))
    if as_json:
        typer.echo(json.dumps(to_json(a), indent=1, default=float))
    lat = a["latency_ms"] or {}
    typer.echo(f"{a['model']}: {a['window']['requests']} requests, latency p50/p95/p99 "
               + "/".join(f"{lat[q]:.0f}" for q in ("p50", "p95", "p99") if q in lat) + " ms, "
               f"feature drift {a.get('feature_drift_share', float('nan')):.0%}, "
               f"prediction drift {a.get('prediction_drift_share', float('nan')):.0%}, "
               f"outside range {a.get('outside_share', float('nan')):.1%}; report {report}")
    tr = a["transcription"]
    if tr["recordings"]:
        typer.echo(f"transcription quality: {tr['suspect']}/{tr['recordings']} recordings suspect")
    if a.get("note"):
        typer.echo(a["note"])
    for alarm in a["alarms"]:
        typer.echo(f"ALARM {alarm}")
    if a["alarms"]:
        raise typer.Exit(1)


def ab_live(
    registry: Registry = None,
    log: Log = None,
    champion: Annotated[str, typer.Option(help="alias or registered name")] = "champion",
    challenger: Annotated[str, typer.Option(help="alias or registered name")] = "challenger",
    alpha: float = 0.05,
    seed: int = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Champion vs challenger on the feedback received, with the offline engine's paired item tests."""
    from dataclasses import asdict

    from pianolab.serve.live import compare
    from pianolab.serve.store import PredictionLog

    reg = _registry(registry)
    path = _log_path(reg, log)
    if not path.is_file():
        raise PianolabError(f"{path}: no prediction log")
    res = compare(PredictionLog(path), reg.resolve(champion)[0], reg.resolve(challenger)[0], alpha, seed)
    if as_json:
        typer.echo(json.dumps(asdict(res), indent=1))
        return
    typer.echo(f"{res.n_pairs} rated performances predicted by both ({res.n_groups} resampling units)")
    typer.echo(f"MSE champion {res.champion} {res.mse_champion:.5f}  challenger {res.challenger} "
               f"{res.mse_challenger:.5f}")
    for r in (res.permutation, res.bootstrap):
        typer.echo(f"  {r.label}: {r.estimate:+.4f}  {100 * (1 - r.alpha):g}% CI [{r.ci_low:+.4f}, {r.ci_high:+.4f}]"
                   + (f"  p = {r.p:.4g}" if r.p is not None else ""))
    typer.echo(res.verdict)


def mount(app: typer.Typer, ab_app: typer.Typer) -> None:
    """Add the production commands to the main app and `live` to `pianolab ab`."""
    app.command("serve")(serve)
    app.command("monitor")(monitor)
    app.command("promote")(promote)
    app.add_typer(registry_app, name="registry")
    ab_app.command("live")(ab_live)
