"""Ensembles (plan E1): mean ensembles, bagging, stacking, residual boosting, cross-family blends,
snapshot ensembles and test-time augmentation, each doing what its name says, on the bundled data."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LinearRegression
from sklearn.neighbors import KNeighborsRegressor

from pianolab.advanced.ensembles import (
    MeanEnsemble,
    NonNegativeBlend,
    ResidualBooster,
    StackedEnsemble,
    member_seeds,
    out_of_fold,
)
from pianolab.advanced.snapshots import cycle_ends, cycle_multiplier
from pianolab.advanced.tta import tta_mean
from pianolab.config import config_from_dict, config_hash, identity_dict
from pianolab.data.percepiano import DIMENSIONS, MEAN_LABELS
from pianolab.errors import PianolabError
from pianolab.models.classic import create_estimator
from pianolab.train.run import execute
from pianolab.train.validate import check_config

PRED = [f"pred_{d}" for d in DIMENSIONS]
TINY_TREES = {"extra_trees_small": {"n_estimators": 10}}


@pytest.fixture(scope="module")
def real(dataset):
    """(symbolic vectors, labels, excerpt groups) of 160 real performances."""
    from pianolab.config import FeatureConfig
    from pianolab.train.inputs import load_inputs

    idx = np.arange(0, 800, 5)
    inputs = load_inputs(FeatureConfig(vector=("symbolic",)), [dataset.items[i].midi_path for i in idx])
    x = inputs.vector.astype(np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    return x, dataset.labels[idx], dataset.column("group")[idx]


def test_mean_ensemble_averages_members_by_weight():
    from sklearn.dummy import DummyRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = np.c_[x @ [1.0, 2.0, 0.0], x @ [0.0, 1.0, -1.0]]
    ens = MeanEnsemble([LinearRegression(), DummyRegressor()], weights=[3, 1]).fit(x, y)
    exact = LinearRegression().fit(x, y).predict(x)
    np.testing.assert_allclose(ens.predict(x), 0.75 * exact + 0.25 * y.mean(0), atol=1e-9)


def test_registered_ensemble_is_the_mean_of_rf_and_gb():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 4))
    y = np.c_[x[:, 0] ** 2, x[:, 1]]
    from threadpoolctl import threadpool_limits

    small = {"random_forest__n_estimators": 30, "gradient_boosting__max_iter": 30}
    with threadpool_limits(1):  # OpenMP threads spin on a busy 2-core machine: one is faster here
        ens = create_estimator("ensemble_rf_gb", seed=0, **small).fit(x, y)
        rf = create_estimator("random_forest", seed=0, n_estimators=30).fit(x, y)
        gb = create_estimator("gradient_boosting", seed=0, max_iter=30).fit(x, y)
    np.testing.assert_allclose(ens.predict(x), (rf.predict(x) + gb.predict(x)) / 2, rtol=1e-5, atol=1e-6)


def test_bagging_of_n_seeds_is_the_mean_of_the_n_single_seed_models(real):
    x, y, _ = real
    bag = create_estimator("extra_trees_small", seed=2, bagging=3, n_estimators=20).fit(x, y)
    singles = [create_estimator("extra_trees_small", seed=s, n_estimators=20).fit(x, y).predict(x)
               for s in member_seeds(2, 3)]
    assert member_seeds(2, 3) == [2, 1002, 2002]
    np.testing.assert_allclose(bag.predict(x), np.mean(singles, axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(singles[0], singles[1])  # the seeds differ, so bagging is not one model thrice


def test_stacking_meta_inputs_never_come_from_a_member_that_saw_the_item():
    """Each excerpt's rows are identical: a 1-nearest-neighbour member that saw the excerpt returns
    their own target; the meta-learner's inputs must come from other excerpts."""
    groups = np.repeat(np.arange(6), 2)
    x = np.repeat(np.arange(6.0)[:, None] * 10, 2, axis=0)
    z = np.repeat(np.arange(6.0)[:, None] + 100, 2, axis=0)
    stack = StackedEnsemble([KNeighborsRegressor(1), KNeighborsRegressor(1)], LinearRegression(), folds=3)
    assert (stack.meta_inputs(x, z, groups) != np.hstack([z, z])).all()
    stack.fit(x, z, groups)
    np.testing.assert_array_equal(np.hstack([m.predict(x) for m in stack.fitted_]), np.hstack([z, z]))


