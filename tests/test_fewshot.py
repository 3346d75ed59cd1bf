"""Few-shot adaptation (`pianolab.adapt.fewshot`): the support draw, the strategies, the config rules."""

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pianolab.adapt.fewshot import Episode, adapt, draw_support, inner_loop, meta_train
from pianolab.config import config_from_dict, config_hash, identity_dict
from pianolab.errors import PianolabError
from pianolab.train.run import execute, fold_roles
from pianolab.train.validate import check_config

ROOT = Path(__file__).resolve().parents[1]
RIDGE = {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge"}, "track": {"tracker": "none"}}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one CPU thread is faster than several on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(strategy="none", k=3, tasks="excerpt", split="excerpt", **extra):
    return config_from_dict({**RIDGE, "data": {"split": split, "folds": 4, "fold": 1},
                             "adapt": {"strategy": strategy, "k": k, "tasks": tasks, **extra}})


@pytest.mark.parametrize("tasks,split", [("excerpt", "excerpt"), ("performer", "performer")])
def test_support_is_human_disjoint_from_the_query_and_the_same_for_every_strategy(dataset, tasks, split):
    deadpan, column = dataset.column("deadpan"), dataset.column("group" if tasks == "excerpt" else "performer")
    plain, _ = fold_roles(_cfg(k=0, tasks="excerpt", split=split), dataset, 0.0)
    roles = {s: fold_roles(_cfg(s, 3, tasks, split), dataset, 0.0)[0] for s in ("none", "offset", "shrinkage")}
    r = roles["none"]
    assert len(r.support) and len(r.test)
    assert not set(r.support) & set(r.test)  # no support item is scored
    assert not deadpan[r.support].any()  # deadpan renditions are never support
    assert set(r.support) | set(r.test) <= set(plain.test)  # both come from the fold's test items
    for t in np.unique(column[r.test]):  # every query task has exactly k support items
        assert (column[r.support] == t).sum() == 3
    for other in roles.values():  # same support and query whatever the strategy
        np.testing.assert_array_equal(other.test, r.test)
        np.testing.assert_array_equal(other.support, r.support)
    one, _ = fold_roles(_cfg("offset", 1, tasks, split), dataset, 0.0)
    assert set(one.support) <= set(r.support)  # the draw does not depend on k: supports nest


def test_small_tasks_leave_the_query_and_a_seed_changes_the_draw():
    tasks = np.array(["a"] * 5 + ["b"] * 3)
    human = np.array([True, True, False, True, True, True, True, True])
    s, q = draw_support(tasks, human, 2, 0, 0, 0)
    assert set(tasks[s]) == {"a"} and set(q) == {0, 1, 2, 3, 4} - set(s)  # b: 3 < k + 2 humans
    assert human[s].all() and 2 in q  # the deadpan item is query, never support
    draws = {tuple(draw_support(np.array(["a"] * 12), np.ones(12, bool), 3, seed, 0, 0)[0]) for seed in range(6)}
    assert len(draws) > 1
    with pytest.raises(PianolabError, match="no test task"):
        draw_support(np.array(["a"] * 3), np.ones(3, bool), 2, 0, 0, 0)


def _synthetic(shift_a, shift_b, n=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.uniform(0.2, 0.8, (2 * n, 19))
    task = np.array(["a"] * n + ["b"] * n)
    pred = y - np.where(task[:, None] == "a", shift_a, shift_b)  # a model off by a shift per task
    s = np.r_[0:k, n:n + k]
    q = np.setdiff1d(np.arange(2 * n), s)
    x = rng.normal(size=(2 * n, 4))
    return Episode(support_task=task[s], support_y=y[s], support_pred=pred[s], query_task=task[q],
                   query_pred=pred[q], support_x=x[s], query_x=x[q], train_x=x, train_task=task, k=k), y[q]


def test_offset_recovers_a_shift_and_shrinkage_and_residual_shrink_it():
    shift_a, shift_b = np.linspace(-0.1, 0.1, 19), 0.05
    ep, truth = _synthetic(shift_a, shift_b)
    np.testing.assert_allclose(adapt("offset", ep), truth, atol=1e-12)
    np.testing.assert_array_equal(adapt("none", ep), ep.query_pred)
    ep.shrinkage = 1.0
    half = adapt("shrinkage", ep) - ep.query_pred  # 3 / (3 + 1) of the shift
    np.testing.assert_allclose(half, 0.75 * (truth - ep.query_pred), atol=1e-12)
    ep.shrinkage = 0.0
    np.testing.assert_allclose(adapt("residual", ep), truth, atol=1e-12)  # equal residuals: any weights give them


def _mlp():
    from pianolab.models import create_model

    torch.manual_seed(0)
    return create_model("symbolic_mlp", in_features=6, hidden=16, dropout=0.0)


def test_inner_loop_changes_only_a_copy_and_maml_meta_trains():
    model = _mlp()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.randn(4, 6), torch.randn(4, 19)
    params = dict(model.named_parameters())
    fast = inner_loop(model, params, set(params), x, y, steps=3, lr=0.1, create_graph=True)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # the model is untouched
    assert all(params[n] is p for n, p in model.named_parameters())  # and so is the dict given
    assert any(not torch.equal(fast[n], before[n]) for n in before)  # the copy moved
    fast["head.2.bias"].sum().backward()  # second order: gradients reach the original parameters
    assert model.body.net[0].weight.grad is not None

    rng = np.random.default_rng(0)
    task = np.repeat(np.array(["a", "b", "c", "d"]), 6)
    x, y = rng.normal(size=(24, 6)), rng.uniform(0, 1, (24, 19))
    ep = Episode(support_task=task[[0, 6]], support_y=y[[0, 6]], support_pred=y[[0, 6]], query_task=task[[1, 7]],
                 query_pred=y[[1, 7]], support_x=x[[0, 6]], query_x=x[[1, 7]], train_x=x, train_y=y, train_task=task,
                 y_mean=0.5, y_std=0.3, model=model, k=1, steps=2, lr=0.05, meta_steps=3, meta_batch=2)
    for rule in ("maml", "fomaml", "reptile"):
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        meta_train(ep, rule)
        assert any(not torch.equal(p, start[n]) for n, p in model.named_parameters()), rule
    settled = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = adapt("finetune_head", ep)  # test-time adaptation on copies: the model stays as it is
    assert out.shape == (2, 19) and not np.allclose(out, ep.query_pred)
    assert all(torch.equal(p, settled[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("change,message", [
    ({"model": {"name": "symbolic_mlp"}, "adapt": {"strategy": "residual", "k": 3}}, "is neural"),
    ({"model": {"name": "random_forest"}, "adapt": {"strategy": "maml", "k": 3}}, "scikit-learn estimator"),
    ({"adapt": {"strategy": "offset", "k": 0}}, "adapt.k is 0"),
    ({"adapt": {"strategy": "offset", "k": 3, "shrinkage": 2.0}}, "adapt.shrinkage: has no effect"),
    ({"adapt": {"strategy": "offset", "k": 3, "tasks": "performer"}}, "keeps each performer on one side"),
    ({"adapt": {"strategy": "offset", "k": 3, "tasks": "excerpt"}, "data": {"split": "random"}}, "keeps each group"),
    ({"adapt": {"strategy": "psychic", "k": 3}}, "unknown name 'psychic'"),
])
def test_refusals_are_one_line(change, message):
    cfg = config_from_dict({**RIDGE, **change})
    with pytest.raises(PianolabError, match=message) as err:
        check_config(cfg, "x.yaml")
    assert "\n" not in str(err.value)


def test_default_keeps_old_hashes_and_a_run_scores_the_query_only(tmp_path, dataset):
    import pandas as pd

    assert "adapt" not in identity_dict(config_from_dict(RIDGE))
    assert config_hash(_cfg("none", 3)) != config_hash(_cfg("offset", 3))
    runs = {s: tmp_path / s for s in ("none", "offset")}
    out = {s: execute(_cfg(s, 3), folder) for s, folder in runs.items()}
    rows = {s: pd.read_parquet(folder / "predictions.parquet") for s, folder in runs.items()}
    test = {s: r[r.role == "test"] for s, r in rows.items()}
    support = rows["none"][rows["none"].role == "support"]
    assert len(support) and not set(support.stem) & set(test["none"].stem)
    assert list(test["none"].stem) == list(test["offset"].stem)
    assert out["none"]["within_excerpt_pearson"] == pytest.approx(out["offset"]["within_excerpt_pearson"])
    assert not np.allclose(test["none"].filter(like="pred_"), test["offset"].filter(like="pred_"))


def test_the_fewshot_experiments_dry_run(tmp_path):
    from pianolab.cli import app

    files = sorted((ROOT / "experiments").glob("e2_fewshot_*.yaml"))
    assert len(files) >= 4
    for path in files:
        result = CliRunner().invoke(app, ["ab", "run", str(path), "--dry-run", "--runs", str(tmp_path / "runs")])
        assert result.exit_code == 0, f"{path.name}: {result.output} {result.exception!r}"
