"""pianolab.ab.stats and pianolab.ab.power: hand-computed cases, scipy agreement, properties."""

import numpy as np
import pytest
from scipy import stats as st

from pianolab.ab.power import corrected_power, minimal_detectable_delta, power_analysis
from pianolab.ab.stats import bayesian_correlated_t as bayes
from pianolab.ab.stats import (
    benjamini_hochberg,
    bonferroni,
    bootstrap_groups,
    cohens_d,
    corrected_effect_size,
    corrected_t_test,
    early_stop,
    equivalence_p,
    holm,
    naive_paired_t,
    per_dimension,
    permutation_test_items,
    prob_improvement,
    rope_for,
    signed_rank_cdf,
    verdict,
    verdicts,
    wilcoxon_signed_rank,
)

# d[seed, fold] = [[1, 3], [2, 4]]: n = 4 cells, mean 2.5, deviations -1.5, .5, -.5, 1.5,
# s² = (2.25 + .25 + .25 + 2.25) / 3 = 5/3. With n_train = n_test the correction term is 1, so
# SE² = 5/3 · (1/4 + 1) = 25/12, t = 2.5 / sqrt(25/12) = sqrt(3), df = 3.
HAND = np.array([[1.0, 3.0], [2.0, 4.0]])
HAND_SE = np.sqrt(25 / 12)


def test_corrected_t_hand_case():
    r = corrected_t_test(HAND, n_train=100, n_test=100)
    assert r.mean == 2.5 and r.df == 3
    assert r.se == pytest.approx(HAND_SE) and r.t == pytest.approx(np.sqrt(3))
    assert r.p == pytest.approx(0.181690, abs=1e-6)  # 2·P(T3 > sqrt 3)
    half = 3.182446 * HAND_SE  # t_(0.975, 3) · SE = 4.593466
    assert (r.ci_low, r.ci_high) == pytest.approx((2.5 - half, 2.5 + half), abs=1e-5)


def test_corrected_without_correction_term_is_scipy_ttest_rel():
    rng = np.random.default_rng(0)
    a = rng.normal(0.5, 0.05, size=(5, 4))
    b = a + rng.normal(0.01, 0.02, size=(5, 4))
    ref = st.ttest_rel(b.ravel(), a.ravel())
    for r in (corrected_t_test(b - a, n_train=150, n_test=0), naive_paired_t(b - a)):
        assert r.t == pytest.approx(ref.statistic) and r.p == pytest.approx(ref.pvalue)
    # with the term, only the variance factor changes: t_corr = t_naive · sqrt((1/n) / (1/n + r))
    corr = corrected_t_test(b - a, n_train=150, n_test=50)
    assert corr.t == pytest.approx(ref.statistic * np.sqrt((1 / 20) / (1 / 20 + 1 / 3)))
    assert corr.p > ref.pvalue


def test_zero_variance_cells():
    assert corrected_t_test(np.zeros((3, 4)), 90, 30).p == 1.0
    r = corrected_t_test(np.full((3, 4), 0.25), 90, 30)
    assert r.p == 0.0 and r.ci_low == r.ci_high == 0.25
    z = bayes(np.zeros((3, 4)), 90, 30, rope=0.01)
    assert (z.p_better, z.p_rope, z.p_worse) == (0.0, 1.0, 0.0)


def test_per_dimension_matches_one_test_per_dimension_and_bh():
    d = np.random.default_rng(1).normal(0.01, 0.03, size=(5, 4, 19))
    res = per_dimension(d, 150, 50)
    for j in (0, 7, 18):
        one = corrected_t_test(d[..., j], 150, 50)
        assert res.test.p[j] == pytest.approx(one.p) and res.test.ci_low[j] == pytest.approx(one.ci_low)
    np.testing.assert_allclose(res.adjusted.p_adjusted, st.false_discovery_control(res.test.p))


def test_bayesian_hand_case_and_link_to_corrected_test():
    r = bayes(HAND, 100, 100, rope=1.0)
    # posterior T3 located at 2.5 with scale sqrt(25/12) = 1.443376
    assert r.p_better == pytest.approx(st.t.sf((1 - 2.5) / HAND_SE, 3))  # P(T3 > -1.03923) = 0.81245
    assert r.p_worse == pytest.approx(st.t.cdf((-1 - 2.5) / HAND_SE, 3))  # P(T3 < -2.42487) = 0.04688
    assert r.p_better == pytest.approx(0.812452, abs=1e-6) and r.p_worse == pytest.approx(0.046880, abs=1e-6)
    assert r.p_better + r.p_rope + r.p_worse == pytest.approx(1.0)
    d = np.random.default_rng(2).normal(0.01, 0.02, size=(5, 4))
    freq, b0 = corrected_t_test(d, 150, 50), bayes(d, 150, 50, rope=0.0)
    assert b0.p_worse == pytest.approx(freq.p / 2)  # flat prior: one-sided p = P(worse)
    assert (b0.ci_low, b0.ci_high) == pytest.approx((freq.ci_low, freq.ci_high))
    assert bayes(d, 150, 50, rope=0.02).p_rope > bayes(d, 150, 50, rope=0.005).p_rope