def test_residual_booster_second_stage_fits_the_first_models_out_of_fold_residuals(real):
    x, y, groups = real
    booster = ResidualBooster(KNeighborsRegressor(5), LinearRegression(), folds=3).fit(x, y, groups)
    residuals = y - out_of_fold(KNeighborsRegressor(5), x, y, groups, 3, 0)
    np.testing.assert_allclose(booster.second_.coef_, LinearRegression().fit(x, residuals).coef_, atol=1e-8)
    in_sample = y - KNeighborsRegressor(5).fit(x, y).predict(x)
    assert not np.allclose(booster.residuals(x, y, groups), in_sample)  # out of fold, not in-sample
    np.testing.assert_allclose(booster.predict(x), booster.first_.predict(x) + booster.second_.predict(x))


def test_cross_family_weights_are_fitted_on_inner_folds_of_the_training_rows_only(real):
    x, y, groups = real
    train = np.isin(groups, np.unique(groups)[: len(np.unique(groups)) * 3 // 4])
    est = create_estimator("cross_family", seed=0, members=["ridge", "extra_trees_small"],
                           member_params=TINY_TREES).fit(x[train], y[train], groups[train])
    blend = est.estimator
    w = blend.meta_.weights_
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0) and len(w) == 2
    expected = NonNegativeBlend().fit(blend.meta_inputs(x[train], y[train], groups[train]), y[train]).weights_
    np.testing.assert_allclose(w, expected)
    y_other = y.copy()
    y_other[~train] = 0.0  # held-out rows' labels cannot move the weights: the fit never sees them
    again = create_estimator("cross_family", seed=0, members=["ridge", "extra_trees_small"],
                             member_params=TINY_TREES).fit(x[train], y_other[train], groups[train])
    np.testing.assert_allclose(again.estimator.meta_.weights_, w)
    parts = np.stack([m.predict(x) for m in blend.fitted_])
    np.testing.assert_allclose(est.predict(x), np.tensordot(w, parts, axes=1), rtol=1e-5, atol=1e-6)


def _small_root(dest, dataset, every=4):
    """A data folder with the performances of every `every`-th excerpt (labels of the rest are dropped
    for want of MIDI): real items, a quarter of the cost."""
    shutil.copytree(dataset.root / "labels", dest / "labels")
    (dest / "midi").mkdir()
    groups = sorted(set(dataset.column("group")))
    keep = set(groups[::every])
    for it, g in zip(dataset.items, dataset.column("group"), strict=True):
        if g in keep:
            shutil.copy(it.midi_path, dest / "midi" / it.midi_path.name)
    return dest


def _labels_changed(root, stems, value):
    path = root / MEAN_LABELS
    labels = json.loads(path.read_text())
    for s in stems:
        labels[s] = [value] * len(labels[s])
    path.write_text(json.dumps(labels))


@pytest.mark.parametrize("model", [
    {"name": "stacking", "params": {"members": ["ridge", "extra_trees_small"], "member_params": TINY_TREES}},
    {"name": "cross_family", "params": {"members": ["ridge", "extra_trees_small"], "member_params": TINY_TREES}},
], ids=["stacking", "cross_family"])
def test_test_fold_labels_do_not_change_a_stacked_models_predictions(tmp_path, dataset, model, monkeypatch):
    """Changing every test item's labels leaves the test predictions identical (the nested folds are
    inside the training fold); the shipped-model path (`predict`, skops) gives the same numbers."""
    from pianolab.predict import predict_files

    data_copy = _small_root(tmp_path / "data", dataset)
    raw = {"data": {"root": str(data_copy)}, "features": {"vector": ["symbolic"]}, "model": model,
           "track": {"tracker": "none"}}
    monkeypatch.setenv("PIANOLAB_SPLITS", str(tmp_path / "splits_a"))  # the same partition, made per data version
    execute(config_from_dict(raw), tmp_path / "a")
    first = pd.read_parquet(tmp_path / "a" / "predictions.parquet").query("role == 'test'")
    _labels_changed(data_copy, first.stem, 0.0)
    monkeypatch.setenv("PIANOLAB_SPLITS", str(tmp_path / "splits_b"))
    execute(config_from_dict(raw), tmp_path / "b")
    second = pd.read_parquet(tmp_path / "b" / "predictions.parquet").query("role == 'test'")
    assert list(second.stem) == list(first.stem)
    np.testing.assert_array_equal(second[PRED].to_numpy(), first[PRED].to_numpy())
    head = first.head(3)
    df, errors = predict_files([data_copy / "midi" / f"{s}.mid" for s in head.stem], tmp_path / "a")
    assert not errors
    np.testing.assert_allclose(df[list(DIMENSIONS)].to_numpy(float), head[PRED].to_numpy(float), atol=1e-4)


def test_tta_averages_the_predictions_of_the_copies(tmp_path, dataset, monkeypatch):
    """A run with `ensemble.tta: 2` predicts each test item as the mean of the plain run's prediction
    and the saved model's prediction on the item's MIDI-augmented copy (render.augment)."""
    from pianolab.predict import predict_files
    from pianolab.render.augment import augmented_bytes

    assert tta_mean(lambda c: c * 2.0, [np.ones((2, 3)), np.zeros((2, 3))]).tolist() == [[1.0] * 3] * 2
    monkeypatch.setenv("PIANOLAB_SPLITS", str(tmp_path / "splits"))
    root = str(_small_root(tmp_path / "data", dataset))
    raw = {"data": {"root": root}, "features": {"vector": ["symbolic"]}, "model": {"name": "ridge"},
           "track": {"tracker": "none"}}
    execute(config_from_dict(raw), tmp_path / "plain")
    execute(config_from_dict({**raw, "ensemble": {"tta": 2, "tta_preset": "medium"}}), tmp_path / "tta")
    plain = pd.read_parquet(tmp_path / "plain" / "predictions.parquet").query("role == 'test'").head(4)
    tta = pd.read_parquet(tmp_path / "tta" / "predictions.parquet").query("role == 'test'").head(4)
    by_stem = {it.stem: it.midi_path for it in dataset.items}
    copies = []
    for stem in plain.stem:
        (tmp_path / "copies").mkdir(exist_ok=True)
        copies.append(tmp_path / "copies" / f"{stem}.mid")
        copies[-1].write_bytes(augmented_bytes(by_stem[stem], "medium", 1, stem))
    df, errors = predict_files(copies, tmp_path / "plain")
    assert not errors
    on_copies = df[list(DIMENSIONS)].to_numpy(float)
    assert not np.allclose(on_copies, plain[PRED].to_numpy(float))  # the copies are really different
    np.testing.assert_allclose(tta[PRED].to_numpy(float), (plain[PRED].to_numpy(float) + on_copies) / 2,
                               atol=1e-4)


def test_snapshot_ensemble_cycles_the_lr_and_averages_the_end_of_cycle_weights(tmp_path, dataset, monkeypatch):
    from pianolab.predict import predict_files

    assert cycle_ends(6, 3) == [2, 4, 6]
    assert cycle_multiplier(0.0, 3) == 1.0 and cycle_multiplier(1 / 3, 3) == 1.0  # restarts
    assert cycle_multiplier(0.3, 3) < 0.05
    monkeypatch.setenv("PIANOLAB_SPLITS", str(tmp_path / "splits"))
    root = str(_small_root(tmp_path / "data", dataset))
    raw = {"data": {"root": root}, "features": {"vector": ["symbolic"]}, "model": {"name": "symbolic_mlp"},
           "train": {"epochs": 4},
           "ensemble": {"snapshots": 2}, "track": {"tracker": "none"}}
    cfg = config_from_dict(raw)
    check_config(cfg, "t")
    folder = tmp_path / "snap"
    execute(cfg, folder)
    states = torch.load(folder / "snapshots.pt", weights_only=True)
    assert len(states) == 2
    lrs = [r["lr"] for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    written = pd.read_parquet(folder / "predictions.parquet").query("role == 'test'").head(4)
    stems = {it.stem: it.midi_path for it in dataset.items}
    files = [stems[s] for s in written.stem]
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
    preds = []
    for i, state in enumerate(states):  # each snapshot alone, through the shipped-model path
        one = tmp_path / f"one{i}"
        shutil.copytree(folder, one)
        torch.save({**ckpt, "model": state}, one / "checkpoint.pt")
        (one / "snapshots.pt").unlink()
        df, errors = predict_files(files, one)
        assert not errors
        preds.append(df[list(DIMENSIONS)].to_numpy(float))
    assert not np.allclose(preds[0], preds[1])
    np.testing.assert_allclose(written[PRED].to_numpy(float), np.mean(preds, axis=0), atol=1e-4)
    shipped, errors = predict_files(files, folder)  # predict on the run itself averages its snapshots too
    assert not errors
    np.testing.assert_allclose(shipped[list(DIMENSIONS)].to_numpy(float), written[PRED].to_numpy(float), atol=1e-4)
    assert len(lrs) == 4 and lrs[1] > lrs[0] and lrs[1] > lrs[2] > lrs[3]  # end-of-epoch LR: the cosine restarted


def test_ensemble_section_off_keeps_old_hashes():
    base = {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge"}}
    assert "ensemble" not in identity_dict(config_from_dict(base))
    on = config_from_dict({**base, "model": {"name": "extra_trees_small"}, "ensemble": {"bagging": 2}})
    assert identity_dict(on)["ensemble"]["bagging"] == 2
    off = config_from_dict({**base, "model": {"name": "extra_trees_small"}})
    assert config_hash(on) != config_hash(off)


@pytest.mark.parametrize("raw, message", [
    ({"model": {"name": "ridge"}, "ensemble": {"snapshots": 2}},
     "ensemble.snapshots: has no effect: model 'ridge' is a scikit-learn estimator"),
    ({"model": {"name": "ridge"}, "ensemble": {"tta_preset": "medium"}},
     "ensemble.tta_preset: has no effect: it draws the test-time copies, and ensemble.tta is 1"),
    ({"model": {"name": "ridge"}, "ensemble": {"tta": 3, "tta_preset": "spec_light"}},
     "ensemble.tta: has no effect: preset ensemble.tta_preset has no MIDI-level parts"),
    ({"model": {"name": "symbolic_mlp"}, "ensemble": {"bagging": 3}},
     "ensemble: bagging averages scikit-learn estimators; model 'symbolic_mlp' is neural"),
    ({"model": {"name": "symbolic_mlp"}, "train": {"epochs": 5}, "ensemble": {"snapshots": 2}},
     r"ensemble: train.epochs \(5\) must be a multiple of ensemble.snapshots \(2\)"),
    ({"model": {"name": "symbolic_mlp"}, "train": {"epochs": 4}, "ensemble": {"snapshots": 2},
      "regularize": {"early_stopping": 3}}, "ensemble: snapshots need every cycle"),
    ({"model": {"name": "symbolic_mlp"}, "train": {"epochs": 4}, "ensemble": {"snapshots": 2},
      "optim": {"schedule": "cosine"}}, "ensemble: snapshots bring their own schedule"),
    ({"model": {"name": "ridge"}, "features": {"peer_centred": True}, "ensemble": {"tta": 2}},
     "ensemble.tta does not combine with features.peer_centred"),
    ({"model": {"name": "stacking", "params": {"members": ["ridge", "lasso"]}}},
     "unknown classic estimator 'lasso'; valid: .*extra_trees_small"),
    ({"model": {"name": "stacking", "params": {"meta": "knn"}}}, "unknown meta-learner 'knn'; valid: blend, ridge"),
    ({"model": {"name": "residual_boost", "params": {"second": "ridge", "depth": 3}}},
     "estimator 'residual_boost' does not accept depth; valid: first, second, folds"),
    ({"model": {"name": "stacking", "params": {"folds": 1}}}, "folds .* must be an integer >= 2"),
    ({"model": {"name": "cross_family", "params": {"member_params": {"ridge": {"depth": 3}}}}},
     "member_params names ridge, not members"),
], ids=["snapshots-estimator", "tta-preset-unused", "tta-spec-preset", "bagging-neural", "snapshot-epochs",
        "snapshot-early-stop", "snapshot-schedule", "tta-peers", "unknown-member", "unknown-meta",
        "unknown-param", "folds", "member-params"])
def test_options_without_effect_or_sense_are_refused_with_one_line(raw, message):
    cfg = config_from_dict({"features": {"vector": ["symbolic"]}, **raw})
    with pytest.raises(PianolabError, match=message) as err:
        check_config(cfg, "exp.yaml")
    assert "\n" not in str(err.value)
