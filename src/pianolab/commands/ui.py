"""`pianolab ui`: the MLflow web UI on 127.0.0.1 over the runs root's tracking store."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from pianolab.errors import PianolabError

INSTALL = "pip install -c constraints.txt -e '.[track]'"
# gunicorn's sync workers, one request at a time each, with a generous heartbeat: MLflow's default
# (uvicorn) killed workers that missed its 5 s health check under load, and a restarted worker's
# threads raced on MLflow's lazy imports (HTTP 500, dropped responses)
GUNICORN = "--timeout 120 --graceful-timeout 10 --backlog 256"


def ui(
    port: Annotated[int, typer.Option(min=1, max=65535, help="port on 127.0.0.1")] = 5000,
    runs: Annotated[Path | None, typer.Option("--runs", help="runs root whose mlflow.db is served "
                                              "(default: $PIANOLAB_RUNS or runs/)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="server worker processes (gunicorn)")] = 2,
) -> None:
    """Serve the MLflow UI on 127.0.0.1 (needs the `track` extra: full mlflow, not mlflow-skinny)."""
    from pianolab import mlflow_store, track

    if importlib.util.find_spec("mlflow") is None:
        raise PianolabError(f"mlflow is not installed: {INSTALL}")
    if importlib.util.find_spec("flask") is None or importlib.util.find_spec("gunicorn") is None:
        raise PianolabError(f"mlflow's web server is not installed (mlflow-skinny has none): {INSTALL}")
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise PianolabError(f"127.0.0.1:{port}: cannot listen there ({e.strerror})") from None
    root = runs or track.runs_root()
    uri, artifacts = track.default_mlflow_uri(root), (root / "mlartifacts").resolve()
    with mlflow_store.store(uri, artifacts):  # made here, under the lock, rather than by the server
        pass
    typer.echo(f"MLflow UI: http://127.0.0.1:{port}  (store {uri})")
    sys.stdout.flush()
    # exec: the server itself gets the signals that stop it (and stops its workers)
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
                              str(port), "--backend-store-uri", uri, "--artifacts-destination",
                              artifacts.as_uri(), "--workers", str(workers), "--gunicorn-opts", GUNICORN])
