"""Load-time checks of a resolved run config: registered names, model and schedule options, no-ops.

`check_config(cfg, source, keys)` raises a one-line PianolabError `<source>: <key>: <problem>` for
- a name no registry knows (the message lists every valid name: neural models and scikit-learn
  estimators alike);
- options the named model, estimator, schedule or objective refuses (scikit-learn's own parameter
  ranges, e.g. ridge `alpha: -1`);
- a key set to a non-default value that has no effect for the chosen model and features (`NO_OPS`:
  key -> predicate on the resolved config -> reason), so that an option never silently does nothing.
`keys` are the dotted keys the user set (default: every non-default leaf); `no_effect(cfg, key)` gives
the reason for one key, for callers that combine several configs (an experiment's variants).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pianolab.config import RunConfig, config_from_dict, leaves, to_dict
from pianolab.errors import PianolabError


def _model_inputs(name: str) -> tuple[str, ...]:
    """The batch keys the model `name` reads: ('vector',) for a scikit-learn estimator."""
    from pianolab.models import MODELS
    from pianolab.models.classic import ESTIMATORS

    if name in ESTIMATORS:
        return ("vector",)
    return typing.get_type_hints(MODELS.get(name))["return"].inputs


def _estimator(cfg: RunConfig) -> bool:
    from pianolab.models.classic import ESTIMATORS

    return cfg.model.name in ESTIMATORS


def _kind(name: str):
    from pianolab.features.kinds import get_kind

    return get_kind(name)


def _reads_spec(cfg: RunConfig) -> bool:
    return "spec" in _model_inputs(cfg.model.name)


def _uses_spec(cfg: RunConfig) -> bool:
    return _reads_spec(cfg) and cfg.features.spectrogram is not None


def _uses_vector(cfg: RunConfig) -> bool:
    return "vector" in _model_inputs(cfg.model.name) and bool(cfg.features.vector)


def _uses_audio(cfg: RunConfig) -> bool:
    return _uses_spec(cfg) or (_uses_vector(cfg) and any(_kind(v).input == "audio" for v in cfg.features.vector))


def _preset(cfg: RunConfig):
    from pianolab.presets import PRESETS

    return PRESETS.get(cfg.augment.preset)


def _midi_parts(cfg: RunConfig) -> bool:
    return _midi_parts_of(cfg.augment.preset)


def _midi_parts_of(name: str) -> bool:
    from pianolab.presets import PRESETS

    p = PRESETS.get(name)
    return tuple(p.time_stretch_range) != (1.0, 1.0) or tuple(p.pitch_shift_range) != (0, 0) \
        or p.velocity_jitter != 0


def _preset_acts_without_spec(cfg: RunConfig) -> bool:
    """Whether the preset changes a run that reads no spectrogram: its MIDI-level parts shape the
    augmented copies' vectors, its mixup the batches of a neural model."""
    return (cfg.features.augment_factor > 1 and _midi_parts(cfg)) or \
        (not _estimator(cfg) and _preset(cfg).mixup_prob > 0)


@dataclass(frozen=True)
class NoOp:
    """`key` (or any key below it) has no effect when `when(cfg)`; `why` says so ({model}, {preset}: the
    config's model and augmentation preset)."""

    key: str
    when: Callable[[RunConfig], bool]
    why: str


_GRADIENT_ONLY = "model {model!r} is a scikit-learn estimator (no gradient training)"


def _step_decay_idle(cfg: RunConfig) -> bool:
    """step_decay whose milestones (epochs) all fall at or after the run's last epoch: a constant rate."""
    from pianolab.train.optim import STEP_DECAY_MILESTONES

    if cfg.optim.schedule != "step_decay":
        return False
    milestones = cfg.optim.schedule_params.get("milestones", STEP_DECAY_MILESTONES)
    return all(m >= cfg.train.epochs for m in milestones)


def _continual_off(cfg: RunConfig, key: str) -> bool:
    from pianolab.adapt.continual import option_no_effect

    return option_no_effect(cfg, key)

