"""`model.name: two_level` (`pianolab.advanced.two_level`): an excerpt-level model of the group-mean targets
(or a plain model's mean over the excerpt's rows) plus a within-excerpt model of the centred targets, on the
bundled data."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.tree import DecisionTreeRegressor

from pianolab.advanced.two_level import TwoLevel, group_means, same_excerpt
from pianolab.config import FeatureConfig, config_from_dict
from pianolab.data.percepiano import DIMENSIONS, MEAN_LABELS
from pianolab.errors import PianolabError
from pianolab.models.classic import create_estimator
from pianolab.train.inputs import VectorScaler, load_inputs, with_peer_columns
from pianolab.train.run import execute
from pianolab.train.validate import check_config

PRED = [f"pred_{d}" for d in DIMENSIONS]
TINY = {"between": "extra_trees_small", "within": "extra_trees_small",
        "between_params": {"n_estimators": 5}, "within_params": {"n_estimators": 5}}


@pytest.fixture(scope="module")
def scaled(dataset):
    """(scaled [raw, peer] vectors, labels, excerpt groups) of 200 real performances, as a run builds them."""
    idx = np.arange(0, 1000, 5)
    groups = dataset.column("group")[idx]
    inputs = load_inputs(FeatureConfig(vector=("symbolic",)), [dataset.items[i].midi_path for i in idx])
    vec = with_peer_columns(inputs, groups).vector
    return VectorScaler.fit(vec).transform(vec).astype(float), dataset.labels[idx].astype(float), groups


@pytest.mark.parametrize("between_features", ["group_mean", "raw"])
def test_the_decomposition_is_exact_on_training_rows(scaled, between_features):
    """Fully grown trees fit both parts exactly: the between part is each excerpt's mean target (from
    features equal to the group means, or from the raw features), the within part the rest."""
    x, y, groups = scaled
    est = TwoLevel(DecisionTreeRegressor(random_state=0), DecisionTreeRegressor(random_state=0),
                   between_features).fit(x, y, groups)
    d, level = x.shape[1] // 2, group_means(y, groups)
    g = est.group_features(x)
    rows = np.ones(len(x), bool)
    if between_features == "raw":  # two deadpan renditions (D960 mv3, excerpts 13 and 30) share every raw feature
        _, inv, count = np.unique(x[:, :d], axis=0, return_inverse=True, return_counts=True)
        rows = count[inv.ravel()] == 1
        assert rows.sum() == len(x) - 2
    np.testing.assert_allclose(est.predict(x)[rows], y[rows], atol=1e-12)
    between = est.between_.predict(g if between_features == "group_mean" else x[:, :d])
    np.testing.assert_allclose(between[rows], level[rows], atol=1e-12)
    np.testing.assert_allclose(est.within_.predict(x[:, d:]), y - level, atol=1e-12)
    unclipped = (np.abs(x) < 10).all(axis=0)[:d] & (np.abs(x) < 10).all(axis=0)[d:]
    assert unclipped.sum() > 50
    np.testing.assert_allclose(g[:, unclipped], group_means(g, groups)[:, unclipped], atol=1e-5)
    alone = TwoLevel(None, DecisionTreeRegressor(random_state=0)).fit(x, y, groups)  # `between: null`
    np.testing.assert_allclose(alone.predict(x), y - level + y.mean(0), atol=1e-12)


def test_registered_two_level_and_its_within_only_form(scaled):
    x, y, groups = scaled
    train = ~np.isin(groups, np.unique(groups)[::3])
    both = create_estimator("two_level", seed=0, **TINY).fit(x[train], y[train], groups[train])
    within = create_estimator("two_level", seed=0, between=None, within="extra_trees_small",
                              within_params={"n_estimators": 5}).fit(x[train], y[train], groups[train])
    part = both.estimator.within_.predict(x[~train, x.shape[1] // 2:])
    np.testing.assert_allclose(within.predict(x[~train]), part + y[train].mean(0), atol=1e-5)
    between = both.predict(x[~train]) - part  # one level per unseen excerpt (no value of the scaler clipped here)
    rows = (np.abs(x[~train]) < 10).all(axis=1)
    np.testing.assert_allclose(between[rows], group_means(between[rows], groups[~train][rows]), atol=1e-5)
    with pytest.raises(PianolabError, match="needs the excerpt group"):
        create_estimator("two_level", seed=0, **TINY).fit(x, y)


def _same_partition(a, b) -> bool:
    return len(set(zip(a, b, strict=True))) == len(set(a)) == len(set(b))


@pytest.mark.parametrize("within_features", ["peer", "all"])
def test_plain_mean_level_is_the_plain_models_mean_over_the_excerpt(scaled, within_features):
    """`between_features: plain_mean`: the between estimator is a plain model of the raw targets on the raw
    features of every training row; a test row's level is the mean of its predictions over the rows of the
    row's excerpt (found from the inputs alone) and the within part is centred on that excerpt."""
    x, y, groups = scaled
    train, d = ~np.isin(groups, np.unique(groups)[::3]), x.shape[1] // 2
    trees = ExtraTreesRegressor(n_estimators=5, random_state=0)
    est = TwoLevel(trees, ExtraTreesRegressor(n_estimators=5, random_state=1), "plain_mean",
                   within_features).fit(x[train], y[train], groups[train])
    xt, gt = x[~train], groups[~train]
    assert _same_partition(est.excerpts(xt), gt) and len(set(gt)) > 10
    plain = trees.fit(x[train, :d], y[train]).predict(xt[:, :d])  # the same plain model, fitted by hand
    np.testing.assert_allclose(est.between_.predict(xt[:, :d]), plain, atol=1e-12)
    pred = est.predict(xt)
    np.testing.assert_allclose(group_means(pred, gt), group_means(plain, gt), atol=1e-9)
    within = est.within_.predict(xt if within_features == "all" else xt[:, d:])
    np.testing.assert_allclose(pred - group_means(plain, gt), within - group_means(within, gt), atol=1e-9)
    assert est.within_.n_features_in_ == (2 * d if within_features == "all" else d)
    np.testing.assert_allclose(est.predict(xt[gt == gt[0]]), pred[gt == gt[0]], atol=1e-9)  # one excerpt alone
    np.testing.assert_allclose(est.predict(xt[:1]), plain[:1], atol=1e-9)  # one performance alone: the plain model


