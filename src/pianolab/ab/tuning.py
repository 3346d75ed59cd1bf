"""Hyperparameter tuning at equal budget: an Optuna search nested inside a cell's training fold.

A config whose `tuning.trials` is set (an experiment's `tuning:` section plus its `budget.trials`, the
same for every variant) is tuned by `tune` inside `pianolab.train.run.prepare_cell`, before its fit.
Each trial samples `tuning.space` (dotted config keys) and fits the model on an inner K-fold split,
by excerpt group, of the cell's training items only (the cell's test fold is never touched),
through the `Fitting` the caller gives (`train.run`: the same `make_cell`/`fit_cell` as a run,
normalisation fitted on the inner training part); its score is the mean over the inner folds of a
registered metric. The running mean is reported after each inner fold, so the pruner can stop a poor
trial early. The cell is then
trained on its whole training fold with the best params.

One study per cell, named by the cell's identity (experiment, variant, config hash: the hash
includes the space and the budget) and the data version, in SQLite `<runs root>/<experiment>/optuna.db` unless
`tuning.storage` names an RDB URL (a cluster). A rerun loads the study and runs only the trials
still missing; a trial left running by a killed process is marked failed and does not count. The
sampler is seeded with the cell's seed (a resumed study is reproducible from the stored trials, not
bit-identical to an uninterrupted one). The run folder gets `tuning.json` (every trial, the best
params and score, the counts, each inner fold's held-out items), meta.json a `tuning` summary with
the best params, and config.yaml becomes the tuned config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from filelock import FileLock
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from pianolab import track
from pianolab.config import RunConfig, apply_overrides, config_from_dict, config_hash, to_dict
from pianolab.data.percepiano import Dataset
from pianolab.data.splits import _group_kfold
from pianolab.errors import PianolabError
from pianolab.evaluate.metrics import METRICS, Metric
from pianolab.registry import Registry

SAMPLERS: Registry = Registry("sampler")
SAMPLERS.add("tpe", lambda seed: optuna.samplers.TPESampler(seed=seed))
SAMPLERS.add("random", lambda seed: optuna.samplers.RandomSampler(seed=seed))

PRUNERS: Registry = Registry("pruner")  # constructors taking `tuning.pruner_params`
PRUNERS.add("none", optuna.pruners.NopPruner)
PRUNERS.add("median", optuna.pruners.MedianPruner)

# Keys a search may not move: set per cell, the search itself, or the inputs (loaded once per cell).
FIXED = ("data", "tuning", "track", "features", "train.seed", "train.device", "train.compile",
         "regularize.val_fraction")
TUNABLE_FEATURES = ("features.top_k", "features.augment_factor")  # applied at fit time
_SHAPES = "{low, high[, log][, int]} or {choices: [...]}"


def overlaps(a: str, b: str) -> bool:
    """Whether two dotted config keys name the same setting or one holds the other."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def check(cfg: RunConfig, source: str) -> dict[str, BaseDistribution]:
    """Validate the tuning section of a config that tunes; returns the search space."""
    t = cfg.tuning
    if t.trials < 1 or t.inner_folds < 2:
        raise PianolabError(f"{source}: tuning needs trials >= 1 and inner_folds >= 2 "
                            f"(got {t.trials} and {t.inner_folds})")
    for registry, key in ((METRICS, "metric"), (SAMPLERS, "sampler"), (PRUNERS, "pruner")):
        try:
            registry.get(getattr(t, key))
        except PianolabError as e:
            raise PianolabError(f"{source}: tuning.{key}: {e}") from None
    try:
        PRUNERS.get(t.pruner)(**t.pruner_params)
    except (TypeError, ValueError) as e:
        raise PianolabError(f"{source}: tuning.pruner_params: {e}") from None
    space = search_space(t.space, source)
    for key, dist in space.items():
        if key not in TUNABLE_FEATURES and any(overlaps(key, f) for f in FIXED):
            raise PianolabError(f"{source}: tuning.space.{key} cannot be tuned (fixed per cell: "
                                f"{', '.join(FIXED)}; of the features only {', '.join(TUNABLE_FEATURES)})")
        for value in dist.choices if isinstance(dist, CategoricalDistribution) else (dist.low, dist.high):
            _check_model(with_params(cfg, {key: value}, f"{source} (tuning.space)"), f"{source}: tuning.space.{key}")
    return space