NO_OPS: tuple[NoOp, ...] = (
    *(NoOp(key, _estimator, _GRADIENT_ONLY) for key in (
        "optim", "objective.name", "objective.params", "regularize", "train.epochs", "train.batch_size",
        "train.amp", "train.compile", "train.checkpoint_every", "train.eval_every", "train.max_seconds")),
    NoOp("optim.schedule", _step_decay_idle, "every step_decay milestone (optim.schedule_params.milestones, "
         "default epochs 50, 100, 150) falls at or after train.epochs, so the rate never decays"),
    NoOp("augment.preset", lambda c: not _reads_spec(c) and not _preset_acts_without_spec(c),
         "model {model!r} reads no spectrogram, so a preset acts only through its MIDI-level parts (on "
         "features.augment_factor > 1 copies) or, on a neural model, its mixup, and this one has neither"),
    NoOp("augment.preset", lambda c: c.features.augment_factor == 1 and _midi_parts(c),
         "its time_stretch_range/pitch_shift_range/velocity_jitter act only on MIDI-augmented copies, "
         "and features.augment_factor is 1 (set it > 1, or use 'spec_{preset}' for the spectrogram-level "
         "parts alone)"),
    NoOp("features.augment_factor", lambda c: c.augment.preset != "none" and not _midi_parts(c),
         "the preset (augment.preset) has no MIDI-level parts, so its augmented copies equal the originals"),
    NoOp("regularize.cutmix_prob", lambda c: not _uses_spec(c),
         "cutmix pastes spectrogram patches and model {model!r} gets no spectrogram"),
    NoOp("regularize.mixup_alpha", lambda c: c.regularize.mixup_prob == 0 and _preset(c).mixup_prob == 0,
         "it shapes mixup, which is off (regularize.mixup_prob is 0 and the preset has no mixup)"),
    NoOp("regularize.early_stopping", lambda c: c.regularize.val_fraction == 0,
         "it watches the validation carve-out, and regularize.val_fraction is 0"),
    NoOp("features.spectrogram", lambda c: not _reads_spec(c), "model {model!r} reads no spectrogram"),
    NoOp("features.vector", lambda c: "vector" not in _model_inputs(c.model.name),
         "model {model!r} reads no feature vector"),
    *(NoOp(key, lambda c: not _uses_vector(c), "model {model!r} gets no feature vector")
      for key in ("features.top_k", "features.peer_centred", "features.stack")),
    NoOp("features.seconds", lambda c: not _uses_spec(c), "only spectrograms are cut to a length, and "
         "model {model!r} gets none"),
    NoOp("features.length_policy", lambda c: not _uses_spec(c), "only spectrograms are cut to a length, "
         "and model {model!r} gets none"),
    NoOp("features.renderer", lambda c: not _uses_audio(c), "no feature of model {model!r} is computed "
         "from rendered audio"),
    *(NoOp(key, _estimator, _GRADIENT_ONLY) for key in ("continual", "pretrain")),
    *(NoOp(f"continual.{key}", lambda c, key=key: _continual_off(c, key),
           "only the strategy it belongs to reads it (continual.strategy)")
      for key in ("first", "replay_fraction", "ewc_lambda", "lwf_weight")),
    NoOp("pretrain", lambda c: c.pretrain.method == "none", "pretraining is off (pretrain.method: none)"),
    NoOp("tuning", lambda c: c.tuning.trials == 0, "tuning runs only with tuning.trials > 0"),
    NoOp("ensemble.snapshots", _estimator, "model {model!r} is a scikit-learn estimator (no learning-rate "
         "schedule to cycle, no weights to snapshot; ensemble.bagging averages seeds)"),
    NoOp("ensemble.tta_preset", lambda c: c.ensemble.tta == 1, "it draws the test-time copies, and "
         "ensemble.tta is 1"),
    NoOp("ensemble.tta", lambda c: not _midi_parts_of(c.ensemble.tta_preset), "preset "
         "ensemble.tta_preset has no MIDI-level parts, so the test-time copies equal the originals"),
    NoOp("adapt.tasks", lambda c: c.adapt.k == 0, "few-shot tasks draw support only with adapt.k > 0"),
    NoOp("adapt.shrinkage", lambda c: c.adapt.strategy not in ("shrinkage", "residual"),
         "only the shrinkage and residual strategies shrink (adapt.strategy)"),
    *(NoOp(f"adapt.{key}", lambda c: c.adapt.strategy not in ("finetune_head", "maml", "fomaml", "reptile"),
           "only gradient strategies (finetune_head, maml, fomaml, reptile) take steps on the support")
      for key in ("steps", "lr")),
    *(NoOp(f"adapt.{key}", lambda c: c.adapt.strategy not in ("maml", "fomaml", "reptile"),
           "only maml, fomaml and reptile meta-train") for key in ("meta_steps", "meta_batch", "meta_lr")),
)


