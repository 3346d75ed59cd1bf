"""Experiment files: one question, a baseline, named one-factor variants, seeds, split, budget.

```yaml
name: b1_sizes
hypothesis: "Bigger ASTs overfit 750 items; ultra_tiny is as good as small."   # required
baseline: {features: {spectrogram: log_mel}, model: {name: ast_ultra_tiny}}   # or baseline: path.yaml
variants:
  tiny: {model.name: ast_tiny}              # dotted keys against the baseline, one factor each
  big_and_slow: {model.name: ast_small, optim.lr: 0.0003, multi_factor: true, reason: "..."}
seeds: 5                                    # repeat r = seed r: its own K-fold partition
split: {name: excerpt, folds: 4, seed: 0}
primary_metric: pearson                     # any registered metric
rope: 0.01
alpha: 0.05
budget: {epochs: 100, wall_time_s: 60, trials: 20}  # equal for every variant: epochs and/or seconds per
                                            # fit, and tuning trials per cell (required with tuning)
early_stop: {min_seeds: 3}                  # optional sequential rule
evaluation: []                              # optional evaluation sections for every variant
tuning:                                     # optional: an Optuna search in every cell (pianolab.ab.tuning)
  space:                                    # dotted config keys; a variant may not set a tuned key
    model.params.alpha: {low: 0.01, high: 100, log: true}   # float (log-uniform)
    model.params.max_depth: {low: 2, high: 8, int: true}    # integer
    objective.name: {choices: [mse, correlation]}           # categorical
  inner_folds: 3                            # K-fold by excerpt group inside the cell's training fold
  metric: pearson                           # registered metric, mean over the inner folds
  sampler: tpe                              # tpe | random, seeded with the cell's seed
  pruner: median                            # median | none; pruner_params: {n_startup_trials: 5}
  storage: null                             # Optuna RDB URL; default SQLite runs/<name>/optuna.db
```

With `tuning`, each cell first runs `budget.trials` trials (the same number for every variant) on
inner folds of its training items only, then trains on its whole training fold with the best params.
The space is shared by every variant; a variant may replace it (`tuning.space: {...}`, e.g. when it
changes the model and so the parameters worth tuning) but not the rest of the search.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from pianolab.config import RunConfig, apply_overrides, config_from_dict
from pianolab.errors import PianolabError

BASELINE = "baseline"
_TOP_KEYS = {"name", "hypothesis", "baseline", "variants", "seeds", "split", "primary_metric", "rope",
             "alpha", "budget", "early_stop", "evaluation", "tuning"}
_SPLIT_KEYS = {"name", "folds", "seed"}
_BUDGET_KEYS = {"epochs", "wall_time_s", "trials"}
_TUNING_KEYS = {"space", "inner_folds", "metric", "sampler", "pruner", "pruner_params", "storage"}
_CELL_KEYS = {"data.repeat", "data.fold", "data.repeats", "data.split_seed", "train.seed", "train.epochs",
              "train.max_seconds", "tuning"} | {f"tuning.{k}" for k in (_TUNING_KEYS - {"space"}) | {"trials"}}


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict
    multi_factor: bool = False
    reason: str = ""


@dataclass(frozen=True)
class Cell:
    """One run of an experiment: a variant on fold `fold` of repeat `seed`, trained with `seed`."""

    variant: str
    seed: int
    fold: int
    config: RunConfig


@dataclass(frozen=True)
class Experiment:
    name: str
    hypothesis: str
    baseline: dict
    variants: tuple[Variant, ...]
    seeds: int = 5
    split: str = "excerpt"
    folds: int = 4
    split_seed: int = 0
    primary_metric: str = "pearson"
    rope: float = 0.01
    alpha: float = 0.05
    epochs: int | None = None
    wall_time_s: float | None = None
    early_stop_min_seeds: int | None = None
    evaluation: tuple[str, ...] = ()
    tuning: dict | None = None  # the `tuning:` section (pianolab.ab.tuning)
    trials: int | None = None  # budget.trials: tuning trials per cell
    source: str = "<experiment>"

    @property
    def variant_names(self) -> list[str]:
        return [BASELINE] + [v.name for v in self.variants]

    def config(self, variant: str, seed: int = 0, fold: int = 0) -> RunConfig:
        """The resolved run config of one cell: baseline, then the experiment's split, seed and
        budget (equal for every variant), then the variant's overrides."""
        imposed = {"data.split": self.split, "data.folds": self.folds, "data.repeats": self.seeds,
                   "data.split_seed": self.split_seed, "data.repeat": seed, "data.fold": fold,
                   "train.seed": seed}
        if self.epochs is not None:
            imposed["train.epochs"] = self.epochs
        if self.wall_time_s is not None:
            imposed["train.max_seconds"] = float(self.wall_time_s)
        if self.tuning is not None:
            imposed["tuning"] = {**self.tuning, "trials": self.trials}
        data = apply_overrides(self.baseline, imposed)
        if variant != BASELINE:
            data = apply_overrides(data, self._variant(variant).overrides)
        return config_from_dict(data, f"{self.source} (variant {variant})")

    def cells(self, variants: list[str] | None = None) -> list[Cell]:
        """Seed-major order: every variant's seed-s cells before any seed s+1 (early stopping)."""
        names = variants or self.variant_names
        return [Cell(v, s, k, self.config(v, s, k)) for s in range(self.seeds) for v in names
                for k in range(self.folds)]

    def _variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise PianolabError(f"{self.source}: unknown variant {name!r}; valid: {', '.join(self.variant_names)}")