@dataclass(frozen=True)
class Fitting:
    """How a trial fits, given by the caller (`pianolab.train.run`, which this module does not import):
    `carve(cfg, train, rng) -> (train, val)` the validation carve-out of an inner training part;
    `fit(cfg, train, val, test) -> predictions of the test items` (item indices into the dataset)."""

    carve: Callable[[RunConfig, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]
    fit: Callable[[RunConfig, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _check_model(cfg: RunConfig, where: str) -> None:
    """Estimator params are checked by building the (unfitted) estimator; neural ones at the first trial."""
    from pianolab.models.classic import ESTIMATORS, create_estimator

    if cfg.model.name in ESTIMATORS:
        try:
            create_estimator(cfg.model.name, seed=0, **cfg.model.params)
        except PianolabError as e:
            raise PianolabError(f"{where}: {e}") from None


def search_space(space: dict, source: str) -> dict[str, BaseDistribution]:
    """`tuning.space` as Optuna distributions: {low, high} float, with `int: true` an integer,
    `log: true` log-uniform; {choices: [...]} categorical."""
    if not isinstance(space, dict) or not space:
        raise PianolabError(f"{source}: tuning.space must map dotted config keys to {_SHAPES}")
    return {str(key): _distribution(spec, f"{source}: tuning.space.{key}") for key, spec in space.items()}


def _distribution(spec, where: str) -> BaseDistribution:
    if not isinstance(spec, dict):
        raise PianolabError(f"{where} must be {_SHAPES}")
    allowed = {"choices"} if "choices" in spec else {"low", "high", "log", "int"}
    if unknown := sorted(set(spec) - allowed):
        raise PianolabError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(sorted(allowed))}")
    try:
        if "choices" in spec:
            return _categorical(spec["choices"])
        low, high, log, is_int = spec["low"], spec["high"], spec.get("log", False), spec.get("int", False)
        number = (int,) if is_int else (int, float)
        if not all(isinstance(v, number) and not isinstance(v, bool) for v in (low, high)) or low >= high:
            raise ValueError(f"low < high must be {'integers' if is_int else 'numbers'}, got {low!r}, {high!r}")
        if not isinstance(log, bool) or not isinstance(is_int, bool):
            raise ValueError("log and int must be true or false")
        return IntDistribution(low, high, log=log) if is_int else FloatDistribution(low, high, log=log)
    except KeyError as e:
        raise PianolabError(f"{where}: missing key {e.args[0]!r}") from None
    except ValueError as e:
        raise PianolabError(f"{where}: {e}") from None


def _categorical(choices) -> CategoricalDistribution:
    if not isinstance(choices, list) or not choices:
        raise ValueError("choices must be a non-empty list")
    if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
        raise ValueError("choices must be numbers, strings, booleans or null")
    return CategoricalDistribution(choices)


def with_params(cfg: RunConfig, params: dict, source: str = "<tuning>") -> RunConfig:
    """`cfg` with the dotted-key values of a trial (validated like any override)."""
    return config_from_dict(apply_overrides(to_dict(cfg), params), source)


def inner_roles(cfg: RunConfig, dataset: Dataset, items: np.ndarray,
                fitting: Fitting) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The inner folds (train, val, test): K-fold by excerpt group over the cell's training items
    `items` only, each inner training part with its validation carve-out; seeded by the cell."""
    rng = np.random.default_rng([cfg.train.seed, cfg.data.repeat, cfg.data.fold])
    folds = _group_kfold(dataset, cfg.tuning.inner_folds, rng, "group", [dataset.items[i].stem for i in items])
    ids = lambda stems: np.array([dataset.index[s] for s in stems], dtype=int)  # noqa: E731
    return [(*fitting.carve(cfg, ids(f.train), rng), ids(f.test)) for f in folds]


def _objective(trial: optuna.Trial, cfg: RunConfig, dataset: Dataset, items: np.ndarray, metric: Metric,
               fitting: Fitting) -> float:
    """Mean inner-fold score of the trial's params; the running mean is reported after each fold."""
    trial_cfg = with_params(cfg, trial.params)
    scores = []
    for k, (train, val, test) in enumerate(inner_roles(trial_cfg, dataset, items, fitting)):
        pred = fitting.fit(trial_cfg, train, val, test)
        score = metric(dataset.labels[test], pred, groups=dataset.column("group")[test]).value
        if not np.isfinite(score):
            raise PianolabError(f"tuning trial {trial.number} ({trial.params}): {metric.name} is undefined "
                                f"on inner fold {k}")
        scores.append(score)
        trial.report(float(np.mean(scores)), k)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return float(np.mean(scores))


def tune(cfg: RunConfig, dataset: Dataset, items: np.ndarray, folder: Path, experiment: str, variant: str,
         fitting: Fitting) -> RunConfig:
    """Run the trials still missing from this cell's study on its training items `items` (fitted by
    `fitting`), record the study in the run folder; returns `cfg` with the best params."""
    space = check(cfg, str(folder / "config.yaml"))
    t = cfg.tuning
    metric = METRICS.get(t.metric)
    url = t.storage or default_storage(folder, experiment)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=_storage(url), study_name=study_name(cfg, experiment, variant, dataset.version),
                                load_if_exists=True, sampler=SAMPLERS.get(t.sampler)(cfg.train.seed),
                                pruner=PRUNERS.get(t.pruner)(**t.pruner_params),
                                direction="maximize" if metric.higher_is_better else "minimize")
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(stale.number, state=TrialState.FAIL)  # its process died (this cell is locked)
    while len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))) < t.trials:
        trial = study.ask(space)
        try:
            study.tell(trial, _objective(trial, cfg, dataset, items, metric, fitting))
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
    best = with_params(cfg, study.best_params)
    record = _record(study, cfg, url, inner_roles(cfg, dataset, items, fitting), dataset)
    track.write_json(folder / "tuning.json", record)
    meta = track.read_meta(folder)
    meta["tuning"] = {k: record[k] for k in ("best_params", "best_value", "budget", "n_complete", "n_pruned")}
    track.write_json(folder / "meta.json", meta)
    track.write_config(folder, best)
    return best