def no_effect(cfg: RunConfig, key: str) -> str | None:
    """Why setting `key` has no effect in `cfg`, or None when it has one."""
    for rule in NO_OPS:
        if (key == rule.key or key.startswith(rule.key + ".")) and rule.when(cfg):
            return rule.why.format(model=cfg.model.name, preset=cfg.augment.preset)
    return None


_WHOLE = frozenset({"tuning.space"})  # one key, however many entries


def set_keys(cfg: RunConfig) -> list[str]:
    """The dotted leaves of `cfg` whose value differs from the default config's."""
    default = leaves(to_dict(RunConfig()), _WHOLE)
    return [k for k, v in leaves(to_dict(cfg), _WHOLE).items() if default.get(k, object()) != v]


def _names(cfg: RunConfig) -> dict[str, tuple[list[str], Iterable[str]]]:
    """Key -> (valid names, the names the config uses there)."""
    from pianolab.adapt.continual import STRATEGIES as CONTINUAL
    from pianolab.adapt.fewshot import FEWSHOT, TASKS
    from pianolab.adapt.pretrain import METHODS as PRETRAIN
    from pianolab.data.rater_effects import SAMPLE_WEIGHTS, TARGETS
    from pianolab.data.splits import STRATEGIES
    from pianolab.features.kinds import FEATURE_KINDS, register_all
    from pianolab.features.spectrogram import LENGTH_POLICIES
    from pianolab.models import MODELS
    from pianolab.models.classic import ESTIMATORS
    from pianolab.presets import PRESETS
    from pianolab.render.renderers import RENDERERS
    from pianolab.track import SINKS
    from pianolab.train.objective import OBJECTIVES
    from pianolab.train.optim import SCHEDULES

    register_all()
    kinds = [FEATURE_KINDS.get(n) for n in FEATURE_KINDS]
    f = cfg.features
    optional = lambda v: [] if v is None else [v]  # noqa: E731
    return {
        "model.name": (sorted([*MODELS.names(), *ESTIMATORS.names()]), [cfg.model.name]),
        "features.spectrogram": ([k.name for k in kinds if k.spectrogram], optional(f.spectrogram)),
        "features.vector": ([k.name for k in kinds if not k.spectrogram], f.vector),
        "features.stack": (ESTIMATORS.names(), optional(f.stack)),
        "features.renderer": (RENDERERS.names(), [f.renderer]),
        "features.length_policy": (LENGTH_POLICIES.names(), [f.length_policy]),
        "data.split": (STRATEGIES.names(), [cfg.data.split]),
        "data.targets": (TARGETS.names(), [cfg.data.targets]),
        "train.sample_weights": (SAMPLE_WEIGHTS.names(), [cfg.train.sample_weights]),
        "objective.name": (OBJECTIVES.names(), [cfg.objective.name]),
        "optim.schedule": (SCHEDULES.names(), [cfg.optim.schedule]),
        "augment.preset": (PRESETS.names(), [cfg.augment.preset]),
        "ensemble.tta_preset": (PRESETS.names(), [cfg.ensemble.tta_preset]),
        "track.tracker": (SINKS.names(), [cfg.track.tracker]),
        "continual.strategy": (["none", *CONTINUAL.names()], [cfg.continual.strategy]),
        "pretrain.method": (["none", *PRETRAIN.names()], [cfg.pretrain.method]),
        "adapt.strategy": (FEWSHOT.names(), [cfg.adapt.strategy]),
        "adapt.tasks": (TASKS.names(), [cfg.adapt.tasks]),
    }