def test_signed_rank_null_distribution_n3():
    # subsets of {1,2,3} sum to 0,1,2,3,3,4,5,6: pmf [1,1,1,2,1,1,1]/8
    np.testing.assert_allclose(signed_rank_cdf(3), np.array([1, 2, 3, 5, 6, 7, 8]) / 8)


def test_wilcoxon_p_matches_exact_null_and_hodges_lehmann_interval():
    # T+ = 1 + 2 = 3; P(T+ <= 3) = #{{}, {1}, {2}, {3}, {1,2}} / 2^8 = 5/256, two-sided p = 10/256
    r = wilcoxon_signed_rank(np.array([[1.0, 2, -3, -4], [-5, -6, -7, -8]]))
    assert r.statistic == 3 and r.p == pytest.approx(10 / 256)
    # d = 1..8: Walsh averages (i+j)/2 are symmetric about 4.5. n = 8: P(T+ <= 3) = 5/256 <= .025 <
    # P(T+ <= 4) = 7/256, so the interval is [4th smallest, 4th largest] = [2 (= (2+2)/2), 7]
    r = wilcoxon_signed_rank(np.arange(1.0, 9.0).reshape(2, 4))
    assert r.estimate == 4.5 and (r.ci_low, r.ci_high) == (2.0, 7.0)
    # n = 6: only P(T+ = 0) = 1/64 <= .025, so the interval is [min, max]; n = 3 cannot reach 95%
    r = wilcoxon_signed_rank(np.arange(1.0, 7.0).reshape(2, 3))
    assert (r.ci_low, r.ci_high) == (1.0, 6.0)
    assert wilcoxon_signed_rank(np.array([[1.0, 2.0, 3.0]])).ci_low == -np.inf


def test_effect_sizes():
    # mean 2.5, sd sqrt(5/3) = 1.290994: d_z = 1.936492; corrected (r = 1): 2.5 / (1.290994·sqrt 2)
    d = cohens_d(HAND)
    assert d.estimate == pytest.approx(1.936492, abs=1e-6)
    # interval inverts the noncentral t: P(T(3, ncp = 2·low) >= t_obs) = .025
    assert st.nct.sf(d.estimate * 2, 3, d.ci_low * 2) == pytest.approx(0.025, abs=1e-8)
    assert st.nct.cdf(d.estimate * 2, 3, d.ci_high * 2) == pytest.approx(0.025, abs=1e-8)
    c = corrected_effect_size(HAND, 100, 100)
    assert c.estimate == pytest.approx(1.369306, abs=1e-6)
    assert c.ci_low < 0 < c.ci_high  # as the corrected test: p = 0.18, CI spans 0
    no_term = corrected_effect_size(HAND, 100, 0)
    assert (no_term.estimate, no_term.ci_low, no_term.ci_high) == pytest.approx((d.estimate, d.ci_low,
                                                                                  d.ci_high))


def test_prob_improvement_wilson():
    # 2 wins, 1 tie (counts 1/2), 1 loss -> 2.5/4; Wilson with z = 1.959964:
    # centre (.625 + z²/8)/(1 + z²/4) = .563771, half z·sqrt(.625·.375/4 + z²/64)/(1 + z²/4) = .344337
    r = prob_improvement([[0.1, -0.2], [0.0, 0.3]])
    assert r.estimate == 0.625
    assert (r.ci_low, r.ci_high) == pytest.approx((0.219427, 0.908101), abs=1e-6)


def _mae_score(y, p):
    return -float(np.mean(np.abs(y - p)))


