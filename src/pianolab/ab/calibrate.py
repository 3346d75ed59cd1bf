"""Calibration: simulated A/A experiments and the false-positive rate of each decision rule.

An A/A experiment compares a model with itself (same process, different seeds), so every "winner" is a
false positive. Two generators of the cell differences ``d[seed, fold]``:

- ``"cv"`` (default, realistic): each simulation draws a fresh data set of items in excerpt groups
  (features x = group part + item part, target y = x·β + noise) and runs a real repeated group K-fold:
  each seed draws its own partition of the groups, shared by both variants. A variant is a frozen random
  encoder (a Gaussian projection of the features, drawn from the variant's seed for that repeat, so it
  is shared by the folds of a seed, as a network initialisation is) plus a ridge head fitted on the
  training folds; the cell score is the test-fold Pearson r. A and B are the same process and differ
  only in their encoder draws, so E[d] = 0, while cells are correlated through shared encoders and
  overlapping training sets — the correlation that makes the naive t-test anti-conservative.
- ``"exchangeable"``: d is multivariate normal with every pair of cells correlated by
  ρ = n_test/(n_train + n_test), the model the Nadeau–Bengio correction assumes; the corrected t statistic
  is then exactly t(n − 1), so its rate must come out at alpha (a check of the arithmetic, not realism).

Rules scored at Δ = 0: ``verdict`` (claims a difference: any of ``stats.DIFFERENT``), ``corrected_t``
and ``naive_t`` (p < alpha), ``wilcoxon`` (p < alpha) and ``early_stop`` (the futility rule stops B at
some look). At the boundary of the ROPE, where B's cell differences are shifted by Δ = ±rope (the
largest true differences the rules must still not act on): ``early_stop@-rope`` and ``early_stop@+rope``
(stopping a variant that is not worse by more than the ROPE) and ``equivalent@-rope`` and
``equivalent@+rope`` (claiming "equivalent within the ROPE" for a difference as large as the ROPE).
Every rate must stay <= alpha.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from pianolab.ab.stats import (
    DIFFERENT,
    EQUIVALENT,
    corrected_t_test,
    early_stop,
    naive_paired_t,
    verdict,
    wilcoxon_signed_rank,
    wilson_interval,
)

GENERATORS = ("cv", "exchangeable")
RULES = ("verdict", "corrected_t", "naive_t", "wilcoxon", "early_stop", "early_stop@-rope", "early_stop@+rope",
         "equivalent@-rope", "equivalent@+rope")


@dataclass(frozen=True)
class AADesign:
    """The simulated design; sizes are per simulation (n_items items in groups of group_size)."""

    seeds: int = 5
    folds: int = 4
    n_items: int = 240
    group_size: int = 12
    n_features: int = 16
    encoder_width: int = 8
    noise: float = 1.0
    ridge: float = 1.0
    rope: float = 0.01
    alpha: float = 0.05
    min_seeds: int = 3
    generator: str = "cv"

    def __post_init__(self):
        if self.generator not in GENERATORS:
            raise ValueError(f"generator must be one of {GENERATORS}, got {self.generator!r}")
        if self.n_items // self.group_size < self.folds:
            raise ValueError("need at least one excerpt group per fold")

    @property
    def n_test(self) -> float:
        return (self.n_items // self.group_size) * self.group_size / self.folds

    @property
    def n_train(self) -> float:
        return (self.n_items // self.group_size) * self.group_size - self.n_test


def _ridge_pearson(features: np.ndarray, y: np.ndarray, train: np.ndarray, ridge: float) -> np.ndarray:
    """Test-fold Pearson r of ridge regressions (with intercept), batched over leading axes.

    features: ``[..., item, width]``; y: ``[item]``; train: ``[..., item]`` boolean mask; the leading
    axes of both broadcast together. Returns r with the broadcast leading shape.
    """
    shape = np.broadcast_shapes(features.shape[:-1], train.shape)
    features = np.broadcast_to(features, (*shape, features.shape[-1]))
    train = np.broadcast_to(train, shape).astype(float)
    test = 1.0 - train
    n_train = train.sum(axis=-1)[..., None]
    mu = (train[..., None, :] @ features)[..., 0, :] / n_train
    y_mu = (train @ y)[..., None] / n_train
    a = features - mu[..., None, :]
    weighted = np.swapaxes(a * train[..., None], -1, -2)
    gram = weighted @ a + ridge * np.eye(features.shape[-1])
    w = np.linalg.solve(gram, weighted @ (y - y_mu)[..., None])
    pred = (a @ w)[..., 0]

    def centred(v):
        return (v - (np.sum(test * v, axis=-1) / test.sum(axis=-1))[..., None]) * test

    p, t = centred(pred), centred(np.broadcast_to(y, pred.shape))
    return np.sum(p * t, axis=-1) / np.sqrt(np.sum(p * p, axis=-1) * np.sum(t * t, axis=-1))


def _cv_differences(rng: np.random.Generator, design: AADesign) -> np.ndarray:
    """``d[seed, fold]`` of one A/A experiment run as a real repeated group K-fold (see module doc)."""
    n_groups, p = design.n_items // design.group_size, design.n_features
    group = np.repeat(np.arange(n_groups), design.group_size)
    x = (rng.normal(size=(n_groups, p))[group] + rng.normal(size=(group.size, p))) / np.sqrt(2)
    y = x @ rng.normal(size=p) / np.sqrt(p) + design.noise * rng.normal(size=group.size)
    folds = np.stack([(rng.permutation(n_groups) % design.folds)[group] for _ in range(design.seeds)])
    train = folds[:, :, None] != np.arange(design.folds)[None, None, :]  # [seed, item, fold]
    encoders = rng.normal(size=(design.seeds, 2, p, design.encoder_width))  # [seed, variant, p, width]
    features = np.einsum("ip,svpw->sviw", x, encoders)[:, :, None]  # [seed, variant, 1, item, width]
    r = _ridge_pearson(features, y, train.transpose(0, 2, 1)[:, None], design.ridge)
    return r[:, 1] - r[:, 0]


def _exchangeable_differences(rng: np.random.Generator, design: AADesign, sd: float = 0.02) -> np.ndarray:
    """``d[seed, fold]`` ~ N(0, sd²·((1 − ρ)I + ρ·11ᵀ)), ρ = n_test/(n_train + n_test)."""
    rho = design.n_test / (design.n_train + design.n_test)
    shared = np.sqrt(rho) * rng.normal()
    return sd * (shared + np.sqrt(1 - rho) * rng.normal(size=(design.seeds, design.folds)))


def _stops(d: np.ndarray, design: AADesign) -> bool:
    """Whether the futility rule stops B at some look (after seeds min_seeds .. seeds)."""
    return any(early_stop(d[:r], design.n_train, design.n_test, design.rope, design.alpha, design.min_seeds,
                          design.seeds).stop for r in range(design.min_seeds, design.seeds + 1))


def _equivalent(d: np.ndarray, design: AADesign) -> bool:
    return verdict(d, design.n_train, design.n_test, design.rope, design.alpha).label == EQUIVALENT


def _false_positives(d: np.ndarray, design: AADesign) -> dict[str, bool]:
    """Which rules act wrongly on one A/A experiment ``d`` (Δ = 0) and on it shifted to Δ = ±rope."""
    n_train, n_test, alpha, rope = design.n_train, design.n_test, design.alpha, design.rope
    return {
        "verdict": verdict(d, n_train, n_test, rope, alpha).label in DIFFERENT,
        "corrected_t": corrected_t_test(d, n_train, n_test, alpha).p < alpha,
        "naive_t": naive_paired_t(d, alpha).p < alpha,
        "wilcoxon": wilcoxon_signed_rank(d, alpha).p < alpha,
        "early_stop": _stops(d, design),
        "early_stop@-rope": _stops(d - rope, design),
        "early_stop@+rope": _stops(d + rope, design),
        "equivalent@-rope": _equivalent(d - rope, design),
        "equivalent@+rope": _equivalent(d + rope, design),
    }


def simulate_aa(n_simulations: int = 1000, seeds: int = 5, folds: int = 4, n_items: int = 240,
                group_size: int = 12, rope: float = 0.01, alpha: float = 0.05, generator: str = "cv",
                seed=0) -> dict[str, float]:
    """Simulate ``n_simulations`` A/A experiments; return {rule: false-positive rate} for ``RULES``."""
    design = AADesign(seeds=seeds, folds=folds, n_items=n_items, group_size=group_size, rope=rope,
                      alpha=alpha, generator=generator)
    return _rates(n_simulations, design, seed)


def _rates(n_simulations: int, design: AADesign, seed) -> dict[str, float]:
    if n_simulations < 1:
        raise ValueError(f"need at least 1 simulation, got {n_simulations}")
    rng = np.random.default_rng(seed)
    draw = _cv_differences if design.generator == "cv" else _exchangeable_differences
    hits = dict.fromkeys(RULES, 0)
    for _ in range(n_simulations):
        for rule, hit in _false_positives(draw(rng, design), design).items():
            hits[rule] += hit
    return {rule: hits[rule] / n_simulations for rule in RULES}


def calibrate(n_simulations: int = 1000, seed=0, design: AADesign | None = None) -> dict:
    """A/A calibration report, JSON-ready.

    Returns {"false_positive_rate": {rule: rate}, "false_positive_ci": {rule: [low, high]} (95% Wilson
    interval of the Monte-Carlo rate), "alpha", "n_simulations", "seed", "design": {...}}.
    """
    design = design or AADesign()
    rates = _rates(n_simulations, design, seed)
    return {
        "false_positive_rate": rates,
        "false_positive_ci": {rule: list(wilson_interval(rate * n_simulations, n_simulations))
                              for rule, rate in rates.items()},
        "alpha": design.alpha,
        "n_simulations": n_simulations,
        "seed": seed,
        "design": {**asdict(design), "n_train": design.n_train, "n_test": design.n_test},
    }
