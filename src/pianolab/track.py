"""Run folders (the truth) and tracker sinks (MLflow by default; W&B offline on request).

Layout: `<runs root>/<experiment>/<variant>/<config hash>/fold<k>-seed<s>/` holding `config.yaml`,
`meta.json`, `metrics.jsonl`, `predictions.parquet`, `checkpoint.pt` (and `state.pt` while a run is
in progress). A run is finished when `meta.json` says `"status": "done"`.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pianolab.atomic import atomic_path
from pianolab.config import RunConfig, config_hash, replace, to_dict
from pianolab.data.percepiano import DIMENSIONS
from pianolab.registry import Registry

RUNS_ENV = "PIANOLAB_RUNS"
PACKAGES = ("pianolab", "torch", "numpy", "scipy", "scikit-learn", "pandas", "librosa", "midirenderer")


def runs_root() -> Path:
    return Path(os.environ.get(RUNS_ENV, "runs"))


def variant_hash(cfg: RunConfig) -> str:
    """Hash of a config with its fold, repeat and seed zeroed: shared by all cells of a variant."""
    return config_hash(replace(cfg, data={"fold": 0, "repeat": 0}, train={"seed": 0}))


def run_dir(cfg: RunConfig, experiment: str = "single", variant: str | None = None,
            root: Path | None = None) -> Path:
    variant = variant or cfg.model.name
    return ((root or runs_root()) / experiment / variant / variant_hash(cfg)
            / f"fold{cfg.data.fold}-seed{cfg.train.seed}")


def read_meta(folder: Path) -> dict:
    return json.loads((folder / "meta.json").read_text())


def is_done(folder: Path) -> bool:
    return (folder / "meta.json").is_file() and read_meta(folder).get("status") == "done"


def _git(*args: str) -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment() -> dict:
    """Git commit + dirty flag, package versions, Python, host and GPU."""
    import pianolab

    versions = {"pianolab": pianolab.__version__}
    for p in PACKAGES[1:]:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    gpu = None
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    commit = _git("rev-parse", "HEAD")
    return {"git_commit": commit if re.fullmatch(r"[0-9a-f]{40}", commit) else None,
            "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "packages": versions, "python": platform.python_version(), "host": platform.node(),
            "gpu": gpu}


def write_json(path: Path, data: dict) -> None:
    """Atomic JSON write."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=str))


def write_config(folder: Path, cfg: RunConfig) -> None:
    """config.yaml: the config the run's model is trained with."""
    (folder / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=True))


