"""Metrics against hand-computed values (arithmetic in the comments) and against sklearn/scipy."""

import math
import warnings

import numpy as np
import pytest
from scipy.special import ndtr, ndtri
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import r2_score

from pianolab.errors import PianolabError
from pianolab.evaluate import METRICS, MetricResult, compute_metrics


def m(name, *args, **kw) -> MetricResult:
    return METRICS.get(name)(*args, **kw)


# Column 0: t = [1,2,3,4], p = [1,3,2,4]. Deviations from 2.5: t' = [-1.5,-.5,.5,1.5],
# p' = [-1.5,.5,-.5,1.5]; sum t'p' = 2.25-.25-.25+2.25 = 4; sum t'^2 = sum p'^2 = 5 -> r = 0.8.
# Ranks equal the values -> Spearman 0.8. Errors [0,1,-1,0] -> MSE 0.5, MAE 0.5, R2 = 1 - 2/5 = 0.6.
# Column 1: t = [0,0,1,1], p constant 0.5 -> r undefined (NaN); errors all 0.5 -> MSE 0.25,
# MAE 0.5; R2 = 1 - 1/1 = 0.
T = np.array([[1, 0], [2, 0], [3, 1], [4, 1]], dtype=float)
P = np.array([[1, 0.5], [3, 0.5], [2, 0.5], [4, 0.5]])


def test_primary_metrics_by_hand():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # constant column: NaN without a RuntimeWarning
        res = compute_metrics(["pearson", "spearman", "mse", "mae", "r2"], T, P)
    for name in ("pearson", "spearman"):
        assert res[name].per_dim[0] == pytest.approx(0.8)
        assert math.isnan(res[name].per_dim[1])
        assert res[name].value == pytest.approx(0.8)  # mean over the defined dimensions
    assert res["mse"].per_dim == pytest.approx([0.5, 0.25]) and res["mse"].value == pytest.approx(0.375)
    assert res["mae"].per_dim == pytest.approx([0.5, 0.5]) and res["mae"].value == pytest.approx(0.5)
    assert res["r2"].per_dim == pytest.approx([0.6, 0.0]) and res["r2"].value == pytest.approx(0.3)
    assert res["mse"].higher_is_better is False and res["pearson"].higher_is_better is True


def test_all_constant_is_nan_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = m("pearson", np.ones((5, 3)), np.random.default_rng(0).random((5, 3)))
    assert math.isnan(r.value) and np.isnan(r.per_dim).all()


def test_against_sklearn_and_scipy():
    rng = np.random.default_rng(1)
    t = np.round(rng.random((60, 19)) * 7) / 7  # ties, as with mean ratings
    p = 0.5 * t + 0.3 * rng.random((60, 19))
    res = compute_metrics(["pearson", "spearman", "r2"], t, p)
    assert res["r2"].value == pytest.approx(r2_score(t, p, multioutput="uniform_average"))
    assert res["r2"].per_dim == pytest.approx(r2_score(t, p, multioutput="raw_values"))
    assert res["pearson"].per_dim == pytest.approx([pearsonr(t[:, d], p[:, d])[0] for d in range(19)])
    assert res["spearman"].per_dim == pytest.approx([spearmanr(t[:, d], p[:, d])[0] for d in range(19)])
    # R2 with a constant label column follows sklearn's force_finite convention.
    t[:, 3] = 0.5
    for pred in (p, np.where(np.arange(19) == 3, 0.5, p)):
        assert m("r2", t, pred).per_dim == pytest.approx(r2_score(t, pred, multioutput="raw_values"))


def test_within_excerpt_pearson_by_hand():
    # Group A: t = [1,2,3] (mean 2 -> [-1,0,1]), p = [0,2,1] (mean 1 -> [-1,1,0]).
    # Group B: t = [10,12] (mean 11 -> [-1,1]), p = [5,6] (mean 5.5 -> [-.5,.5]).
    # Group C: one item -> a zero row, no contribution.
    # Centered vectors have mean 0: sum t'p' = 1+0+0+.5+.5 = 2; sum t'^2 = 4; sum p'^2 = 2.5
    # -> r = 2 / sqrt(10).
    t = np.array([1, 2, 3, 10, 12, 100.0])
    p = np.array([0, 2, 1, 5, 6, -50.0])
    g = np.array(["A", "A", "A", "B", "B", "C"])
    res = m("within_excerpt_pearson", t, p, g)
    assert res.value == pytest.approx(2 / math.sqrt(10))
    assert res.value != pytest.approx(m("pearson", t, p).value)  # the group offsets are gone
    with pytest.raises(PianolabError, match="needs groups"):
        m("within_excerpt_pearson", t, p)


