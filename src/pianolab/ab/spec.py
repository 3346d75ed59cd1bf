"""Experiment files: one question, a baseline, named one-factor variants, seeds, split, budget.

```yaml
name: b1_sizes
hypothesis: "Bigger ASTs overfit 750 items; ultra_tiny is as good as small."   # required
baseline: {features: {spectrogram: log_mel}, model: {name: ast_ultra_tiny}}   # or baseline: path.yaml
variants:
  tiny: {model.name: ast_tiny}              # dotted keys or nested mappings, one factor each
  big_and_slow: {model.name: ast_small, optim.lr: 0.0003, multi_factor: true, reason: "..."}
seeds: 5                                    # >= 1; repeat r = seed r: its own K-fold partition
split: {name: excerpt, folds: 4, seed: 0}   # folds >= 2, seed >= 0
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

Names (the experiment's and its variants') are folder names under the runs root: letters, digits,
`_`, `.` and `-`, not starting with a dot nor containing `..`. A variant is resolved against the
baseline whatever its spelling (`{model: {params: {depth: 4}}}` is `model.params.depth: 4`; only
`tuning.space` is replaced whole; a variant that changes `model.name` starts from no `model.params`, since
the baseline's belong to its own model) and must change exactly one leaf of the resolved config, or say
`multi_factor: true` with a `reason`. Numbers are checked at load (seeds >= 1, folds >= 2, rope >= 0,
0 < alpha < 1, budget > 0, 1 <= early_stop.min_seeds <= seeds), and every variant's config too
(`pianolab.train.validate`: unknown names, refused options, keys set without effect).

With `tuning`, each cell first runs `budget.trials` trials (the same number for every variant) on
inner folds of its training items only, then trains on its whole training fold with the best params.
The space is shared by every variant; a variant may replace it (`tuning.space: {...}`, e.g. when it
changes the model and so the parameters worth tuning) but not the rest of the search.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pianolab.config import Bound, RunConfig, apply_overrides, config_from_dict, leaves, to_dict
from pianolab.errors import PianolabError

BASELINE = "baseline"
_TOP_KEYS = {"name", "hypothesis", "baseline", "variants", "seeds", "split", "primary_metric", "rope",
             "alpha", "budget", "early_stop", "evaluation", "tuning"}
_SPLIT_KEYS = {"name", "folds", "seed"}
_BUDGET_KEYS = {"epochs", "wall_time_s", "trials"}
_TUNING_KEYS = {"space", "inner_folds", "metric", "sampler", "pruner", "pruner_params", "storage"}
_CELL_KEYS = {"data.repeat", "data.fold", "data.repeats", "data.split_seed", "train.seed", "train.epochs",
              "train.max_seconds", "tuning"} | {f"tuning.{k}" for k in (_TUNING_KEYS - {"space"}) | {"trials"}}
_WHOLE = frozenset({"tuning.space"})  # a variant replaces these whole; every other mapping is merged
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


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
            overrides = self._variant(variant).overrides
            model = data.get("model") or {}
            if overrides.get("model.name", model.get("name")) != model.get("name"):  # params go with their model
                data = {**data, "model": {k: v for k, v in model.items() if k != "params"}}
            data = apply_overrides(data, overrides)
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


def _name(name: Any, what: str, source: str) -> str:
    """A name that is also a folder name under the runs root: never a path."""
    name = str(name)
    if not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise PianolabError(f"{source}: {what} {name!r}: a name may use only letters, digits, '_', '.' and "
                            "'-' and may not start with '.' or contain '..' (it names a folder)")
    return name


def _variant(name: Any, raw, source: str) -> Variant:
    name = _name(name, "variant", source)
    if not isinstance(raw, dict) or not raw:
        raise PianolabError(f"{source}: variant {name!r} must map dotted keys to values")
    raw = dict(raw)
    multi, reason = bool(raw.pop("multi_factor", False)), str(raw.pop("reason", ""))
    if name == BASELINE:
        raise PianolabError(f"{source}: a variant may not be called {BASELINE!r}")
    overrides = leaves(raw, _WHOLE)
    for key in overrides:
        if fixed := [k for k in _CELL_KEYS if key == k or (key.startswith(k + ".") and key != "tuning.space")]:
            raise PianolabError(f"{source}: variant {name!r} sets {max(fixed, key=len)}, which the experiment "
                                "sets for every cell (seeds, split seed, folds, budget, tuning but its space)")
    return Variant(name, overrides, multi, reason)


def _number(section: dict, key: str, kind: type, bound: Bound, default, source: str, where: str = ""):
    """`section[key]` (or `default`) as `kind` within `bound`; otherwise a one-line error."""
    value = section.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
        raise PianolabError(f"{source}: {where}{key}: must be {'an integer' if kind is int else 'a number'}, "
                            f"got {value!r}")
    value = kind(value)
    if problem := bound.problem(value):
        raise PianolabError(f"{source}: {where}{key}: {problem}")
    return value


def _baseline(value, path: Path, source: str) -> dict:
    """The baseline mapping, read from a file (relative to the experiment) when it is a path."""
    if isinstance(value, str):
        file = path.parent / value
        try:
            value = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
            raise PianolabError(f"{source}: baseline: cannot read {file} ({e.__class__.__name__})") from None
    if not isinstance(value, dict):
        raise PianolabError(f"{source}: baseline: must be a run config mapping (or the path of one)")
    return value


def load_experiment(path: Path | str) -> Experiment:
    """Read and validate an experiment file; every variant's config is resolved once to check it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise PianolabError(f"{path}: cannot read experiment ({e.__class__.__name__})") from None
    source = str(path)
    _check_keys(data, _TOP_KEYS, "", source)
    for key in ("name", "hypothesis", "baseline"):
        if not data.get(key):
            raise PianolabError(f"{source}: missing required key {key!r}")
    baseline = _baseline(data["baseline"], path, source)
    split = data.get("split", {}) or {}
    _check_keys(split, _SPLIT_KEYS, "split.", source)
    budget = data.get("budget", {}) or {}
    _check_keys(budget, _BUDGET_KEYS, "budget.", source)
    tuning = _tuning(data, baseline, budget, source)
    early = data.get("early_stop") or {}
    _check_keys(early, {"min_seeds"}, "early_stop.", source)
    variants = data.get("variants") or {}
    if not isinstance(variants, dict):
        raise PianolabError(f"{source}: variants: must map names to overrides")
    seeds = _number(data, "seeds", int, Bound(1), 5, source)
    _check_names(data, split, source)
    _number(data, "rope", float, Bound(0), None, source)
    exp = Experiment(
        name=_name(data["name"], "experiment name", source), hypothesis=str(data["hypothesis"]),
        baseline=baseline, variants=tuple(_variant(n, v, source) for n, v in variants.items()),
        seeds=seeds, split=str(split.get("name", "excerpt")),
        folds=_number(split, "folds", int, Bound(2), 4, source, "split."),
        split_seed=_number(split, "seed", int, Bound(0), 0, source, "split."),
        primary_metric=str(data.get("primary_metric", "pearson")), rope=_rope(data, source),
        alpha=_number(data, "alpha", float, Bound(0, 1, lo_open=True, hi_open=True), 0.05, source),
        epochs=_number(budget, "epochs", int, Bound(1), None, source, "budget."),
        wall_time_s=_number(budget, "wall_time_s", float, Bound(0), None, source, "budget."),
        early_stop_min_seeds=_number(early, "min_seeds", int, Bound(1, seeds), None, source, "early_stop."),
        evaluation=tuple(data.get("evaluation") or ()), tuning=tuning, trials=budget.get("trials"),
        source=source)
    configs = {v: exp.config(v) for v in exp.variant_names}  # validates keys, types and ranges
    for v, cfg in configs.items():
        if tuning is not None:
            _check_tuned_variant(exp, v, cfg)
        elif cfg.tuning.space:
            raise PianolabError(f"{source}: variant {v!r} sets tuning.space but the experiment has no 'tuning'")
        if v != BASELINE:
            _check_factors(exp, exp._variant(v), configs[BASELINE], cfg)
    _check_configs(exp, configs)
    return exp