def _check_keys(data: dict, allowed: set[str], where: str, source: str) -> None:
    if not isinstance(data, dict):
        raise PianolabError(f"{source}: {where} must be a mapping")
    for key in data:
        if key not in allowed:
            raise PianolabError(f"{source}: unknown key {where}{key!r}; valid: {', '.join(sorted(allowed))}")


def _variant(name: str, raw, source: str) -> Variant:
    if not isinstance(raw, dict) or not raw:
        raise PianolabError(f"{source}: variant {name!r} must map dotted keys to values")
    raw = dict(raw)
    multi, reason = bool(raw.pop("multi_factor", False)), str(raw.pop("reason", ""))
    if name == BASELINE:
        raise PianolabError(f"{source}: a variant may not be called {BASELINE!r}")
    if fixed := set(raw) & _CELL_KEYS:
        raise PianolabError(f"{source}: variant {name!r} sets {sorted(fixed)[0]}, which the experiment "
                            "sets for every cell (seeds, split seed, folds, budget, tuning but its space)")
    if len(raw) > 1 and not (multi and reason):
        raise PianolabError(f"{source}: variant {name!r} changes {len(raw)} factors ({', '.join(raw)}); "
                            "set multi_factor: true and give a reason")
    return Variant(name, raw, multi, reason)


def load_experiment(path: Path | str) -> Experiment:
    """Read and validate an experiment file; every variant's config is resolved once to check it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise PianolabError(f"{path}: cannot read experiment ({e.__class__.__name__})") from None
    source = str(path)
    _check_keys(data, _TOP_KEYS, "", source)
    for key in ("name", "hypothesis", "baseline"):
        if not data.get(key):
            raise PianolabError(f"{source}: missing required key {key!r}")
    baseline = data["baseline"]
    if isinstance(baseline, str):
        baseline = yaml.safe_load((path.parent / baseline).read_text())
    split = data.get("split", {}) or {}
    _check_keys(split, _SPLIT_KEYS, "split.", source)
    budget = data.get("budget", {}) or {}
    _check_keys(budget, _BUDGET_KEYS, "budget.", source)
    tuning = _tuning(data, baseline, budget, source)
    early = data.get("early_stop") or {}
    _check_keys(early, {"min_seeds"}, "early_stop.", source)
    exp = Experiment(
        name=str(data["name"]), hypothesis=str(data["hypothesis"]), baseline=baseline,
        variants=tuple(_variant(n, v, source) for n, v in (data.get("variants") or {}).items()),
        seeds=int(data.get("seeds", 5)), split=split.get("name", "excerpt"), folds=int(split.get("folds", 4)),
        split_seed=int(split.get("seed", 0)), primary_metric=str(data.get("primary_metric", "pearson")),
        rope=_rope(data, source), alpha=float(data.get("alpha", 0.05)),
        epochs=budget.get("epochs"), wall_time_s=budget.get("wall_time_s"),
        early_stop_min_seeds=early.get("min_seeds"), evaluation=tuple(data.get("evaluation") or ()),
        tuning=tuning, trials=budget.get("trials"), source=source)
    for v in exp.variant_names:
        cfg = exp.config(v)  # validates keys and types of every variant
        if tuning is not None:
            _check_tuned_variant(exp, v, cfg)
        elif cfg.tuning.space:
            raise PianolabError(f"{source}: variant {v!r} sets tuning.space but the experiment has no 'tuning'")
    _check_metric(exp)
    return exp


def _rope(data: dict, source: str) -> float:
    """The experiment's ROPE, which belongs to its primary metric (`stats.rope_for`)."""
    from pianolab.ab.stats import rope_for

    try:
        return rope_for(str(data.get("primary_metric", "pearson")), data.get("rope"))
    except ValueError as e:
        raise PianolabError(f"{source}: {e}") from None


def _tuning(data: dict, baseline: dict, budget: dict, source: str) -> dict | None:
    """The `tuning:` section (None without one); tuning needs `budget.trials` and vice versa."""
    if isinstance(baseline, dict) and "tuning" in baseline:
        raise PianolabError(f"{source}: baseline sets 'tuning'; give it at the experiment's top level")
    tuning, trials = data.get("tuning"), budget.get("trials")
    if tuning is None and trials is None:
        return None
    if tuning is None:
        raise PianolabError(f"{source}: budget.trials needs a 'tuning' section (what to tune)")
    _check_keys(tuning, _TUNING_KEYS, "tuning.", source)
    if "space" not in tuning:
        raise PianolabError(f"{source}: missing required key 'tuning.space'")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise PianolabError(f"{source}: tuning needs budget.trials, a positive integer (the same for every "
                            f"variant), got {trials!r}")
    return tuning


def _check_tuned_variant(exp: Experiment, variant: str, cfg: RunConfig) -> None:
    """The variant's search is valid and moves neither a key the variant sets nor a per-cell key."""
    from pianolab.ab.tuning import check, overlaps
    from pianolab.track import flatten

    check(cfg, f"{exp.source} (variant {variant})")
    sets = flatten(exp._variant(variant).overrides) if variant != BASELINE else {}  # leaf dotted keys
    for key in cfg.tuning.space:
        for other in [*sets, *_CELL_KEYS]:
            if overlaps(key, other):
                who = f"variant {variant!r} sets" if other in sets else "the experiment sets"
                raise PianolabError(f"{exp.source}: tuning.space.{key} is tuned but {who} {other}")


def _check_metric(exp: Experiment) -> None:
    from pianolab.evaluate.metrics import METRICS

    METRICS.get(exp.primary_metric)
