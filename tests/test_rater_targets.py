"""The raters, not only their mean (issue 24 §3): a rater-effects model recovers known rater effects,
rater-aware targets and weights are fitted on the training fold's ratings only, test metrics use the
official labels, and options that cannot act are refused in one line."""

import shutil

import numpy as np
import pandas as pd
import pytest

from pianolab.config import config_from_dict, identity_dict
from pianolab.data.percepiano import DIMENSIONS, RATINGS, load_dataset
from pianolab.data.rater_effects import RaterModel, fit_rater_model, rater_precision
from pianolab.data.ratings import Ratings, load_ratings
from pianolab.errors import PianolabError
from pianolab.train.run import execute, fold_roles, summarise
from pianolab.train.validate import check_config

PRED = [f"pred_{d}" for d in DIMENSIONS]
TRUE = [f"true_{d}" for d in DIMENSIONS]


def _synthetic(seed=0, n_items=300, n_raters=30, per_item=8, scales=False, noisy=()):
    """A Ratings table from known effects: rating = offset_u + scale_u * effect_i + noise (sd 0.4, 1.5
    for the `noisy` raters), each item rated by `per_item` random raters; returns (ratings, truth)."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(4.0, 0.8, size=(n_items, 19))
    offset = rng.normal(0.0, 0.7, size=(n_raters, 19))
    scale = rng.uniform(0.5, 1.5, size=(n_raters, 19)) if scales else np.ones((n_raters, 19))
    sd = np.where(np.isin(np.arange(n_raters), noisy), 1.5, 0.4)[:, None]
    rows = []
    for i in range(n_items):
        for u in rng.choice(n_raters, size=per_item, replace=False):
            rows.append([f"u{u}", i, f"item{i}", *(offset[u] + scale[u] * effect[i] + rng.normal(0, sd[u, 0], 19))])
    table = pd.DataFrame(rows, columns=["user", "data_id", "stem", *[f"d{k}" for k in range(19)]])
    return Ratings(table, 0), {"effect": effect, "offset": offset, "scale": scale,
                               "stems": [f"item{i}" for i in range(n_items)]}


def _by_rater(fit, values):
    """Rows of a (raters, 19) truth in the fit's rater order."""
    return values[[int(u[1:]) for u in fit.raters]]


def _corr(a, b):
    return np.mean([np.corrcoef(a[:, d], b[:, d])[0, 1] for d in range(a.shape[1])])


def test_rater_model_recovers_known_offsets():
    ratings, truth = _synthetic()
    fit = fit_rater_model(ratings, truth["stems"], RaterModel(scales=False, reliabilities=False))
    true_off = _by_rater(fit, truth["offset"])
    est, ref = fit.offsets - fit.offsets.mean(0), true_off - true_off.mean(0)
    assert _corr(est, ref) > 0.97
    assert np.abs(est - ref).mean() < 0.12  # on the 1..7 scale; offsets have sd 0.7
    plain = ratings.table.groupby("stem")[[f"d{k}" for k in range(19)]].mean().loc[truth["stems"]].to_numpy()
    # the effects are closer to the truth than the plain item means (rater bias removed)
    err = lambda e: np.abs((e - e.mean(0)) - (truth["effect"] - truth["effect"].mean(0))).mean()  # noqa: E731
    assert err(fit.effects) < 0.75 * err(plain)


def test_full_model_recovers_scales_and_trusts_the_consistent_raters():
    ratings, truth = _synthetic(seed=1, scales=True, noisy=(0, 1, 2))
    fit = fit_rater_model(ratings, truth["stems"], RaterModel())
    assert _corr(fit.scales, _by_rater(fit, truth["scale"])) > 0.8
    noisy = np.isin(fit.raters, ["u0", "u1", "u2"])
    assert fit.variances[noisy].mean() > 5 * fit.variances[~noisy].mean()  # 1.5^2 vs 0.4^2
    plain = ratings.table.groupby("stem")[[f"d{k}" for k in range(19)]].mean().loc[truth["stems"]].to_numpy()
    assert _corr(fit.effects, truth["effect"]) > _corr(plain, truth["effect"]) + 0.02


def test_precision_weights_follow_the_number_and_agreement_of_ratings(dataset):
    ratings = load_ratings(dataset.root)
    idx = np.arange(0, len(dataset), 3)
    w = rater_precision(dataset, ratings, idx)
    assert w.shape == (len(idx),) and np.isclose(w.mean(), 1.0) and (w > 0).all()
    n = ratings.table.groupby("stem").size().reindex([dataset.stems[i] for i in idx]).to_numpy()
    assert np.corrcoef(w, n)[0, 1] > 0.8  # more raters: a better-measured mean
    spread = dataset.label_std[idx].mean(1)
    few = n == np.median(n)  # the same number of raters: more disagreement, less weight
    assert np.corrcoef(w[few], spread[few])[0, 1] < -0.3


def _small_root(dest, dataset, every=6):
    """A data folder with the performances of every `every`-th excerpt (real items, a sixth of the cost)."""
    shutil.copytree(dataset.root / "labels", dest / "labels")
    (dest / "midi").mkdir()
    keep = set(sorted(set(dataset.column("group")))[::every])
    for it in dataset.items:
        if it.group in keep:
            shutil.copy(it.midi_path, dest / "midi" / it.midi_path.name)
    return dest


def _poisoned(src, dest, stems):
    """A copy of data folder `src` whose individual ratings of `stems` are all 7 (labels untouched)."""
    from pianolab.data.ratings import normalise_filename

    shutil.copytree(src, dest)
    raw = pd.read_csv(src / RATINGS, dtype=str, keep_default_na=False)
    rows = raw["filename"].map(normalise_filename).isin(stems)
    qcols = [c for c in raw.columns if c.startswith("Question_")][:19]
    raw.loc[rows, qcols] = "7"
    assert rows.sum() > 50
    raw.to_csv(dest / RATINGS, index=False)
    return dest


