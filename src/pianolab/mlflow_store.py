"""pianolab's MLflow store: a mirror of the run folders that survives kills and concurrent runners.

The run folders are the truth; the store is rebuilt from them whenever it lacks something:
- a SQLite store is first made (tables and migrations) in a temporary file that is renamed into place,
  under a file lock beside it, so a kill leaves either no store or a whole one;
- every write happens under the same lock (SQLite has one writer: two runners no longer lose runs),
  so a run found RUNNING while the lock is held was interrupted: `mark_interrupted` marks it FAILED;
- a run is keyed by a `cell` tag: `log_run` leaves a key's FINISHED run alone (no duplicates) and
  replaces an interrupted one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

KEY = "mirror_key"
SQLITE = "sqlite:///"


def quiet() -> None:
    """Keep MLflow's and Alembic's INFO lines out of the terminal (warnings still show)."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def store(uri: str, artifact_root: Path) -> Iterator:
    """An `MlflowClient` over `uri` with the store's lock held; a missing SQLite store is made first."""
    from mlflow.tracking import MlflowClient

    quiet()
    if not uri.startswith(SQLITE):
        yield MlflowClient(uri)
        return
    path = Path(uri[len(SQLITE):])
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if not path.is_file():
            _create(path, artifact_root)
        yield MlflowClient(uri)


def _create(path: Path, artifact_root: Path) -> None:
    """Make the tables in a temporary file, then rename it into place (atomic)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for stale in path.parent.glob(f"{path.name}.*.tmp"):  # left by a runner killed here
        stale.unlink()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    SqlAlchemyStore(f"{SQLITE}{tmp}", artifact_root.resolve().as_uri()).engine.dispose()
    os.replace(tmp, path)


def experiment_id(client, name: str, artifact_root: Path) -> str:
    """The experiment's id, made (artifacts under `artifact_root/<name>`) or restored when needed."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, artifact_location=(artifact_root / name).resolve().as_uri())
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def runs(client, exp_id: str, filter_string: str = "") -> list:
    """Every active run of the experiment matching the filter (all pages)."""
    out, token = [], None
    while True:
        page = client.search_runs([exp_id], filter_string, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def mark_interrupted(client, exp_id: str) -> int:
    """Mark FAILED every run still RUNNING (called with the lock held: its writer died). Returns how many."""
    stuck = runs(client, exp_id, "attributes.status = 'RUNNING'")
    for r in stuck:
        client.set_terminated(r.info.run_id, "FAILED")
    return len(stuck)


def log_run(client, exp_id: str, key: str, name: str, tags: dict, params: dict, metrics: Sequence,
            artifacts: dict[str, Path] | None = None, replace: bool = False) -> str:
    """One FINISHED run for `key`: an existing finished one is kept (or, with `replace`, superseded by
    a new one and deleted afterwards); interrupted ones are deleted. `metrics`: mlflow Metric objects;
    `artifacts`: {artifact folder: local folder}. Returns the run id."""
    from mlflow.entities import Param, RunTag

    old = runs(client, exp_id, f"tags.{KEY} = '{key}'")
    done = [r.info.run_id for r in old if r.info.status == "FINISHED"]
    if done and not replace:
        return done[0]
    run_id = client.create_run(exp_id, run_name=name, tags={KEY: key}).info.run_id
    tags = [RunTag(k, str(v)) for k, v in tags.items()]
    params = [Param(k, str(v)[:500]) for k, v in params.items()]
    batches = max(-(-len(tags) // 100), -(-len(params) // 100), -(-len(metrics) // 800), 1)
    for b in range(batches):  # MLflow's batch limits: 100 params, 100 tags, 1000 entities in all
        client.log_batch(run_id, metrics=metrics[b * 800:(b + 1) * 800], params=params[b * 100:(b + 1) * 100],
                         tags=tags[b * 100:(b + 1) * 100])
    for dest, local in (artifacts or {}).items():
        client.log_artifacts(run_id, str(local), dest)
    client.set_terminated(run_id, "FINISHED")
    for r in old:  # interrupted attempts, and with `replace` the superseded run
        client.delete_run(r.info.run_id)
    return run_id
