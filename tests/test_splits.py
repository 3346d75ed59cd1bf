import json

import numpy as np
import pytest

from pianolab.data.music import music_groups
from pianolab.data.splits import STRATEGIES, Fold, check_leaks, get_split, load_split, make_split, save_split
from pianolab.errors import PianolabError


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_covers_data_without_leaks(dataset, name, tmp_path):
    split = get_split(dataset, name, repeats=2, seed=3, directory=tmp_path)
    for rep in split.repeats:
        for fold in rep:
            assert set(fold.train).isdisjoint(fold.test) and fold.test
    if name.startswith("percepiano_"):  # the paper's protocols: one fixed test set, never trained on
        fixed = split.repeats[0][0].test
        assert all(f.test == fixed for f in split.repeats[0])
        assert not set(fixed) & {s for f in split.repeats[0] for s in f.train}
    elif name not in {"holdout", "leave_one_performer_out"}:
        tests = [s for f in split.repeats[0] for s in f.test]
        assert sorted(tests) == sorted(dataset.stems)  # every item tested exactly once
    again = load_split(tmp_path / f"{split.id}.json", dataset)  # written once, leak-checked on load
    assert again == split


def test_excerpt_repeats_differ_and_are_reproducible(dataset):
    a = make_split(dataset, "excerpt", 4, repeats=2, seed=0)
    b = make_split(dataset, "excerpt", 4, repeats=2, seed=0)
    assert a == b and a.digest == b.digest
    assert a.repeats[0] != a.repeats[1]
    groups = dataset.column("group")
    idx = dataset.index
    for fold in a.repeats[0]:
        assert not {groups[idx[s]] for s in fold.train} & {groups[idx[s]] for s in fold.test}


def test_random_split_is_declared_leaky(dataset):
    split = make_split(dataset, "random", 4)
    assert "LEAKY" in split.description and split.guards == ()


def test_performer_and_piece_guards(dataset):
    perf = dataset.column("performer")
    idx = dataset.index
    for name, attr in [("performer", "performer"), ("piece", "piece"), ("composer", "composer")]:
        values = dataset.column(attr)
        for fold in make_split(dataset, name).repeats[0]:
            assert not {values[idx[s]] for s in fold.train} & {values[idx[s]] for s in fold.test}
    lopo = make_split(dataset, "leave_one_performer_out")
    assert lopo.folds == 20  # one per human performer
    for fold in lopo.repeats[0]:
        assert len({perf[idx[s]] for s in fold.test}) == 1
        assert "deadpan" not in {perf[idx[s]] for s in fold.test}


def test_music_groups_join_overlapping_cuts(dataset):
    mg = music_groups(dataset)
    assert mg["Schubert_D960_mv2_8bars_01"] == mg["Schubert_D960_mv2_16bars_01"]
    assert mg["Beethoven_WoO80_thema_8bars_1"] != mg["Beethoven_WoO80_var3_8bars_2"]
    assert len(set(mg.values())) < 83


def test_nested_inner_folds_stay_inside_outer_train(dataset):
    split = make_split(dataset, "nested", 3)
    for fold in split.repeats[0]:
        assert len(fold.inner) == 3
        for inner in fold.inner:
            assert set(inner.train) | set(inner.test) <= set(fold.train)


def test_stratified_difficulty_balances_folds(dataset):
    split = make_split(dataset, "stratified_difficulty", 4)
    std = dict(zip(dataset.stems, dataset.label_std.mean(1), strict=False))
    means = [np.mean([std[s] for s in f.test]) for f in split.repeats[0]]
    assert max(means) - min(means) < 0.01


def test_leaking_split_is_rejected(dataset, tmp_path):
    split = make_split(dataset, "excerpt", 4)
    fold = split.repeats[0][0]
    moved = fold.test[0]  # one performance of a test group also goes to training
    leaky = Fold(fold.train + (moved,), tuple(s for s in fold.test if s != moved))
    bad = split.__class__(**{**split.__dict__, "repeats": ((leaky,) + split.repeats[0][1:],)})
    with pytest.raises(PianolabError, match="group .* on both sides"):
        check_leaks(bad, dataset)
    path = save_split(bad, tmp_path)
    with pytest.raises(PianolabError, match=str(path)):
        load_split(path, dataset)


def test_split_from_other_data_version_is_refused(dataset, tmp_path):
    path = save_split(make_split(dataset, "excerpt", 4), tmp_path)
    d = json.loads(path.read_text())
    d["data_version"] = "0000"
    path.write_text(json.dumps(d))
    with pytest.raises(PianolabError, match="data version"):
        load_split(path, dataset)


def test_unknown_split_name_lists_valid(dataset):
    with pytest.raises(PianolabError, match="unknown split 'nope'; valid: .*excerpt"):
        make_split(dataset, "nope")


def test_concurrent_cells_save_the_same_split_safely(dataset, tmp_path):
    """The cells of a threads-backend experiment may all make the missing split at once (this raised
    FileNotFoundError on the GPU machine when they shared one temporary file name)."""
    from concurrent.futures import ThreadPoolExecutor

    split = make_split(dataset, "excerpt", 4)
    with ThreadPoolExecutor(8) as pool:
        paths = set(pool.map(lambda _: save_split(split, tmp_path), range(64)))
    assert len(paths) == 1 and load_split(paths.pop(), dataset) == split
    assert [p.name for p in tmp_path.iterdir()] == [f"{split.id}.json"]  # no temporary file left


def test_paper_composition_protocol_matches_its_code(dataset):
    from pianolab.data.splits import make_split

    split = make_split(dataset, "percepiano_composition")
    folds = split.repeats[0]
    test = set(folds[0].test)
    assert all(set(f.test) == test for f in folds)  # one fixed test set for the 4 fold models
    assert 0.15 * len(dataset) <= len(test) < 0.25 * len(dataset)
    groups = dict(zip(dataset.stems, dataset.column("group"), strict=True))
    assert {groups[s] for s in test}.isdisjoint(groups[s] for f in folds for s in f.train)
    held = [set(dataset.stems) - test - set(f.train) for f in folds]  # the paper's validation folds
    assert all(a.isdisjoint(b) for i, a in enumerate(held) for b in held[i + 1:])
    assert set().union(*held) == set(dataset.stems) - test
    assert make_split(dataset, "percepiano_composition", seed=7).digest == split.digest  # fixed by random(42)


def test_paper_performer_protocol_matches_its_code(dataset):
    from pianolab.data.splits import make_split

    folds = make_split(dataset, "percepiano_performer").repeats[0]
    by_stem = {it.stem: it for it in dataset.items}
    tested = {(by_stem[s].composer, by_stem[s].player) for s in folds[0].test}
    assert tested == {("Beethoven", "2"), ("Beethoven", "3"), ("Schubert", "1"), ("Schubert", "2")}
    assert all(by_stem[s].player != "Score2" for f in folds for s in set(dataset.stems) - set(f.train) - set(f.test))
    left_out = set(dataset.stems) - set(folds[0].train) - set(folds[0].test)
    first_out = {(by_stem[s].composer, by_stem[s].player) for s in left_out}
    assert first_out == {("Beethoven", "4"), ("Beethoven", "7"), ("Schubert", "3"), ("Schubert", "4")}