def test_rows_of_one_excerpt_are_found_despite_a_few_moved_columns(scaled):
    """`same_excerpt` on the group-mean features of 200 real performances gives their excerpts, also with a
    tenth of one row's columns moved (a clipped or imputed value) and in any row order."""
    x, y, groups = scaled
    est = TwoLevel(None, DecisionTreeRegressor()).fit(x, y, groups)
    keys = est.group_features(x)
    assert _same_partition(same_excerpt(keys), groups)
    moved = keys.copy()
    moved[5, ::10] += 3.0
    order = np.random.default_rng(0).permutation(len(x))
    assert _same_partition(same_excerpt(moved[order]), groups[order])


def _small_root(dest, dataset, every=4):
    """A data folder with every `every`-th excerpt's performances (real items, a quarter of the cost)."""
    shutil.copytree(dataset.root / "labels", dest / "labels")
    (dest / "midi").mkdir()
    keep = set(sorted(set(dataset.column("group")))[::every])
    for it, g in zip(dataset.items, dataset.column("group"), strict=True):
        if g in keep:
            shutil.copy(it.midi_path, dest / "midi" / it.midi_path.name)
    return dest


@pytest.mark.parametrize("between_features", ["group_mean", "plain_mean"])
def test_test_fold_labels_never_reach_the_predictions(tmp_path, dataset, monkeypatch, between_features):
    """Every test item's labels redrawn at random: identical test predictions. `predict` on all performances of a
    test excerpt (groups from their PercePiano names) gives the run's numbers."""
    from pianolab.predict import predict_files

    root = _small_root(tmp_path / "data", dataset)
    raw = {"data": {"root": str(root)}, "features": {"vector": ["symbolic"], "peer_centred": True},
           "model": {"name": "two_level", "params": {**TINY, "between_features": between_features}},
           "track": {"tracker": "none"}}
    check_config(config_from_dict(raw), "t")
    monkeypatch.setenv("PIANOLAB_SPLITS", str(tmp_path / "splits_a"))
    execute(config_from_dict(raw), tmp_path / "a")
    first = pd.read_parquet(tmp_path / "a" / "predictions.parquet").query("role == 'test'")
    labels, rng = json.loads((root / MEAN_LABELS).read_text()), np.random.default_rng(0)
    for s in first.stem:  # new levels and a new order inside every test excerpt (NaN is refused on load)
        labels[s] = rng.uniform(0, 1, len(labels[s])).tolist()
    (root / MEAN_LABELS).write_text(json.dumps(labels))
    monkeypatch.setenv("PIANOLAB_SPLITS", str(tmp_path / "splits_b"))
    execute(config_from_dict(raw), tmp_path / "b")
    second = pd.read_parquet(tmp_path / "b" / "predictions.parquet").query("role == 'test'")
    assert list(second.stem) == list(first.stem)
    np.testing.assert_array_equal(second[PRED].to_numpy(), first[PRED].to_numpy())
    group = dict(zip(dataset.stems, dataset.column("group"), strict=True))
    one = first[[group[s] == group[first.stem.iloc[0]] for s in first.stem]]
    df, errors = predict_files([root / "midi" / f"{s}.mid" for s in one.stem], tmp_path / "a")
    assert not errors and len(df) == len(one) > 2
    np.testing.assert_allclose(df[list(DIMENSIONS)].to_numpy(float), one[PRED].to_numpy(float), atol=1e-4)


