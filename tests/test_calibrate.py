"""A/A calibration of the decision rules (pianolab.ab.calibrate) and `pianolab stats calibrate`."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pianolab.ab.calibrate import (
    RULES,
    AADesign,
    _cv_differences,
    _exchangeable_differences,
    _ridge_pearson,
    _stops,
    calibrate,
    simulate_aa,
)
from pianolab.commands.stats import app

ALPHA = 0.05
# Monte-Carlo sd of a rate of .05 over 300 simulations is sqrt(.05·.95/300) = .0126
MARGIN = 0.025


@pytest.fixture(scope="module")
def realistic():
    return calibrate(n_simulations=300, seed=0)


def test_verdict_holds_alpha_and_naive_t_does_not(realistic):
    rates = realistic["false_positive_rate"]
    assert set(rates) == set(RULES)
    assert rates["verdict"] <= ALPHA + MARGIN
    assert rates["early_stop"] <= ALPHA + MARGIN
    assert rates["naive_t"] > 2 * ALPHA
    assert rates["naive_t"] > rates["verdict"] + 0.1
    low, high = realistic["false_positive_ci"]["naive_t"]
    assert low <= rates["naive_t"] <= high
    assert realistic["design"]["n_train"] == 180 and realistic["design"]["n_test"] == 60


@pytest.mark.parametrize("generator", ["cv", "exchangeable"])
def test_early_stop_and_equivalence_hold_alpha_at_the_rope_boundary(realistic, generator):
    rates = realistic["false_positive_rate"] if generator == "cv" else \
        simulate_aa(n_simulations=300, generator=generator, seed=2)
    for rule in ("early_stop@-rope", "early_stop@+rope", "equivalent@-rope", "equivalent@+rope"):
        assert rates[rule] <= ALPHA + MARGIN, (rule, rates[rule])
    if generator == "exchangeable":  # cells of sd 0.02 ~ the ROPE: the boundary is not a vacuous check
        design, rng = AADesign(generator=generator), np.random.default_rng(4)
        d = [_exchangeable_differences(rng, design) for _ in range(100)]
        stopped = [np.mean([_stops(x - k * design.rope, design) for x in d]) for k in (1, 3, 6)]
        assert stopped[0] <= ALPHA + MARGIN < stopped[1] < stopped[2] and stopped[2] > 0.9


def test_corrected_test_is_exact_under_its_own_model():
    # exchangeable cells with ρ = n_test/(n_train + n_test): the corrected t is exactly t(19), so its
    # rate must be near alpha from both sides (.05 ± 3.2 Monte-Carlo sd)
    rates = simulate_aa(n_simulations=300, generator="exchangeable", seed=1)
    assert 0.01 <= rates["corrected_t"] <= 0.09
    assert rates["verdict"] == rates["corrected_t"]  # one variant: a winner is exactly p < alpha
    assert rates["naive_t"] > 0.25


def test_aa_differences_are_centred_and_correlated_within_a_seed():
    rng, design = np.random.default_rng(2), AADesign()
    d = np.stack([_cv_differences(rng, design) for _ in range(300)])  # [sim, seed, fold]
    grand = d.mean(axis=(1, 2))
    assert abs(grand.mean()) < 3 * grand.std(ddof=1) / np.sqrt(grand.size)  # A/A: E[d] = 0
    centred = d - grand[:, None, None]
    same_seed = np.mean(centred[:, :, 0] * centred[:, :, 1])
    other_seed = np.mean(centred[:, 0, :] * centred[:, 1, :])
    assert same_seed > 0 and same_seed > 3 * abs(other_seed)


def test_batched_ridge_matches_a_single_fit():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(50, 3))
    y = f @ [1.0, 0.5, 0.0] + rng.normal(size=50)
    train = np.arange(50) < 35
    mu = f[train].mean(axis=0)
    a = f[train] - mu
    w = np.linalg.solve(a.T @ a + np.eye(3), a.T @ (y[train] - y[train].mean()))
    expected = np.corrcoef((f[~train] - mu) @ w, y[~train])[0, 1]
    assert _ridge_pearson(f, y, train, 1.0) == pytest.approx(expected)
    stacked = _ridge_pearson(np.stack([f, f[:, ::-1]]), y, np.stack([train, ~train]), 1.0)
    assert stacked[0] == pytest.approx(expected) and stacked[1] != pytest.approx(expected)


def test_simulation_is_seeded():
    assert simulate_aa(40, seed=5) == simulate_aa(40, seed=5)
    with pytest.raises(ValueError, match="generator"):
        simulate_aa(10, generator="nope")


def test_cli_json_is_one_object():
    out = CliRunner().invoke(app, ["calibrate", "--simulations", "40", "--seed", "3", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert set(data["false_positive_rate"]) == set(RULES)
    assert data["n_simulations"] == 40 and data["alpha"] == ALPHA
    assert data["false_positive_rate"] == calibrate(40, seed=3)["false_positive_rate"]


def test_cli_table():
    out = CliRunner().invoke(app, ["calibrate", "--simulations", "30"])
    assert out.exit_code == 0, out.output
    assert "naive_t" in out.stdout and "verdict" in out.stdout and "30 simulated A/A" in out.stdout
    assert "early_stop@-rope" in out.stdout and "early_stop@+rope" in out.stdout
    bad = CliRunner().invoke(app, ["calibrate", "--generator", "nope"])
    assert bad.exit_code == 2