def start_run(folder: Path, cfg: RunConfig, extra_meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_config(folder, cfg)
    meta = {"status": "running", "config_hash": config_hash(cfg), "started": time.time(),
            **environment(), **extra_meta}
    write_json(folder / "meta.json", meta)


def finish_run(folder: Path, summary: dict) -> None:
    meta = read_meta(folder)
    meta.update(status="done", finished=time.time(), summary=summary)
    write_json(folder / "meta.json", meta)


def write_predictions(path: Path, stems: list[str], roles: list[str], pred: np.ndarray,
                      target: np.ndarray, fold: int, seed: int, repeat: int) -> None:
    """predictions.parquet: one row per item: stem, role, fold, seed, repeat, pred_<dim>, true_<dim>."""
    df = pd.DataFrame({"stem": stems, "role": roles, "fold": fold, "seed": seed, "repeat": repeat})
    df = pd.concat([df, pd.DataFrame(pred, columns=[f"pred_{d}" for d in DIMENSIONS]),
                    pd.DataFrame(target, columns=[f"true_{d}" for d in DIMENSIONS])], axis=1)
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def read_predictions(path: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(rows without the value columns, pred (n, 19), true (n, 19))."""
    df = pd.read_parquet(path)
    pred = df[[f"pred_{d}" for d in DIMENSIONS]].to_numpy(float)
    true = df[[f"true_{d}" for d in DIMENSIONS]].to_numpy(float)
    return df[["stem", "role", "fold", "seed", "repeat"]], pred, true


def read_metrics(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class ExperimentRecord:
    """What an experiment sends to a tracker: its finished cells (folder, tags), its settings, the
    verdicts per variant ({variant: {name: number or text}}; None before a report) and the report."""

    name: str
    root: Path
    cells: list[tuple[Path, dict]]
    info: dict = field(default_factory=dict)
    verdicts: dict[str, dict] | None = None
    report_dir: Path | None = None


@dataclass(frozen=True)
class Sink:
    """A tracker: how one finished cell, and a whole experiment after its report, are mirrored."""

    cell: Callable[[Path, str, dict, str | None], None]
    experiment: Callable[[ExperimentRecord, str | None], None]


def _nothing(*args) -> None:
    return None


SINKS: Registry[Sink] = Registry("tracker")
SINKS.add("none", Sink(_nothing, _nothing))


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _cell_name(folder: Path) -> str:
    return f"{folder.parent.parent.name}/{folder.name}"


def _mlflow_artifacts(root: Path) -> Path:
    return root / "mlartifacts"


def _mlflow_cell_run(client, exp_id: str, folder: Path, tags: dict) -> str:
    """The cell's MLflow run (made once per folder): config as params, epoch records and summary as
    metrics, variant/seed/fold and provenance as tags."""
    from mlflow.entities import Metric

    from pianolab import mlflow_store

    meta = read_meta(folder)
    ts = int(meta.get("finished", time.time()) * 1000)
    metrics = [Metric(k, float(v), ts, int(rec.get("epoch", 0))) for rec in read_metrics(folder)
               for k, v in rec.items() if k != "epoch" and _number(v)]
    metrics += [Metric(k, float(v), ts, 0) for k, v in meta.get("summary", {}).items() if _number(v)]
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    tags = {"kind": "cell", **tags, "git_commit": meta.get("git_commit"), "data_version": meta.get("data_version"),
            "run_folder": str(folder)}
    return mlflow_store.log_run(client, exp_id, "/".join(folder.parts[-3:]), _cell_name(folder), tags,
                                flatten(cfg), metrics)


def _mlflow_cell(folder: Path, experiment: str, tags: dict, uri: str | None) -> None:
    """Mirror a finished run folder into MLflow (local SQLite store beside the run folders by default)."""
    from pianolab import mlflow_store

    root = folder.parents[3]
    with mlflow_store.store(uri or default_mlflow_uri(root), _mlflow_artifacts(root)) as client:
        _mlflow_cell_run(client, mlflow_store.experiment_id(client, experiment, _mlflow_artifacts(root)),
                         folder, tags)


def _mlflow_experiment(rec: ExperimentRecord, uri: str | None) -> None:
    """Bring the store in line with the run folders: runs left RUNNING by a kill are marked FAILED,
    every finished cell the store lacks is mirrored; after a report, one parent run carries the
    verdicts (numbers as metrics `<variant>.<name>`, words as tags), the report folder as artifacts,
    and the cells as its child runs."""
    from mlflow.entities import Metric

    from pianolab import mlflow_store

    artifacts = _mlflow_artifacts(rec.root)
    with mlflow_store.store(uri or default_mlflow_uri(rec.root), artifacts) as client:
        exp_id = mlflow_store.experiment_id(client, rec.name, artifacts)
        mlflow_store.mark_interrupted(client, exp_id)
        children = [_mlflow_cell_run(client, exp_id, folder, tags) for folder, tags in rec.cells]
        if rec.verdicts is None:
            return
        ts = int(time.time() * 1000)
        metrics = [Metric(f"{v}.{k}", float(x), ts, 0) for v, d in rec.verdicts.items() for k, x in d.items()
                   if _number(x)]
        tags = {"kind": "experiment", "mlflow.note.content": rec.info.get("hypothesis", ""),
                **{f"{v}.{k}": x for v, d in rec.verdicts.items() for k, x in d.items() if isinstance(x, str)}}
        parent = mlflow_store.log_run(client, exp_id, "experiment", rec.name, tags, rec.info, metrics,
                                      {"report": rec.report_dir} if rec.report_dir else None, replace=True)
        for child in children:
            client.set_tag(child, "mlflow.parentRunId", parent)


def _wandb_init(root: Path, **kwargs):
    """A W&B run, offline unless the user configured W&B (WANDB_MODE); files under `<runs root>/wandb`."""
    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    return wandb, wandb.init(dir=str(root), reinit="create_new", **kwargs)


def _wandb_cell(folder: Path, experiment: str, tags: dict, uri: str | None) -> None:
    """Mirror a run into W&B: epoch records, the summary metrics (every model, scikit-learn ones too)
    and the predictions as an artifact."""
    summary = {k: v for k, v in read_meta(folder).get("summary", {}).items() if _number(v)}
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    wandb, run = _wandb_init(folder.parents[3], project=experiment, name=_cell_name(folder), job_type="cell",
                             group=folder.parent.parent.name, config=cfg,
                             tags=[f"{k}={v}"[:64] for k, v in tags.items()])
    with run:
        for rec in read_metrics(folder):
            run.log(rec)
        run.log(summary)
        run.summary.update(summary)
        art = wandb.Artifact(re.sub(r"[^\w.-]", "-", f"{experiment}-{_cell_name(folder)}-predictions"),
                             type="predictions")
        art.add_file(str(folder / "predictions.parquet"))
        run.log_artifact(art)


def _wandb_experiment(rec: ExperimentRecord, uri: str | None) -> None:
    """After a report: one W&B run with the verdicts in its summary and the report folder as an artifact."""
    if rec.verdicts is None:
        return
    wandb, run = _wandb_init(rec.root, project=rec.name, name=f"{rec.name}-report", job_type="report",
                             config=rec.info)
    with run:
        run.summary.update({f"{v}.{k}": x for v, d in rec.verdicts.items() for k, x in d.items()})
        if rec.report_dir:
            art = wandb.Artifact(f"{rec.name}-report", type="report")
            art.add_dir(str(rec.report_dir))
            run.log_artifact(art)


SINKS.add("mlflow", Sink(_mlflow_cell, _mlflow_experiment))
SINKS.add("wandb", Sink(_wandb_cell, _wandb_experiment))


def default_mlflow_uri(root: Path | None = None) -> str:
    """SQLite store beside the run folders: `<runs root>/mlflow.db`."""
    path = ((root or runs_root()) / "mlflow.db").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def mirror(folder: Path, tracker: str, experiment: str, tags: dict, uri: str | None = None) -> bool:
    """Send a finished run to a tracker; a tracker failure warns and never loses the run folder."""
    try:
        SINKS.get(tracker).cell(folder, experiment, tags, uri)
        return True
    except Exception as e:  # noqa: BLE001 - tracking must never fail a finished run
        warnings.warn(f"{folder}: tracker {tracker!r} failed ({e.__class__.__name__}: {e})", stacklevel=2)
        return False


def mirror_experiment(rec: ExperimentRecord, tracker: str, uri: str | None = None) -> bool:
    """Send an experiment to a tracker (MLflow: re-mirror missing cells, mark interrupted runs FAILED,
    one parent run with verdicts and report); a failure warns and fails nothing."""
    try:
        SINKS.get(tracker).experiment(rec, uri)
        return True
    except Exception as e:  # noqa: BLE001 - tracking must never fail a finished experiment
        warnings.warn(f"{rec.name}: tracker {tracker!r} failed ({e.__class__.__name__}: {e})", stacklevel=2)
        return False


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dict -> {dotted key of each leaf: value} (an empty dict is a leaf)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