def _test_rows(folder):
    df = pd.read_parquet(folder / "predictions.parquet")
    return df[df.role == "test"].sort_values("stem")


def test_test_fold_ratings_never_used_and_metrics_use_the_official_labels(tmp_path, dataset, monkeypatch):
    monkeypatch.setenv("PIANOLAB_SPLITS", str(tmp_path / "splits"))
    root = _small_root(tmp_path / "data", dataset)
    raw = lambda r: {"data": {"root": str(r), "targets": "rater_effects"},  # noqa: E731
                     "features": {"vector": ["symbolic"]},
                     "model": {"name": "ridge"},
                     "train": {"sample_weights": "rater_precision"}, "track": {"tracker": "none"}}
    cfg = config_from_dict(raw(root))
    check_config(cfg, "t")
    small = load_dataset(root)
    roles, _ = fold_roles(cfg, small, 0.0)
    test_stems = [small.stems[i] for i in roles.test]
    summary = execute(cfg, tmp_path / "clean")
    clean = _test_rows(tmp_path / "clean")
    # every test item's ratings set to 7: the same model, the same predictions
    poisoned = _poisoned(root, tmp_path / "poison_test", test_stems)
    execute(config_from_dict(raw(poisoned)), tmp_path / "poisoned_test")
    np.testing.assert_array_equal(_test_rows(tmp_path / "poisoned_test")[PRED].to_numpy(), clean[PRED].to_numpy())
    # the poison works: on some training items it changes the predictions
    train_stems = [small.stems[i] for i in roles.train[::3]]
    _poisoned(root, tmp_path / "poison_train", train_stems)
    execute(config_from_dict(raw(tmp_path / "poison_train")), tmp_path / "poisoned_train")
    assert not np.allclose(_test_rows(tmp_path / "poisoned_train")[PRED].to_numpy(), clean[PRED].to_numpy())
    # the test targets are the official mean labels, and so are the metrics
    official = small.labels[[small.index[s] for s in clean.stem]]
    np.testing.assert_array_equal(clean[TRUE].to_numpy(), official)
    groups = np.array([small.items[small.index[s]].group for s in clean.stem])
    assert summary["pearson"] == pytest.approx(summarise(official, clean[PRED].to_numpy(), groups)["pearson"])
    # and the options act: plain mean targets without weights predict otherwise
    plain = {**raw(root), "data": {"root": str(root)}, "train": {}}
    execute(config_from_dict(plain), tmp_path / "plain")
    assert not np.allclose(_test_rows(tmp_path / "plain")[PRED].to_numpy(), clean[PRED].to_numpy())


@pytest.mark.parametrize(("settings", "message"), [
    ({"model": {"name": "symbolic_mlp"}, "train": {"sample_weights": "rater_precision"}},
     "train.sample_weights: sample weights go to scikit-learn estimators; model 'symbolic_mlp' is neural"),
    ({"model": {"name": "stacking"}, "train": {"sample_weights": "rater_precision"}},
     "train.sample_weights: estimator 'stacking' does not accept sample weights (its fit takes no "
     "sample_weight)"),
    ({"train": {"sample_weights": "inverse_std"}}, "train.sample_weights: unknown name 'inverse_std'; valid: "
                                                   "none, rater_precision"),
    ({"data": {"targets": "median"}}, "data.targets: unknown name 'median'; valid: mean, rater_effects, "
                                      "rater_offsets"),
])
def test_refusals_are_one_line(settings, message):
    base = {"features": {"vector": ["symbolic"]}, "model": {"name": "extra_trees_small"}}
    cfg = config_from_dict({**base, **settings})
    with pytest.raises(PianolabError) as e:
        check_config(cfg, "exp.yaml")
    assert str(e.value) == f"exp.yaml: {message}" and "\n" not in str(e.value)


def test_defaults_keep_the_run_hashes():
    d = identity_dict(config_from_dict({}))
    assert "targets" not in d["data"] and "sample_weights" not in d["train"]
    on = identity_dict(config_from_dict({"data": {"targets": "rater_effects"},
                                         "train": {"sample_weights": "rater_precision"}}))
    assert on["data"]["targets"] == "rater_effects" and on["train"]["sample_weights"] == "rater_precision"


def test_sample_weights_reach_every_member_of_an_ensemble():
    from sklearn.linear_model import Ridge

    from pianolab.advanced.ensembles import accepts_sample_weight
    from pianolab.models.classic import create_estimator

    rng = np.random.default_rng(0)
    x, y, w = rng.normal(size=(60, 4)), rng.normal(size=(60, 19)), rng.uniform(0.2, 3.0, 60)
    ridge = create_estimator("ridge", seed=0).fit(x, y, sample_weight=w)
    np.testing.assert_allclose(ridge.predict(x), Ridge(alpha=10.0).fit(x, y, sample_weight=w).predict(x), atol=1e-5)
    assert not np.allclose(ridge.predict(x), create_estimator("ridge", seed=0).fit(x, y).predict(x))
    for name in ("ensemble_gb_et", "ensemble_rf_gb", "extra_trees_small", "mlp"):
        assert accepts_sample_weight(create_estimator(name, seed=0).estimator), name
    bagged = create_estimator("ridge", seed=0, bagging=3)  # a mean ensemble: each member gets the weights
    assert accepts_sample_weight(bagged.estimator)
    np.testing.assert_allclose(bagged.fit(x, y, sample_weight=w).predict(x), ridge.predict(x), atol=1e-5)
    assert not accepts_sample_weight(create_estimator("residual_boost", seed=0).estimator)
