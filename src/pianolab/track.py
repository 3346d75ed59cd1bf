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


SINKS: Registry = Registry("tracker")


@SINKS.register("none")
def _no_sink(folder: Path, experiment: str, tags: dict, uri: str | None) -> None:
    return None


@SINKS.register("mlflow")
def mlflow_sink(folder: Path, experiment: str, tags: dict, uri: str | None) -> None:
    """Mirror a finished run folder into MLflow (local SQLite store by default)."""
    import mlflow

    mlflow.set_tracking_uri(uri or default_mlflow_uri(folder.parents[3]))
    mlflow.set_experiment(experiment)
    meta = read_meta(folder)
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    with mlflow.start_run(run_name=folder.parent.parent.name + "/" + folder.name):
        mlflow.set_tags({**{k: str(v) for k, v in tags.items()}, "git_commit": str(meta.get("git_commit")),
                         "data_version": meta.get("data_version"), "run_folder": str(folder)})
        mlflow.log_params({k: str(v)[:250] for k, v in flatten(cfg).items()})
        for rec in read_metrics(folder):
            step = int(rec.get("epoch", 0))
            mlflow.log_metrics({k: float(v) for k, v in rec.items()
                                if isinstance(v, (int, float)) and k != "epoch" and np.isfinite(v)}, step=step)
        mlflow.log_metrics({k: float(v) for k, v in meta.get("summary", {}).items()
                            if isinstance(v, (int, float))})


@SINKS.register("wandb")
def wandb_sink(folder: Path, experiment: str, tags: dict, uri: str | None) -> None:
    """Mirror a run into W&B, offline unless the user configured W&B (WANDB_MODE)."""
    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    run = wandb.init(project=experiment, config=cfg, tags=[f"{k}={v}" for k, v in tags.items()],
                     dir=str(folder), reinit=True)
    for rec in read_metrics(folder):
        run.log(rec)
    run.finish()


def default_mlflow_uri(root: Path | None = None) -> str:
    """SQLite store beside the run folders: `<runs root>/mlflow.db`."""
    path = ((root or runs_root()) / "mlflow.db").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def mirror(folder: Path, tracker: str, experiment: str, tags: dict, uri: str | None = None) -> bool:
    """Send a finished run to a tracker; a tracker failure warns and never loses the run folder."""
    try:
        SINKS.get(tracker)(folder, experiment, tags, uri)
        return True
    except Exception as e:  # noqa: BLE001 - tracking must never fail a finished run
        warnings.warn(f"{folder}: tracker {tracker!r} failed ({e.__class__.__name__}: {e})", stacklevel=2)
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