def test_bootstrap_groups():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(20), 10)
    y = rng.normal(size=(200, 3))
    pred_a = y + rng.normal(size=(200, 3))
    same = bootstrap_groups(y, pred_a, pred_a, _mae_score, groups, n_boot=200, seed=0)
    assert (same.estimate, same.ci_low, same.ci_high) == (0.0, 0.0, 0.0)
    # B's advantage is the same for all items of a group but differs between groups: resampling
    # groups must give a wider interval than resampling items as if they were independent
    shift = rng.normal(0.3, 0.3, size=20)[groups][:, None]
    pred_b = y + (pred_a - y) * np.clip(1 - shift, 0, None)
    by_group = bootstrap_groups(y, pred_a, pred_b, _mae_score, groups, n_boot=500, seed=0)
    by_item = bootstrap_groups(y, pred_a, pred_b, _mae_score, None, n_boot=500, seed=0)
    full = _mae_score(y, pred_b) - _mae_score(y, pred_a)
    assert by_group.estimate == by_item.estimate == pytest.approx(full)
    assert by_group.ci_low < by_group.estimate < by_group.ci_high
    assert by_group.ci_high - by_group.ci_low > 1.5 * (by_item.ci_high - by_item.ci_low)
    assert by_group.n_units == 20 and by_item.n_units == 200
    assert bootstrap_groups(y, pred_a, pred_b, _mae_score, groups, n_boot=200, seed=7) == \
        bootstrap_groups(y, pred_a, pred_b, _mae_score, groups, n_boot=200, seed=7)


def test_permutation_hand_cases():
    err_a, err_b = np.array([2.0, 2.0, 2.0]), np.array([1.0, 1.0, 1.0])
    # 3 items, differences all +1: of the 8 sign patterns only +++ and --- reach |mean| >= 1 -> p = 1/4
    r = permutation_test_items(err_a, err_b, n_perm=20000, seed=0)
    assert r.estimate == 1.0 and r.p == pytest.approx(0.25, abs=0.01)
    # one group holding all three items: both patterns are extreme -> p = 1
    assert permutation_test_items(err_a, err_b, groups=np.zeros(3), n_perm=999, seed=0).p == 1.0
    # [item, dim] errors are averaged over dimensions
    two_dims = permutation_test_items(np.c_[err_a, err_a + 2], np.c_[err_b, err_b], n_perm=100, seed=0)
    assert two_dims.estimate == 2.0


def test_permutation_detects_a_real_difference():
    rng = np.random.default_rng(4)
    err_a = rng.gamma(2.0, size=300)
    err_b = err_a - 0.3 + rng.normal(0, 0.5, size=300)
    r = permutation_test_items(err_a, err_b, n_perm=4000, seed=1)
    assert r.p < 0.01 and r.ci_low < 0.3 < r.ci_high


def test_multiple_comparisons_hand_case():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted .005 .01 .03 .04; Holm ·4 ·3 ·2 ·1 = .02 .03 .06 .04 -> running max .02 .03 .06 .06
    h = holm(p)
    np.testing.assert_allclose(h.p_adjusted, [0.03, 0.06, 0.06, 0.02])
    assert h.reject.tolist() == [True, False, False, True]
    b = bonferroni(p)
    np.testing.assert_allclose(b.p_adjusted, [0.04, 0.16, 0.12, 0.02])
    # BH ·4/1 ·4/2 ·4/3 ·4/4 = .02 .02 .04 .04 -> running min from the top: unchanged
    bh = benjamini_hochberg(p)
    np.testing.assert_allclose(bh.p_adjusted, [0.02, 0.04, 0.04, 0.02])
    assert bh.reject.all()
    np.testing.assert_allclose(bh.p_adjusted, st.false_discovery_control(p))
    np.testing.assert_allclose(holm([0.8, 0.9]).p_adjusted, [1.0, 1.0])  # capped at 1
    with pytest.raises(ValueError):
        holm([0.1, 1.5])


def test_verdict_rule():
    noise = np.random.default_rng(5).normal(0, 1, size=(5, 4))
    noise = (noise - noise.mean()) / noise.std(ddof=1)  # mean 0, sd 1 exactly
    # SE = sd·sqrt(1/20 + 1/3) = 0.619·sd; t_(.975,19)·0.619 = 1.296: a mean of 2 sd is significant
    assert verdict(2 + noise, 150, 50, rope=0.5).label == "better"
    assert verdict(-2 - noise, 150, 50, rope=0.5).label == "worse"
    tiny = 0.01 * noise  # CI ±0.013 inside ±0.5
    eq = verdict(tiny, 150, 50, rope=0.5)
    assert eq.label == "equivalent within the ROPE" and -0.5 < eq.ci_low < eq.ci_high < 0.5
    assert eq.p_equivalence < 0.05 and "differ by less than the ROPE" in eq.sentence
    assert verdict(0.5 + noise, 150, 50, rope=0.5).label == "inconclusive"
    # a significant difference inside the ROPE is not headlined as plain "better"
    small = verdict(0.1 + 0.01 * noise, 150, 50, rope=0.5, variant="tiny")
    assert small.p < 0.05 and small.p_rope > 0.99
    assert small.label == "better, but within the ROPE" and "within the ROPE" in small.sentence
    assert verdict(-0.1 - 0.01 * noise, 150, 50, rope=0.5).label == "worse, but within the ROPE"
    # a significant raw p that Holm lifts above alpha is no longer a winner
    raw = verdict(1.4 + noise, 150, 50, rope=0.5)
    assert raw.p < 0.05 and raw.label == "better"
    assert verdict(1.4 + noise, 150, 50, rope=0.5, p_adjusted=3 * raw.p).label == "inconclusive"