def _check_names(cfg: RunConfig, source: str) -> None:
    for key, (valid, used) in _names(cfg).items():
        for name in used:
            if name not in valid:
                raise PianolabError(f"{source}: {key}: unknown name {name!r}; valid: {', '.join(valid)}")


def _validate_estimator(est) -> None:
    """scikit-learn's own parameter checks (types and ranges), on `est` and the estimators inside it."""
    from sklearn.base import BaseEstimator

    if hasattr(est, "_parameter_constraints"):
        est._validate_params()
    for value in est.get_params(deep=False).values():
        for inner in value if isinstance(value, list) else [value]:
            if isinstance(inner, BaseEstimator):
                _validate_estimator(inner)


def _model_options(cfg: RunConfig) -> None:
    if _estimator(cfg):
        from pianolab.models.classic import create_estimator

        try:
            _validate_estimator(create_estimator(cfg.model.name, seed=cfg.train.seed, **cfg.model.params).estimator)
        except ValueError as e:  # sklearn's InvalidParameterError
            raise PianolabError(str(e).splitlines()[0]) from None
        return
    from pianolab.models import MODELS

    config = typing.get_type_hints(typing.get_type_hints(MODELS.get(cfg.model.name))["return"].__init__)["cfg"]
    valid = sorted(inspect.signature(config).parameters)
    unknown = sorted(set(cfg.model.params) - set(valid))
    if unknown:
        raise PianolabError(f"model {cfg.model.name!r} does not accept {', '.join(unknown)}; "
                            f"valid: {', '.join(valid)}")


def _schedule_options(cfg: RunConfig) -> None:
    import torch

    from pianolab.train.optim import make_schedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    make_schedule(cfg.optim.schedule, opt, 100, **cfg.optim.schedule_params)


def _objective_options(cfg: RunConfig) -> None:
    from pianolab.train.objective import make_objective

    make_objective(cfg.objective.name, **cfg.objective.params)


def _adapt_options(cfg: RunConfig) -> None:
    """A few-shot strategy that does not apply to the model or split (`pianolab.adapt.fewshot.refusal`)."""
    from pianolab.adapt.fewshot import refusal
    from pianolab.data.splits import STRATEGIES

    a = cfg.adapt
    if a.k and cfg.domain.target:
        raise PianolabError("few-shot adaptation (adapt.k) does not combine with a domain shift (domain.target)")
    why = refusal(a.strategy, a.k, a.tasks, STRATEGIES.get(cfg.data.split).guards, _estimator(cfg),
                  _model_inputs(cfg.model.name), cfg.model.name, cfg.data.split)
    if why:
        raise PianolabError(why)


def _continual_options(cfg: RunConfig) -> None:
    from pianolab.adapt.continual import check

    if why := check(cfg):
        raise PianolabError(why)


def _pretrain_options(cfg: RunConfig) -> None:
    from pianolab.adapt.pretrain import check

    if why := check(cfg):
        raise PianolabError(why)