@pytest.mark.parametrize("raw, message", [
    ({"model": {"name": "two_level"}}, "model.name: model 'two_level' needs features.peer_centred: true"),
    ({"model": {"name": "two_level"}, "features": {"vector": ["symbolic"], "peer_centred": True, "top_k": 20}},
     "does not combine with features.top_k"),
    ({"model": {"name": "two_level"}, "features": {"vector": ["symbolic"], "peer_centred": True, "stack": "ridge"}},
     "does not combine with features.stack"),
    ({"model": {"name": "ridge"}, "features": {"vector": ["symbolic"], "stack": "two_level"}},
     "features.stack: two_level needs excerpt groups"),
    ({"model": {"name": "two_level", "params": {"between": None, "between_params": {"alpha": 1.0}}},
      "features": {"vector": ["symbolic"], "peer_centred": True}}, "between_params has no effect: between is null"),
    ({"model": {"name": "two_level", "params": {"between": None, "between_features": "raw"}},
      "features": {"vector": ["symbolic"], "peer_centred": True}}, "between_features has no effect: between is null"),
    ({"model": {"name": "two_level", "params": {"between_features": "median"}},
      "features": {"vector": ["symbolic"], "peer_centred": True}},
     "unknown between_features 'median'; valid: group_mean, plain_mean, raw"),
    ({"model": {"name": "two_level", "params": {"between": None, "between_features": "plain_mean"}},
      "features": {"vector": ["symbolic"], "peer_centred": True}}, "between_features has no effect: between is null"),
    ({"model": {"name": "two_level", "params": {"within_features": "raw"}},
      "features": {"vector": ["symbolic"], "peer_centred": True}}, "unknown within_features 'raw'; valid: all, peer"),
    ({"model": {"name": "two_level", "params": {"within": "lasso"}},
      "features": {"vector": ["symbolic"], "peer_centred": True}}, "unknown classic estimator 'lasso'"),
    ({"model": {"name": "two_level"}, "features": {"vector": ["symbolic"], "peer_centred": True},
      "train": {"sample_weights": "rater_precision"}}, "estimator 'two_level' does not accept sample weights"),
], ids=["no-peers", "top-k", "stack", "as-stack", "between-params", "between-features", "unknown-input",
        "plain-mean-without-between", "unknown-within-input", "unknown-member", "sample-weights"])
def test_two_level_is_refused_where_it_cannot_act(raw, message):
    cfg = config_from_dict({"features": {"vector": ["symbolic"]}, **raw})
    with pytest.raises(PianolabError, match=message) as err:
        check_config(cfg, "exp.yaml")
    assert "\n" not in str(err.value)
