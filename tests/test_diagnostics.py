"""Diagnostics: learning curves, gradient norms, loss landscape, attention rollout, permutation
importance and error analysis (on the real dataset's metadata)."""

import json
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression
from torch import nn

from pianolab.data.percepiano import DIMENSIONS
from pianolab.evaluate.diagnostics import (
    _filter_normalized_direction,
    attention_rollout,
    gradient_analysis,
    layer_grad_norms,
    learning_curves,
    loss_landscape,
    plot_rollout_overlay,
    rollout_patch_map,
)
from pianolab.evaluate.error_analysis import dataset_metadata, error_analysis
from pianolab.evaluate.importance import feature_families, permutation_importance


class Tiny(nn.Module):
    """Dict batch -> (B, 19), with dropout (mode matters) and a LayerNorm (1-D parameters)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(6, 16), nn.LayerNorm(16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 19)
        )

    def forward(self, batch):
        return self.net(batch["x"])


def _batch(seed=0, n=12):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, 6, generator=g), "target": torch.rand(n, 19, generator=g)}


def test_learning_curves_mean_and_std(tmp_path):
    # Run A: train_loss 1.0, 0.5; run B: 3.0, 1.5 -> epoch 1 mean 2, std sqrt(1+1) = sqrt 2;
    # epoch 2 mean 1, std sqrt(.25+.25) = sqrt .5.
    path = tmp_path / "metrics.jsonl"
    recs = [{"epoch": 1, "train_loss": 9.9}, {"epoch": 1, "train_loss": 1.0, "lr": 0.1},
            {"step": 5, "train_loss": 7.0}, {"epoch": 2, "train_loss": 0.5, "lr": 0.05}]
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    run_b = [{"epoch": 1, "train_loss": 3.0, "lr": 0.1}, {"epoch": 2, "train_loss": 1.5, "lr": 0.05}]
    lc = learning_curves([path, run_b], out_dir=tmp_path)
    t = lc.table.set_index(["metric", "epoch"])
    assert t.loc[("train_loss", 1), "mean"] == pytest.approx(2.0)
    assert t.loc[("train_loss", 1), "std"] == pytest.approx(math.sqrt(2))
    assert t.loc[("train_loss", 2), "mean"] == pytest.approx(1.0)
    assert t.loc[("train_loss", 2), "std"] == pytest.approx(math.sqrt(0.5))
    assert t.loc[("lr", 2), "std"] == 0.0 and t.loc[("lr", 2), "n"] == 2
    assert lc.plot.is_file()


def test_layer_grad_norms_and_flags(tmp_path):
    model = Tiny()
    b = _batch()
    nn.functional.mse_loss(model(b), b["target"]).backward()
    norms = layer_grad_norms(model)
    first = model.net[0]
    expected = math.sqrt(first.weight.grad.pow(2).sum() + first.bias.grad.pow(2).sum())
    assert set(norms) == {"net.0", "net.1", "net.4"} and norms["net.0"] == pytest.approx(expected)

    records = [{"step": s, "grad_norms": {"ok": 0.5 + 0.1 * s, "tiny": 1e-9, "boom": 10.0**s}}
               for s in range(5)]
    rep = gradient_analysis(records, explode_above=1e3, out_dir=tmp_path)
    flags = rep.table.set_index("layer")[["vanishing", "exploding"]]
    assert flags.loc["ok"].tolist() == [False, False]
    assert flags.loc["tiny"].tolist() == [True, False]
    assert flags.loc["boom"].tolist() == [False, True]
    nonfinite = [{"step": 0, "grad_norms": {"a": 1.0}}, {"step": 1, "grad_norms": {"a": float("nan")}}]
    assert gradient_analysis(nonfinite).table["exploding"].tolist() == [True]
    assert rep.plot.is_file() and len(rep.history) == 15
    # The trainer's scalar per-epoch `grad_norm` is read as one layer, 'total'.
    scalar = gradient_analysis([{"epoch": 1, "grad_norm": 0.5}, {"epoch": 2, "grad_norm": 0.25}])
    assert scalar.table["layer"].tolist() == ["total"] and scalar.table["last"].tolist() == [0.25]


def test_filter_normalized_direction():
    model = Tiny()
    params = list(model.parameters())
    dirs = _filter_normalized_direction(params, torch.Generator().manual_seed(0), ignore_1d=True)
    for p, d in zip(params, dirs, strict=True):
        if p.dim() == 1:
            assert torch.count_nonzero(d) == 0
        else:
            assert torch.allclose(d.norm(dim=1), p.detach().norm(dim=1), rtol=1e-5)
            assert not torch.allclose(d, p)


@pytest.mark.parametrize("directions", [1, 2])
def test_loss_landscape_center_equals_loss(directions, tmp_path):
    torch.manual_seed(0)
    model = Tiny().train()
    b = _batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn = nn.functional.mse_loss
    ls = loss_landscape(model, loss_fn, b, directions=directions, steps=5, span=0.5, out_dir=tmp_path)
    model.eval()
    with torch.no_grad():
        plain = float(loss_fn(model(b), b["target"]))
    assert ls.losses.shape == (5,) * directions
    assert ls.center_loss == plain  # exact: the weights at offset 0 are the original ones
    assert ls.losses.max() > plain  # moving away from the weights changes the loss
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert ls.plot.is_file()


def test_loss_landscape_restores_train_mode():
    model = Tiny().train()
    loss_landscape(model, nn.functional.mse_loss, _batch(), steps=3)
    assert model.training
    with pytest.raises(ValueError, match="odd"):
        loss_landscape(model, nn.functional.mse_loss, _batch(), steps=4)


def test_attention_rollout_by_hand():
    # One head, A = [[.2,.8],[.6,.4]] -> .5A + .5I = [[.6,.4],[.3,.7]] (rows already sum to 1).
    # Two identical layers: R = Â Â = [[.36+.12, .24+.28], [.18+.21, .12+.49]] = [[.48,.52],[.39,.61]].
    a = torch.tensor([[[[0.2, 0.8], [0.6, 0.4]]]])
    r = attention_rollout([a, a])
    assert torch.allclose(r[0], torch.tensor([[0.48, 0.52], [0.39, 0.61]], dtype=torch.float64))
    # Without the residual term the rollout is the plain product A A.
    assert torch.allclose(attention_rollout([a, a], residual=False)[0], (a[0, 0] @ a[0, 0]).double())


def test_attention_rollout_rows_sum_to_one(tmp_path):
    g = torch.Generator().manual_seed(0)
    atts = [torch.randn(2, 4, 1 + 12, 13, generator=g).softmax(-1) for _ in range(3)]
    for fusion in ("mean", "max", "min"):
        r = attention_rollout(atts, head_fusion=fusion)
        assert r.shape == (2, 13, 13)
        assert torch.allclose(r.sum(-1), torch.ones(2, 13, dtype=torch.float64))
    maps = rollout_patch_map(attention_rollout(atts), grid=(3, 4))
    assert maps.shape == (2, 3, 4)
    path = plot_rollout_overlay(np.random.default_rng(0).random((2, 24, 40)), maps, tmp_path)
    assert path.is_file()


def test_permutation_importance_finds_the_informative_feature():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 5))
    y = np.column_stack([2 * X[:, 2], -X[:, 2]]) + 0.1 * rng.standard_normal((400, 2))
    model = LinearRegression().fit(X[:200], y[:200])
    imp = permutation_importance(model.predict, X[200:], y[200:], metric="pearson", n_repeats=3, seed=0)
    t = imp.table.set_index("family")["importance_mean"]
    assert imp.table["family"].iloc[0] == "f2" and t["f2"] > 0.5
    assert t.drop("f2").abs().max() < 0.02
    # Grouped by family, with a lower-is-better metric: the family holding feature 2 comes first.
    fams = feature_families(["vel_mean", "vel_std", "ioi_mean", "ioi_std", "pedal_ratio"])
    assert fams == {"vel": [0, 1], "ioi": [2, 3], "pedal": [4]}
    imp = permutation_importance(model.predict, X[200:], y[200:], metric="mse", feature_groups=fams)
    assert imp.table["family"].iloc[0] == "ioi" and imp.table["importance_mean"].iloc[0] > 1.0


def test_error_analysis_on_real_metadata(dataset, tmp_path):
    rng = np.random.default_rng(0)
    labels = dataset.labels
    meta = dataset_metadata(dataset)
    deadpan = meta["deadpan"].to_numpy()
    pred = labels + 0.02 * rng.standard_normal(labels.shape) + 0.2 * deadpan[:, None]
    human = int(np.flatnonzero(~deadpan)[17])
    pred[human] += 0.3
    pred[human, 4] += 0.6  # the largest miss of all, worst in dimension 4
    rep = error_analysis(labels, pred, meta, top_n=10, out_dir=tmp_path)
    assert set(rep.by) == {"piece", "composer", "performer", "bars", "deadpan"}
    for t in rep.by.values():
        assert t["n"].sum() == len(dataset)
    dp = rep.by["deadpan"].set_index("level")
    assert dp.loc[True, "bias"] == pytest.approx(0.2, abs=0.01) and dp.loc[True, "n"] == deadpan.sum()
    assert rep.by["performer"]["level"].iloc[0] == "deadpan"  # worst MAE first
    assert set(rep.by["composer"]["level"]) == {"Beethoven", "Schubert"}
    assert set(rep.by["bars"]["level"]) == set(dataset.column("bars"))
    top = rep.misses.iloc[0]
    assert top["stem"] == dataset.stems[human] and top["worst_dim"] == DIMENSIONS[4]
    assert (top["label"], top["pred"]) == (labels[human, 4], pred[human, 4])
    assert rep.misses["mae"].is_monotonic_decreasing and len(rep.misses) == 10
    assert all(p.is_file() for p in rep.plots)
    with pytest.raises(ValueError, match="lacks columns"):
        error_analysis(labels, pred, meta.drop(columns="piece"))
