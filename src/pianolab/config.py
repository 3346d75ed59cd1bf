"""Run configuration: frozen, validated dataclasses; strict YAML loading; dotted overrides; hash.

A bad key, type or value is a one-line PianolabError naming the source and the key (and the valid
keys, or the valid range: `_in(...)` on a field). Defaults live here only. A run's identity is
`config_hash(cfg)`: the canonical JSON of the resolved config without the keys in `NOT_IDENTITY`
(device, tracking, data and study location), without the `tuning` section when tuning is off,
without `features.peer_centred` and `features.stack` when they are off, and without `adapt` when it
is the default (so runs keep the hashes they had before those options existed); `optim.warmup_frac:
null` enters as the schedule's own warm-up.
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
# the warm-up (fraction of the steps) a schedule's name asks for; every other schedule has none
SCHEDULE_WARMUP = {"warmup_cosine": 0.05}


@dataclass(frozen=True)
class Bound:
    """A field's valid values: `lo` <= v (< if `lo_open`), v <= `hi` (< if `hi_open`)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def problem(self, v: float) -> str | None:
        low = self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)
        high = self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)
        return None if low and high else f"must be {self}, got {v!r}"

    def __str__(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        return " and ".join(parts)


def _in(default: Any, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
        hi_open: bool = False):
    """A dataclass field with a default and a valid range, checked when a config is built."""
    return field(default=default, metadata={"bound": Bound(lo, hi, lo_open, hi_open)})


@dataclass(frozen=True)
class DataConfig:
    root: str | None = None  # default: $PIANOLAB_DATA or data/percepiano
    # the performances as `<stem>.mid` in another folder than <root>/midi, e.g. their transcriptions from
    # recordings (data/percepiano/transcribed/fluidr3_clean): train and test on those inputs
    midi: str | None = None
    split: str = "excerpt"
    folds: int = _in(4, 2)
    repeats: int = _in(1, 1)  # one partition per repeat; repeat r uses split_seed + r
    split_seed: int = _in(0, 0)
    repeat: int = _in(0, 0)  # which repeat this run belongs to
    fold: int = _in(0, 0)
    humans_only: bool = False  # drop deadpan Score/Score2 renditions from train and test
    # training targets (pianolab.data.rater_effects.TARGETS): mean (the official labels) | rater_offsets |
    # rater_effects (a rater model fitted on the training fold's individual ratings); test: official labels
    targets: str = "mean"


@dataclass(frozen=True)
class FeatureConfig:
    spectrogram: str | None = None  # registered spectrogram kind, e.g. log_mel, cqt
    vector: tuple[str, ...] = ()  # registered vector kinds, e.g. (symbolic,), (all_traditional,)
    renderer: str = "midirenderer"
    seconds: float = _in(10.0, 0, lo_open=True)
    length_policy: str = "crop"
    top_k: int | None = _in(None, 1)  # keep the k vector features with the highest RF importance (train fold)
    augment_factor: int = _in(1, 1)  # N: training set = originals + N-1 MIDI-augmented renderings (plan A2)
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
    label_smoothing: float = _in(0.0, 0, 1, hi_open=True)  # shrink targets toward the training mean by this factor


@dataclass(frozen=True)
class OptimConfig:
    lr: float = _in(1e-3, 0, lo_open=True)
    weight_decay: float = _in(0.05, 0)
    schedule: str = "warmup_cosine"
    # linear warm-up over this fraction of the steps; None: the schedule's own (SCHEDULE_WARMUP)
    warmup_frac: float | None = _in(None, 0, 1, hi_open=True)
    schedule_params: dict = field(default_factory=dict)
    grad_clip: float = _in(1.0, 0, lo_open=True)


@dataclass(frozen=True)
class RegularizeConfig:
    mixup_alpha: float = _in(0.0, 0)
    mixup_prob: float = _in(0.0, 0, 1)
    cutmix_prob: float = _in(0.0, 0, 1)
    early_stopping: int = _in(0, 0)  # patience in epochs on the validation carve-out; 0 = off
    val_fraction: float = _in(0.15, 0, 1, hi_open=True)  # excerpt groups of the training fold held out for validation


@dataclass(frozen=True)
class AugmentConfig:
    preset: str = "none"  # light / medium / heavy (pianolab.presets)


@dataclass(frozen=True)
class EnsembleConfig:
    """Ensembles of one model (pianolab.advanced): bagging, snapshot ensembles, test-time augmentation."""

    bagging: int = _in(1, 1)  # N: the mean of the estimator under N seeds (seed + 1000 i), as one model
    snapshots: int = _in(0, 0)  # M > 0 (neural): M cycles of cosine LR; the M end-of-cycle weights averaged
    tta: int = _in(1, 1)  # N: each test item predicted as the mean over itself + N-1 MIDI-augmented copies
    tta_preset: str = "light"  # the augmentation preset of the test-time copies (its MIDI-level parts)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _in(100, 1)
    max_seconds: float | None = _in(None, 0)  # wall-time budget: stop after the epoch that passes it
    batch_size: int = _in(32, 1)
    seed: int = _in(0, 0)
    device: str = "auto"
    compile: bool = False
    # deterministic GPU kernels, at a speed cost (trainer.deterministic_kernels; not yet bit-identical
    # on an H200, docs/benchmarks.md); the CPU is bit-reproducible either way
    deterministic: bool = False
    amp: bool = True  # bf16 autocast on CUDA
    checkpoint_every: int = _in(10, 1)
    eval_every: int = _in(1, 1)
    # per-item sample weights of scikit-learn estimators (pianolab.data.rater_effects.SAMPLE_WEIGHTS):
    # none | rater_precision (inverse variance of the item's mean rating, from the training fold's ratings)
    sample_weights: str = "none"


@dataclass(frozen=True)
class TrackConfig:
    tracker: str = "mlflow"  # mlflow | wandb | none
    uri: str | None = None


@dataclass(frozen=True)
class TuningConfig:
    """An Optuna search inside the cell's training fold before its fit (`pianolab.ab.tuning`)."""

    space: dict = field(default_factory=dict)  # dotted config key -> {low, high[, log][, int]} | {choices}
    trials: int = _in(0, 0)  # the trial budget (an experiment's budget.trials); 0 = no tuning
    inner_folds: int = _in(3, 2)  # K-fold by excerpt group over the training fold's items
    metric: str = "pearson"  # registered metric, mean over the inner folds
    sampler: str = "tpe"
    pruner: str = "median"
    pruner_params: dict = field(default_factory=dict)
    storage: str | None = None  # Optuna RDB URL; default: SQLite <runs root>/<experiment>/optuna.db


@dataclass(frozen=True)
class AdaptConfig:
    """Few-shot adaptation to each test task from k of its rated items (`pianolab.adapt.fewshot`)."""

    strategy: str = "none"  # none | offset | shrinkage | residual | finetune_head | maml | fomaml | reptile
    k: int = _in(0, 0)  # support items per test task (k > 0 with `none`: the same query, unadapted)
    tasks: str = "excerpt"  # excerpt | performer: what a task is
    shrinkage: float = _in(1.0, 0)  # lambda: the offset times n / (n + lambda) (shrinkage, residual)
    steps: int = _in(5, 1)  # gradient steps on the support (finetune_head; inner loop of maml/fomaml/reptile)
    lr: float = _in(0.01, 0, lo_open=True)  # their step size (plain SGD on standardised targets)
    meta_steps: int = _in(50, 1)  # outer steps of maml/fomaml/reptile on the training fold's tasks
    meta_batch: int = _in(8, 1)  # tasks per outer step
    meta_lr: float = _in(1e-4, 0, lo_open=True)  # Adam step size of the outer loop


@dataclass(frozen=True)
class ContinualConfig:
    """Learning new dimensions without forgetting (`pianolab.adapt.continual`): phase 1 trains on the
    `first` dimensions, phase 2 adds the rest with the strategy; none = one ordinary phase."""

    strategy: str = "none"  # none | joint | naive | replay | ewc | lwf
    first: tuple[str, ...] = ("timing", "articulation", "pedal")  # dimension names or categories
    replay_fraction: float = _in(0.2, 0, 1, lo_open=True)  # replay: phase-1 items kept with their labels
    ewc_lambda: float = _in(100.0, 0, lo_open=True)  # ewc: weight of the Fisher penalty
    lwf_weight: float = _in(1.0, 0, lo_open=True)  # lwf: weight of the phase-1 model's outputs as targets


@dataclass(frozen=True)
class PretrainConfig:
    """Self-supervised pretraining before the fit (`pianolab.adapt.pretrain`) on unlabelled inputs: the
    training fold's items, their excerpts' score MIDI, augmented copies and `corpus` (never the test fold)."""

    method: str = "none"  # none | masked_feature (vector MLP) | masked_patch (AST, SSAST-style)
    epochs: int = _in(50, 1)
    mask_ratio: float = _in(0.3, 0, 1, lo_open=True, hi_open=True)
    scores: bool = True  # add the score MIDI of the training fold's excerpts
    copies: int = _in(0, 0)  # MIDI-augmented copies (preset medium) of the training fold's items
    corpus: tuple[str, ...] = ()  # MIDI files or folders of unlabelled MIDI


@dataclass(frozen=True)
class DomainConfig:
    """Domain adaptation (`pianolab.adapt.domain`): train on a source domain, rate the target's items."""

    method: str = "none"  # none | standardise | coral | self_training | dann
    target: str | None = None  # registered domain (pianolab.adapt.domain.DOMAINS) or a folder of MIDI/audio
    source: str | None = None  # the same; default percepiano (the project's performance MIDI)
    train_on: str = "source"  # 'target': the upper bound, trained on the target's own labels
    params: dict = field(default_factory=dict)  # the method's options (e.g. coral eps, self_training rounds)


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    regularize: RegularizeConfig = field(default_factory=RegularizeConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    domain: DomainConfig = field(default_factory=DomainConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)


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
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in fields:
            raise PianolabError(f"{source}: unknown key {where!r}; valid: {', '.join(prefix + n for n in fields)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{where}.", source)
            continue
        kwargs[key] = _coerce(value, tp, where, source)
        bound = fields[key].metadata.get("bound")
        if bound is not None and kwargs[key] is not None and (problem := bound.problem(kwargs[key])):
            raise PianolabError(f"{source}: {where}: {problem}")
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


def leaves(data: dict, keep: frozenset[str] = frozenset(), prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf of nested mappings (`{model: {name: x}}` and `{model.name: x}`
    both give `model.name`); a key in `keep` stays whole, as do lists; an empty mapping has no leaf."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if isinstance(value, dict) and where not in keep:
            out.update(leaves(value, keep, f"{where}."))
        else:
            out[where] = value
    return out


def identity_dict(cfg: RunConfig) -> dict:
    d = to_dict(cfg)
    if cfg.optim.warmup_frac is None:  # the schedule's own warm-up, spelled out: same training, same hash
        d["optim"]["warmup_frac"] = SCHEDULE_WARMUP.get(cfg.optim.schedule, 0.0)
    if not cfg.tuning.trials:
        d.pop("tuning")  # tuning off: its settings cannot change the run
    if cfg.adapt == AdaptConfig():
        d.pop("adapt")  # no few-shot adaptation: runs keep the hashes they had before the option
    for section, off in (("continual", cfg.continual == ContinualConfig()),
                         ("pretrain", cfg.pretrain == PretrainConfig())):
        if off:  # the default: runs keep the hashes they had before the option
            d.pop(section)
    if cfg.domain == DomainConfig():
        d.pop("domain")  # no domain shift: runs keep the hashes they had before the option
    for option in ("peer_centred", "stack"):  # off: runs keep the hashes they had before the option
        if not getattr(cfg.features, option):
            d["features"].pop(option)
    if cfg.ensemble == EnsembleConfig():  # no ensemble option: runs keep their hashes
        d.pop("ensemble")
    for section, key, off in (("data", "targets", "mean"), ("data", "midi", None), ("train", "sample_weights", "none")):
        if getattr(getattr(cfg, section), key) == off:  # the default: runs keep their hashes
            d[section].pop(key)
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