def test_equivalence_p_matches_the_interval():
    rng = np.random.default_rng(11)
    for _ in range(50):
        d = rng.normal(rng.normal(0, 0.01), 0.01, size=(3, 4))
        t = corrected_t_test(d, 150, 50)
        inside = -0.02 < t.ci_low and t.ci_high < 0.02
        assert (equivalence_p(t.mean, t.se, t.df, 0.02) < 0.05) == inside


def test_equivalence_claims_are_holm_adjusted_like_differences():
    noise = np.random.default_rng(5).normal(0, 1, size=(5, 4))
    noise = (noise - noise.mean()) / noise.std(ddof=1)
    # one variant is barely equivalent alone: its (1 - alpha) interval just fits inside the ROPE
    alone = verdict(0.35 * noise, 150, 50, rope=0.5)
    assert alone.label == "equivalent within the ROPE" and 0.05 / 3 < alone.p_equivalence < 0.05
    scores = np.zeros((4, 5, 4))
    scores[1] = 0.35 * noise
    scores[2] = scores[3] = 3 + noise  # two clear differences
    out = verdicts(scores, 150, 50, rope=0.5, names=["baseline", "a", "b", "c"])
    q = [float(equivalence_p(*(lambda t: (t.mean, t.se, t.df))(corrected_t_test(scores[v], 150, 50)), 0.5))
         for v in (1, 2, 3)]
    np.testing.assert_allclose([out[v].p_equivalence_adjusted for v in (1, 2, 3)], holm(q).p_adjusted)
    assert out[1].p_equivalence_adjusted > 0.05 and out[1].label == "inconclusive"
    assert out[1].sentence.startswith("The data cannot tell a from the baseline")
    # the interval beside a Holm p is the Bonferroni-adjusted simultaneous one (wider than the raw one)
    v = out[2]
    assert v.family == 3 and v.ci_adjusted_low < v.ci_low < v.ci_high < v.ci_adjusted_high
    half = st.t.ppf(1 - 0.05 / 6, 19) * corrected_t_test(scores[2], 150, 50).se
    assert v.ci_adjusted_high == pytest.approx(v.mean + half)


def test_the_rope_belongs_to_the_primary_metric():
    assert rope_for("pearson", None) == 0.01 and rope_for("mse", 0.002) == 0.002
    with pytest.raises(ValueError, match="'mse' is not a correlation"):
        rope_for("mse", None)


def test_item_level_tests_say_they_hold_the_models_fixed():
    rng = np.random.default_rng(3)
    y = rng.normal(size=(40, 2))
    a, b = y + rng.normal(size=y.shape), y + rng.normal(size=y.shape)
    boot = bootstrap_groups(y, a, b, lambda t, p: float(np.mean((t - p) ** 2)), n_boot=20)
    perm = permutation_test_items((a - y) ** 2, (b - y) ** 2, n_perm=100)
    assert all("trained models held fixed" in r.label for r in (boot, perm))


def test_verdicts_apply_holm_across_variants():
    rng = np.random.default_rng(6)
    scores = 0.5 + rng.normal(0, 0.01, size=(4, 5, 4))
    scores[2] += 0.03
    out = verdicts(scores, 150, 50, rope=0.005)
    assert sorted(out) == [1, 2, 3]
    raw = [corrected_t_test(scores[v] - scores[0], 150, 50).p for v in (1, 2, 3)]
    np.testing.assert_allclose([out[v].p_adjusted for v in (1, 2, 3)], holm(raw).p_adjusted)
    assert out[2].label == "better"


