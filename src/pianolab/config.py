"""Run configuration: frozen, validated dataclasses; strict YAML loading; dotted overrides; hash.

A bad key or type is a one-line PianolabError naming the source, the key and the valid keys.
Defaults live here only. A run's identity is `config_hash(cfg)`: the canonical JSON of the
resolved config without the keys in `NOT_IDENTITY` (device, tracking, data and study location),
without the `tuning` section when tuning is off, and without `features.peer_centred` and
`features.stack` when they are off (so runs keep the hashes they had before those options existed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pianolab.errors import PianolabError

NOT_IDENTITY = {("train", "device"), ("train", "compile"), ("train", "deterministic"), ("track",), ("data", "root"),
                ("tuning", "storage")}


@dataclass(frozen=True)
class DataConfig:
    root: str | None = None  # default: $PIANOLAB_DATA or data/percepiano
    split: str = "excerpt"
    folds: int = 4
    repeats: int = 1  # one partition per repeat; repeat r uses split_seed + r
    split_seed: int = 0
    repeat: int = 0  # which repeat this run belongs to
    fold: int = 0
    humans_only: bool = False  # drop deadpan Score/Score2 renditions from train and test


@dataclass(frozen=True)
class FeatureConfig:
    spectrogram: str | None = None  # registered spectrogram kind, e.g. log_mel, cqt
    vector: tuple[str, ...] = ()  # registered vector kinds, e.g. (symbolic,), (all_traditional,)
    renderer: str = "midirenderer"
    seconds: float = 10.0
    length_policy: str = "crop"
    top_k: int | None = None  # keep the k vector features with the highest RF importance (train fold)
    augment_factor: int = 1  # N: training set = originals + N-1 MIDI-augmented renderings (plan A2)
    # append every vector feature minus its mean over the performances of the same excerpt in the same
    # role (train / val / test; in `predict`: the files of one call). Transductive: uses the features,
    # never the labels, of the other performances of the music, as raters compared them.
    peer_centred: bool = False
    # a classic estimator (e.g. ensemble_gb_et) whose 19 predictions join the vector: out-of-fold on the
    # training part, grouped by excerpt (pianolab.features.stack)
    stack: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    name: str = "symbolic_mlp"
    params: dict = field(default_factory=dict)  # overrides passed to create_model/create_estimator


@dataclass(frozen=True)
class ObjectiveConfig:
    name: str = "mse"
    params: dict = field(default_factory=dict)
    label_smoothing: float = 0.0  # shrink targets toward the training mean by this factor


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.05
    schedule: str = "warmup_cosine"
    warmup_frac: float = 0.05
    schedule_params: dict = field(default_factory=dict)
    grad_clip: float = 1.0


@dataclass(frozen=True)
class RegularizeConfig:
    mixup_alpha: float = 0.0
    mixup_prob: float = 0.0
    cutmix_prob: float = 0.0
    early_stopping: int = 0  # patience in epochs on the validation carve-out; 0 = off
    val_fraction: float = 0.15  # excerpt groups of the training fold held out for validation


@dataclass(frozen=True)
class AugmentConfig:
    preset: str = "none"  # light / medium / heavy (pianolab.presets)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    max_seconds: float | None = None  # wall-time budget: stop after the epoch that passes it
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    # deterministic GPU kernels, at a speed cost (trainer.deterministic_kernels; not yet bit-identical
    # on an H200, docs/benchmarks.md); the CPU is bit-reproducible either way
    deterministic: bool = False
    amp: bool = True  # bf16 autocast on CUDA
    checkpoint_every: int = 10
    eval_every: int = 1


@dataclass(frozen=True)
class TrackConfig:
    tracker: str = "mlflow"  # mlflow | wandb | none
    uri: str | None = None


@dataclass(frozen=True)
class TuningConfig:
    """An Optuna search inside the cell's training fold before its fit (`pianolab.ab.tuning`)."""

    space: dict = field(default_factory=dict)  # dotted config key -> {low, high[, log][, int]} | {choices}
    trials: int = 0  # the trial budget (an experiment's budget.trials); 0 = no tuning
    inner_folds: int = 3  # K-fold by excerpt group over the training fold's items
    metric: str = "pearson"  # registered metric, mean over the inner folds
    sampler: str = "tpe"
    pruner: str = "median"
    pruner_params: dict = field(default_factory=dict)
    storage: str | None = None  # Optuna RDB URL; default: SQLite <runs root>/<experiment>/optuna.db


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    regularize: RegularizeConfig = field(default_factory=RegularizeConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)


def _coerce(value: Any, tp: Any, where: str, source: str) -> Any:
    """Check/convert a YAML value to the annotated type; one-line error on mismatch."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is not type(None):
                return _coerce(value, a, where, source)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise PianolabError(f"{source}: {where} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], where, source) for v in value)
    if tp is dict:
        if not isinstance(value, dict):
            raise PianolabError(f"{source}: {where} must be a mapping, got {value!r}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise PianolabError(f"{source}: {where} must be {tp.__name__}, got {value!r}")
    return value


def _build(cls, data: Any, prefix: str, source: str):
    if not isinstance(data, dict):
        raise PianolabError(f"{source}: {prefix or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in names:
            raise PianolabError(f"{source}: unknown key {where!r}; valid: {', '.join(prefix + n for n in names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{where}.", source)
        else:
            kwargs[key] = _coerce(value, tp, where, source)
    return cls(**kwargs)


def config_from_dict(data: dict, source: str = "<config>") -> RunConfig:
    return _build(RunConfig, data or {}, "", source)


def load_config(path: Path | str, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML run config and apply `key=value` dotted overrides."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise PianolabError(f"{path}: cannot read config ({e.__class__.__name__})") from None
    return config_from_dict(apply_overrides(data, overrides), str(path))


def apply_overrides(data: dict, overrides: list[str] | dict) -> dict:
    """Return a copy of `data` with dotted overrides (`model.params.depth=4` or {key: value})."""
    out = json.loads(json.dumps(data))
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides]
    for key, value in items:
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise PianolabError(f"override {key!r}: {p!r} is not a section")
        node[parts[-1]] = value
    return out


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise PianolabError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def to_dict(cfg: RunConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def identity_dict(cfg: RunConfig) -> dict:
    d = to_dict(cfg)
    if not cfg.tuning.trials:
        d.pop("tuning")  # tuning off: its settings cannot change the run
    for option in ("peer_centred", "stack"):  # off: runs keep the hashes they had before the option
        if not getattr(cfg.features, option):
            d["features"].pop(option)
    for path in NOT_IDENTITY:
        node = d
        for p in path[:-1]:
            node = node.get(p, {})
        node.pop(path[-1], None)
    return d


def config_hash(cfg: RunConfig) -> str:
    """Content hash of the resolved config without device/logging/location keys."""
    canonical = json.dumps(identity_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def replace(cfg: RunConfig, **sections: dict) -> RunConfig:
    """Copy of `cfg` with some fields of some sections replaced, e.g. replace(cfg, data={'fold': 2})."""
    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), **v) for k, v in sections.items()})