def test_pooled_z_pearson_by_hand():
    # Labels per dim are 0.5 + 0.1*[-1, 1]: mean 0.5, std 0.1 -> z = [-1, 1] in both dims.
    # Predictions: dim 0 equal to the labels (z [-1, 1]); dim 1 = 0.5 + 0.05*[1, -1].
    # scale='labels': z-pred dim 1 = [.5, -.5]; pooled t = [-1,1,-1,1], p = [-1,1,.5,-.5]:
    #   sum tp = 1+1-.5-.5 = 1, sum t^2 = 4, sum p^2 = 2.5 -> r = 1/sqrt(10).
    # scale='own': z-pred dim 1 = [1, -1]; sum tp = 1+1-1-1 = 0 -> r = 0.
    t = 0.5 + 0.1 * np.array([[-1, -1], [1, 1.0]])
    p = np.array([[0.4, 0.55], [0.6, 0.45]])
    assert m("pooled_z_pearson", t, p).value == pytest.approx(1 / math.sqrt(10))
    assert m("pooled_z_pearson", t, p, scale="own").value == pytest.approx(0.0, abs=1e-12)
    assert m("pooled_z_pearson", t, p).per_dim is None


def test_dimension_weighted_correlation():
    # r = [0.8, -1] (column 0 of T/P; a reversed column): weights [3, 1] -> (2.4 - 1) / 4 = 0.35.
    t = np.column_stack([T[:, 0], [1, 2, 3, 4]])
    p = np.column_stack([P[:, 0], [4, 3, 2, 1]])
    assert m("dimension_weighted_correlation", t, p, weights=[3, 1]).value == pytest.approx(0.35)
    # Negative weights are clipped to 0 -> only dim 0 counts.
    assert m("dimension_weighted_correlation", t, p, weights=[1, -2]).value == pytest.approx(0.8)
    # An undefined (NaN) dimension drops out with its weight: T/P's column 1 is constant in P.
    assert m("dimension_weighted_correlation", T, P, weights=[1, 5]).value == pytest.approx(0.8)
    with pytest.raises(PianolabError, match="weights"):
        m("dimension_weighted_correlation", t, p)


# Group A (4 items): t = [.9,.1,.5,.7], p = [.8,.6,.2,.1]; group B (3): t = [.2,.3,.4], p = [.3,.2,.1];
# group C: one item (never used).
TK_T = np.array([0.9, 0.1, 0.5, 0.7, 0.2, 0.3, 0.4, 0.5])
TK_P = np.array([0.8, 0.6, 0.2, 0.1, 0.3, 0.2, 0.1, 0.9])
TK_G = np.array(list("AAAABBBC"))


def test_top_k_accuracy_by_hand():
    # k=1: A: raters' top {0}, model's {0} -> 1; B: raters {6}, model {4} -> 0. Mean 0.5.
    #      chance = mean(1/4, 1/3) = 7/24.
    r1 = m("top_k_accuracy", TK_T, TK_P, TK_G, k=1)
    assert r1.value == pytest.approx(0.5) and r1.details["chance"] == pytest.approx(7 / 24)
    assert r1.details["n_groups"] == 2
    # k=2: A: raters {0,3}, model {0,1} -> 1/2; B: raters {5,6}, model {4,5} -> 1/2. Mean 0.5.
    assert m("top_k_accuracy", TK_T, TK_P, TK_G, k=2).value == pytest.approx(0.5)
    # k=3: only A has more than 3 items: raters {0,3,2}, model {0,1,2} -> 2/3.
    assert m("top_k_accuracy", TK_T, TK_P, TK_G, k=3).value == pytest.approx(2 / 3)
    # Tie in the labels at the k-th place: t = [.5,.5,.1], model's top item 1 is tied first -> hit.
    assert m("top_k_accuracy", [0.5, 0.5, 0.1], [0.2, 0.9, 0.1], ["g"] * 3, k=1).value == 1.0


def test_pairwise_ranking_accuracy_by_hand():
    # A: pairs (0,1) t+.8 p+.2 ok, (0,2) t+.4 p+.6 ok, (0,3) t+.2 p+.7 ok, (1,2) t-.4 p+.4 no,
    #    (1,3) t-.6 p+.5 no, (2,3) t-.2 p+.1 no -> 3/6.  B: every pair reversed -> 0/3.
    # Pooled: 3/9.
    r = m("pairwise_ranking_accuracy", TK_T, TK_P, TK_G)
    assert r.value == pytest.approx(1 / 3) and r.details["n_pairs"][0] == 9
    # A prediction tie counts one half.
    assert m("pairwise_ranking_accuracy", [0.0, 1.0], [0.5, 0.5], ["g", "g"]).value == 0.5
    # min_label_gap 0.45 keeps only A's (0,1) ok, (1,3) no -> 1/2 (B's gaps are <= .2).
    assert m("pairwise_ranking_accuracy", TK_T, TK_P, TK_G, min_label_gap=0.45).value == pytest.approx(0.5)