def _check_factors(exp: Experiment, variant: Variant, base: RunConfig, cfg: RunConfig) -> None:
    """One factor per variant: the leaves of its resolved config that differ from the baseline's."""
    a, b = leaves(to_dict(base), _WHOLE), leaves(to_dict(cfg), _WHOLE)
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if base.model.name != cfg.model.name:  # the baseline's params left with its model: not factors of their own
        changed = [k for k in changed if not (k.startswith("model.params.") and k not in b)]
    if not changed:
        raise PianolabError(f"{exp.source}: variant {variant.name!r} changes nothing against the baseline")
    if len(changed) > 1 and not (variant.multi_factor and variant.reason):
        raise PianolabError(f"{exp.source}: variant {variant.name!r} changes {len(changed)} factors "
                            f"({', '.join(changed)}); set multi_factor: true and give a reason")


def _check_configs(exp: Experiment, configs: dict[str, RunConfig]) -> None:
    """Names, options and no-ops of every variant (pianolab.train.validate): a key a variant sets must
    act in that variant; a key the baseline sets must act in at least one config that inherits it."""
    from pianolab.adapt.domain import check_paired
    from pianolab.train.validate import check_config, no_effect, set_keys

    check_paired(configs, exp.source)  # every variant rates the same target items
    for v, cfg in configs.items():
        check_config(cfg, f"{exp.source} (variant {v})", exp._variant(v).overrides if v != BASELINE else ())
    base = leaves(to_dict(configs[BASELINE]))
    for key in sorted(set(set_keys(configs[BASELINE])) & set(leaves(exp.baseline))):
        inheriting = [c for c in configs.values() if leaves(to_dict(c)).get(key) == base.get(key)]
        reasons = [no_effect(c, key) for c in inheriting]
        if all(reasons):
            raise PianolabError(f"{exp.source}: {key}: has no effect in the baseline nor in any variant that "
                                f"keeps it: {reasons[0]}")


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


def _check_names(data: dict, split: dict, source: str) -> None:
    """The primary metric and the split are registered names (the error lists every valid one)."""
    from pianolab.data.splits import STRATEGIES
    from pianolab.evaluate.metrics import METRICS

    for key, registry, name in (("primary_metric", METRICS, data.get("primary_metric", "pearson")),
                                ("split.name", STRATEGIES, split.get("name", "excerpt"))):
        try:
            registry.get(str(name))
        except PianolabError as e:
            raise PianolabError(f"{source}: {key}: {e}") from None