def study_name(cfg: RunConfig, experiment: str, variant: str, data_version: str) -> str:
    """The cell's study: a rerun of a stale cell (new data) starts a new one, never reuses old trials."""
    return f"{experiment}/{variant}/{config_hash(cfg)}/{data_version}"


def default_storage(folder: Path, experiment: str) -> str:
    """SQLite shared by an experiment's cells, `<runs root>/<experiment>/optuna.db` (a run folder
    outside that layout keeps its own)."""
    folder = folder.resolve()
    home = folder.parents[2] if len(folder.parents) > 2 and folder.parents[2].name == experiment else folder
    return f"sqlite:///{home / 'optuna.db'}"


def _storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage; SQLite waits for other workers' writes and creates its tables under a lock."""
    if not url.startswith("sqlite:///"):
        return optuna.storages.RDBStorage(url)
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


def _record(study: optuna.Study, cfg: RunConfig, url: str, inner: list[tuple], dataset: Dataset) -> dict:
    """tuning.json: settings, counts, best trial, every trial, and each inner fold's held-out stems."""
    from sqlalchemy.engine import make_url

    trials = study.get_trials(deepcopy=False)
    count = lambda state: sum(tr.state == state for tr in trials)  # noqa: E731
    t = cfg.tuning
    return {
        "study": study.study_name, "storage": make_url(url).render_as_string(hide_password=True),
        "space": t.space, "metric": t.metric, "direction": study.direction.name.lower(),
        "sampler": t.sampler, "pruner": t.pruner, "pruner_params": t.pruner_params, "budget": t.trials,
        "n_complete": count(TrialState.COMPLETE), "n_pruned": count(TrialState.PRUNED),
        "n_interrupted": count(TrialState.FAIL), "best_trial": study.best_trial.number,
        "best_params": study.best_params, "best_value": study.best_value,
        "trials": [{"number": tr.number, "state": tr.state.name.lower(), "params": tr.params, "value": tr.value,
                    "reports": [tr.intermediate_values[k] for k in sorted(tr.intermediate_values)]}
                   for tr in trials],
        "inner_folds": [{"test": [dataset.items[i].stem for i in test], "n_train": len(train),
                         "n_val": len(val)} for train, val, test in inner],
    }