def test_distribution_matching_by_hand():
    # dim 0: t {0,1}, p {.5,1.5}: shift .5 -> W1 = .5; ECDF gap .5 at 0 and at 1 -> KS .5; var ratio 1.
    # dim 1: t {0,1}, p {.25,.75}: W1 = (.25+.25)/2 = .25; KS .5; var .0625/.25 = .25.
    t = np.array([[0, 0], [1, 1.0]])
    p = np.array([[0.5, 0.25], [1.5, 0.75]])
    r = m("distribution_matching", t, p)
    assert r.per_dim == pytest.approx([0.5, 0.25]) and r.value == pytest.approx(0.375)
    assert r.details["ks"] == pytest.approx([0.5, 0.5])
    assert r.details["variance_ratio"] == pytest.approx([1.0, 0.25])
    assert r.higher_is_better is False


def test_confidence_calibration_gaussian():
    rng = np.random.default_rng(0)
    n, d = 4000, 3
    mu = rng.random((n, d))
    sigma = rng.uniform(0.02, 0.2, (n, d))
    y = mu + sigma * rng.standard_normal((n, d))
    levels = (0.5, 0.8, 0.9, 0.95)
    good = m("confidence_calibration", y, mu, pred_std=sigma, levels=levels)
    tol = 4 * math.sqrt(0.25 / (n * d))  # 4 binomial standard errors at worst (p = .5)
    for p in levels:
        assert good.details["coverage"][p] == pytest.approx(p, abs=tol)
    assert good.value < tol
    assert good.details["mean_std_error_corr"] > 0.3  # heteroscedastic: larger std, larger error
    # Intervals half as wide cover P(|Z| <= z_p / 2) = 2*Phi(z_p / 2) - 1 instead of p.
    narrow = m("confidence_calibration", y, mu, pred_std=sigma / 2, levels=levels)
    for p in levels:
        expected = 2 * ndtr(ndtri((1 + p) / 2) / 2) - 1
        assert narrow.details["coverage"][p] == pytest.approx(expected, abs=tol)
    assert narrow.value > 0.1


def test_worst_case_performance_by_hand():
    # errors e = [.1,0,0,0,0,.5,0,0,0,.2] (one dim): hardest 10% = item 5 -> MSE .25;
    # hardest 20% = items 5, 9 -> (.25 + .04)/2 = .145.
    # groups a = items 0-4: (.01)/5 = .002; b = items 5-9: (.25+.04)/5 = .058 -> worst b.
    t = np.zeros(10)
    e = np.array([0.1, 0, 0, 0, 0, 0.5, 0, 0, 0, 0.2])
    g = np.array(list("aaaaabbbbb"))
    r = m("worst_case_performance", t, t + e, g)
    assert r.value == pytest.approx(0.25) and list(r.details["items"]) == [5]
    r2 = m("worst_case_performance", t, t + e, g, fraction=0.2)
    assert r2.value == pytest.approx(0.145) and list(r2.details["items"]) == [5, 9]
    assert r2.details["worst_group"] == "b" and r2.details["worst_group_mse"] == pytest.approx(0.058)
    assert r2.details["group_mse"]["a"] == pytest.approx(0.002)


def test_compute_metrics_errors():
    with pytest.raises(PianolabError, match="unknown metric 'nope'; valid: .*pearson"):
        compute_metrics(["nope"], T, P)
    with pytest.raises(PianolabError, match="options given"):
        compute_metrics(["mse"], T, P, options={"pearson": {}})
    with pytest.raises(PianolabError, match="finite"):
        compute_metrics(["mse"], T, np.where(P > 3, np.nan, P))
    with pytest.raises(PianolabError, match="equal"):
        compute_metrics(["mse"], T, P[:3])
    res = compute_metrics(["top_k_accuracy"], TK_T, TK_P, TK_G, options={"top_k_accuracy": {"k": 3}})
    assert res["top_k_accuracy"].value == pytest.approx(2 / 3)
    assert set(res["top_k_accuracy"].as_dict()) == {"value", "per_dim", "higher_is_better"}
    with pytest.raises(PianolabError, match="groups must have shape"):
        compute_metrics(["top_k_accuracy"], TK_T, TK_P, TK_G[:3])
