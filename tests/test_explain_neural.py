"""Explanations of neural models: integrated gradients over the vector features (completeness: the
baseline's prediction plus the attributions is the prediction), served by `/predict?explain=true` and
written by `predict --explain` in the same shape and musical words as SHAP's; spectrogram-only models
say plainly that they have none."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from serve_support import MIDI, Server

from pianolab.data.percepiano import DIMENSIONS
from pianolab.errors import PianolabError
from pianolab.serve.gradients import NO_REASONS_SPEC, explanations_for, integrated_gradients
from pianolab.serve.model import ServedModel
from pianolab.serve.words import describe

PERFORMANCE = MIDI / "Beethoven_WoO80_thema_8bars_11_1.mid"


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    """A symbolic_mlp trained for 3 epochs on the holdout split's training fold."""
    from pianolab.config import config_from_dict
    from pianolab.train.run import execute

    folder = tmp_path_factory.mktemp("mlp") / "run"
    execute(config_from_dict({"data": {"split": "holdout"}, "features": {"vector": ["symbolic"]},
                              "model": {"name": "symbolic_mlp"}, "train": {"epochs": 3, "batch_size": 64},
                              "track": {"tracker": "none"}}), folder)
    return folder


def test_integrated_gradients_are_complete_and_exact_for_a_linear_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.Linear(16, 3)).eval()
    x, base = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32), np.zeros(6, np.float32)
    values, at_base = integrated_gradients(net, x, base, steps=64)
    with torch.no_grad():
        fx = net(torch.from_numpy(x)).double().numpy()
    assert values.shape == (4, 6, 3)
    gap = fx - at_base
    assert np.abs(values.sum(axis=1) - gap).max() < 0.01 * np.abs(gap).max()
    linear = torch.nn.Linear(6, 3).eval()
    values, _ = integrated_gradients(linear, x, base, steps=8)  # a linear model: w_ki (x_i - b_i), exactly
    assert np.allclose(values, x[:, :, None] * linear.weight.detach().numpy().T[None], atol=1e-5)


def test_hybrid_vector_branch_is_explained_given_its_spectrogram():
    """The spectrogram stays fixed along the path: the attributions add up to the change that the
    vector alone makes to a hybrid's prediction."""
    from pianolab.models import create_model

    torch.manual_seed(0)
    model = create_model("hybrid_concat", in_features=5, n_freq=32, n_frames=64, hidden=16, vector_layers=1).eval()
    spec = torch.randn(1, 1, 32, 64)
    f = lambda v: model({"spec": spec.expand(len(v), -1, -1, -1), "vector": v})  # noqa: E731
    x = np.random.default_rng(1).normal(size=(1, 5)).astype(np.float32)
    values, at_base = integrated_gradients(f, x, np.zeros(5, np.float32), steps=32)
    with torch.no_grad():
        gap = f(torch.from_numpy(x))[0].double().numpy() - at_base
    assert np.abs(values[0].sum(axis=0) - gap).max() < 0.02 * np.abs(gap).max() + 1e-5


def test_neural_run_reasons_in_musical_words(mlp_run, tmp_path):
    """`predict --explain` on a symbolic_mlp: reasons per dimension, the baseline = the prediction at
    the training mean vector, base + attributions = the prediction."""
    from pianolab.serve.offline import explain_predictions

    served = ServedModel("mlp", mlp_run)
    pred = served.predict(PERFORMANCE, "midi")
    explainer = explanations_for(served)
    assert explainer.method == "integrated_gradients"
    _, base = explainer.shap(pred.vector)
    at_mean = explainer.forward()(torch.zeros(1, len(explainer.names)))[0].detach().numpy()
    assert np.allclose(base, at_mean * explainer.y_std + explainer.y_mean, atol=1e-6)
    csv = tmp_path / "ratings.csv"
    csv.write_text(f"path,model\n{PERFORMANCE},{mlp_run}\n")
    target, errors = explain_predictions(csv)
    assert errors == []
    import json

    (entry,) = json.loads(target.read_text()).values()
    assert entry["method"] == "integrated_gradients"
    reasons = entry["reasons"]
    assert [r["dimension"] for r in reasons] == list(DIMENSIONS)
    assert np.allclose([r["value"] for r in reasons], pred.values, atol=2e-3)  # completeness
    for r in reasons:
        assert r["raised"] or r["lowered"]
        assert all(f["effect"] > 0 for f in r["raised"]) and all(f["effect"] < 0 for f in r["lowered"])
        for f in r["raised"] + r["lowered"]:
            assert f["words"] == describe(f["feature"]) and "feature_value" in f
    assert (tmp_path / "ratings_pages" / f"{PERFORMANCE.stem}.html").is_file()


def test_served_neural_model_explains_and_spectrogram_only_says_not_available(mlp_run, tmp_path):
    from pianolab.serve.registry import ModelRegistry

    ModelRegistry(tmp_path / "registry").register("mlp", mlp_run, alias="champion")
    srv = Server("--registry", str(tmp_path / "registry"))
    try:
        body = srv.post_midi(PERFORMANCE, explain=True).json()
    finally:
        srv.stop()
    assert body["model"] == "mlp" and body["explain_method"] == "integrated_gradients", body
    assert [e["dimension"] for e in body["explanations"]] == list(DIMENSIONS)
    assert np.allclose([e["value"] for e in body["explanations"]], [r["value"] for r in body["ratings"]], atol=2e-3)
    spec_only = tmp_path / "spec_only"
    spec_only.mkdir()
    (spec_only / "config.yaml").write_text("features: {spectrogram: log_mel}\nmodel: {name: ast}\n")
    (spec_only / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(PianolabError, match="not available for spectrogram-only models"):
        explanations_for(ServedModel("ast", spec_only))
    assert "attention rollout" in NO_REASONS_SPEC