def _ensemble_options(cfg: RunConfig) -> None:
    """Ensemble options that cannot work with the rest of the config (`pianolab.advanced`)."""
    e, default = cfg.ensemble, RunConfig()
    if e.bagging > 1 and not _estimator(cfg):
        raise PianolabError(f"bagging averages scikit-learn estimators; model {cfg.model.name!r} is neural "
                            "(use ensemble.snapshots)")
    if e.snapshots and not _estimator(cfg):
        if (cfg.optim.schedule, cfg.optim.schedule_params) != (default.optim.schedule, default.optim.schedule_params):
            raise PianolabError("snapshots bring their own schedule (cyclic_cosine, one cycle per snapshot): "
                                "leave optim.schedule and optim.schedule_params unset")
        if cfg.train.epochs % e.snapshots:
            raise PianolabError(f"train.epochs ({cfg.train.epochs}) must be a multiple of ensemble.snapshots "
                                f"({e.snapshots}): one snapshot at the end of each equal cycle")
        if cfg.regularize.early_stopping or cfg.train.max_seconds is not None:
            raise PianolabError("snapshots need every cycle: regularize.early_stopping and train.max_seconds "
                                "would stop or rewind training")
    if e.tta > 1 and cfg.features.peer_centred:
        raise PianolabError("ensemble.tta does not combine with features.peer_centred")


def _sample_weight_options(cfg: RunConfig) -> None:
    """Sample weights need a scikit-learn estimator whose fit takes them (`accepts_sample_weight`)."""
    if cfg.train.sample_weights == "none":
        return
    if not _estimator(cfg):
        raise PianolabError(f"sample weights go to scikit-learn estimators; model {cfg.model.name!r} is neural")
    from pianolab.advanced.ensembles import accepts_sample_weight
    from pianolab.models.classic import create_estimator

    est = create_estimator(cfg.model.name, seed=cfg.train.seed, bagging=cfg.ensemble.bagging, **cfg.model.params)
    if not accepts_sample_weight(est.estimator):
        raise PianolabError(f"estimator {cfg.model.name!r} does not accept sample weights (its fit takes no "
                            "sample_weight)")
    if cfg.domain.target:
        raise PianolabError("sample weights do not combine with a domain shift (domain.target)")


def _two_level_options(cfg: RunConfig) -> None:
    """`two_level` reads the [raw, peer] vector of `features.peer_centred` (`pianolab.advanced.two_level`)."""
    from pianolab.advanced.two_level import refusal

    f = cfg.features
    if why := refusal(cfg.model.name, f.peer_centred, f.top_k, f.stack):
        raise PianolabError(why)


def _data_midi_options(cfg: RunConfig) -> None:
    if cfg.data.midi is not None and not Path(cfg.data.midi).is_dir():
        raise PianolabError(f"folder {cfg.data.midi} does not exist (the performances as <stem>.mid)")


_OPTIONS = {"data.midi": _data_midi_options, "model.name": _two_level_options, "model.params": _model_options,
            "optim.schedule_params": _schedule_options, "objective.params": _objective_options,
            "ensemble": _ensemble_options, "continual": _continual_options, "pretrain": _pretrain_options,
            "adapt": _adapt_options, "train.sample_weights": _sample_weight_options}


def check_config(cfg: RunConfig, source: str, keys: Iterable[str] | None = None) -> None:
    """Refuse unknown names, refused options and set keys without effect (see the module docstring)."""
    config_from_dict(to_dict(cfg), source)  # the ranges again: `replace` (e.g. --seed) does not check them
    _check_names(cfg, source)
    from pianolab.adapt.domain import check_domain

    check_domain(cfg, source)  # a domain section that cannot act (pianolab.adapt.domain)
    for key, check in _OPTIONS.items():
        try:
            check(cfg)
        except (PianolabError, TypeError) as e:
            raise PianolabError(f"{source}: {key}: {e}") from None
    default, current = leaves(to_dict(RunConfig()), _WHOLE), leaves(to_dict(cfg), _WHOLE)
    for key in set_keys(cfg) if keys is None else keys:
        if current.get(key, object()) == default.get(key, object()):
            continue
        if why := no_effect(cfg, key):
            raise PianolabError(f"{source}: {key}: has no effect: {why}")