def test_early_stop_rule():
    bad = -0.05 + np.random.default_rng(7).normal(0, 0.01, size=(5, 4))
    assert not early_stop(bad[:2], 150, 50, rope=0.01, min_seeds=3, max_seeds=5).stop  # no look yet
    r = early_stop(bad[:3], 150, 50, rope=0.01, min_seeds=3, max_seeds=5)
    assert r.stop and r.alpha_per_look == pytest.approx(0.05 / 3)  # looks after seeds 3, 4, 5
    x = bad[:3].ravel()
    se = x.std(ddof=1) * np.sqrt(1 / 12 + 1 / 3)
    assert r.upper_bound == pytest.approx(x.mean() + st.t.ppf(1 - 0.05 / 3, 11) * se)
    assert not early_stop(bad[:3] + 0.05, 150, 50, rope=0.01, min_seeds=3, max_seeds=5).stop


def test_input_validation():
    with pytest.raises(ValueError, match="shape"):
        corrected_t_test(np.zeros(5), 10, 5)
    with pytest.raises(ValueError, match="NaN"):
        corrected_t_test(np.array([[0.1, np.nan]]), 10, 5)
    with pytest.raises(ValueError, match="n_train"):
        corrected_t_test(np.ones((2, 2)), 0, 5)


# --------------------------------------------------------------------------- power


def test_power_at_zero_difference_is_alpha_and_matches_simulation():
    assert corrected_power(0.0, 1.0, 5, 4, 1 / 3) == pytest.approx(0.05)
    # exchangeable cells (ρ = 1/4, so ρ/(1−ρ) = 1/3) make the corrected t exactly noncentral t;
    # the sd the pilot sees is σ·sqrt(1 − ρ)
    rng, sims, rho, delta = np.random.default_rng(8), 4000, 0.25, 0.6
    shared = np.sqrt(rho) * rng.normal(size=(1, 1, sims))
    d = delta + shared + np.sqrt(1 - rho) * rng.normal(size=(5, 4, sims))
    rejected = np.mean(corrected_t_test(d, 150, 50).p < 0.05)
    expected = corrected_power(delta, np.sqrt(1 - rho), 5, 4, 1 / 3)
    assert rejected == pytest.approx(expected, abs=3 * np.sqrt(expected * (1 - expected) / sims))


def test_power_analysis_monotone_and_minimal():
    # a small correction term (n_test/n_train = 0.05) keeps these deltas above the floor below
    pilot = np.random.default_rng(9).normal(0.0, 0.01, size=(5, 4))
    plan = power_analysis(pilot, 1000, 50, delta=0.01)
    assert plan.seeds is not None and plan.folds == 4
    assert corrected_power(0.01, plan.sd, plan.seeds, 4, 0.05) >= 0.8 > \
        corrected_power(0.01, plan.sd, plan.seeds - 1, 4, 0.05)
    seeds = [power_analysis(pilot, 1000, 50, delta=x).seeds for x in (0.02, 0.015, 0.01, 0.009)]
    assert seeds == sorted(seeds) and seeds[0] < seeds[-1]
    assert power_analysis(pilot, 1000, 50, 0.01, power=0.9).seeds > plan.seeds
    assert power_analysis(pilot, 1000, 50, 0.01, alpha=0.01).seeds > plan.seeds
    low, high = plan.seeds_range
    assert low <= plan.seeds and (high is None or plan.seeds <= high)


def test_power_floor_from_the_correction_term():
    pilot = np.random.default_rng(10).normal(0.0, 0.02, size=(5, 4))
    sd = pilot.std(ddof=1)
    # SE >= sd·sqrt(1/3) however many seeds: a difference of a tenth of that is never detected
    never = power_analysis(pilot, 150, 50, delta=0.1 * sd / np.sqrt(3))
    assert never.seeds is None and never.why.startswith("no number of seeds suffices")
    assert f"{sd / np.sqrt(3):.3g}" in never.why  # the floor of the corrected standard error
    # reachable in the limit but not within max_seeds: said differently
    capped = power_analysis(pilot, 150, 50, delta=2 * sd, max_seeds=1)
    assert capped.seeds is None and capped.why.startswith("more than 1 seeds") and not power_analysis(
        pilot, 150, 50, delta=2 * sd).why


def test_minimal_detectable_delta():
    pilot = np.random.default_rng(11).normal(0.0, 0.02, size=(5, 4))
    mdd = minimal_detectable_delta(pilot, 150, 50)
    assert (mdd.seeds, mdd.folds) == (5, 4)
    assert corrected_power(mdd.delta, mdd.sd, 5, 4, 1 / 3) == pytest.approx(0.8, abs=1e-6)
    assert mdd.ci_low < mdd.delta < mdd.ci_high
    more = [minimal_detectable_delta(pilot, 150, 50, seeds=s).delta for s in (3, 5, 10, 20)]
    assert more == sorted(more, reverse=True)
    assert power_analysis(pilot, 150, 50, delta=mdd.delta * 1.001).seeds <= 5
