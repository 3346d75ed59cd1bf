"""`features.stack`: a classic estimator's out-of-fold predictions as extra vector features."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import KNeighborsRegressor

from pianolab.config import config_from_dict, config_hash, identity_dict
from pianolab.data.percepiano import DIMENSIONS
from pianolab.errors import PianolabError
from pianolab.features.stack import STACK_FILE, fit_stack
from pianolab.train.run import execute

MLP = {"features": {"vector": ["symbolic"], "stack": "ridge"}, "model": {"name": "symbolic_mlp"},
       "train": {"epochs": 3}, "track": {"tracker": "none"}}
RIDGE = {**MLP, "model": {"name": "ridge"}}


def test_out_of_fold_columns_never_see_their_own_excerpt():
    """Each excerpt's two rows are identical: a 1-nearest-neighbour model that saw the excerpt would
    return its own target; out of fold it must return another excerpt's."""
    groups = np.repeat(np.arange(6), 2)
    x = np.repeat(np.arange(6.0)[:, None] * 10, 2, axis=0)
    z = np.repeat(np.arange(6.0)[:, None] + 100, 2, axis=0)
    oof, full = fit_stack("knn", x, z, groups, seed=0, folds=3, make=lambda: KNeighborsRegressor(1))
    assert (oof != z).all()
    np.testing.assert_array_equal(full.predict(x), z)  # the estimator for new items saw every excerpt
    with pytest.raises(PianolabError, match="at least 2 excerpts"):
        fit_stack("knn", x[:2], z[:2], groups[:2], seed=0, make=lambda: KNeighborsRegressor(1))


def test_off_keeps_old_hashes_on_changes_them():
    off = config_from_dict({**MLP, "features": {"vector": ["symbolic"]}})
    on = config_from_dict(MLP)
    assert "stack" not in identity_dict(off)["features"]
    assert identity_dict(on)["features"]["stack"] == "ridge" and config_hash(on) != config_hash(off)


def test_stack_needs_vector_features(tmp_path):
    cfg = config_from_dict({**MLP, "features": {"spectrogram": "log_mel", "stack": "ridge"},
                            "model": {"name": "ast_ultra_tiny"}})
    with pytest.raises(PianolabError, match="features.stack needs vector features"):
        execute(cfg, tmp_path / "run")


@pytest.mark.parametrize("name", ["symbolic_mlp", "hybrid_concat", "hybrid_gated", "hybrid_xattn"])
def test_a_model_with_a_prior_starts_from_it_and_learns_a_correction(name):
    import torch

    from pianolab.models import create_model

    torch.manual_seed(0)
    shape = {} if name == "symbolic_mlp" else {"n_freq": 32, "n_frames": 64}
    model = create_model(name, in_features=25, prior_columns=19, **shape).train()
    batch = {"vector": torch.randn(4, 25), "spec": torch.randn(4, 1, 32, 64)}
    torch.testing.assert_close(model(batch), batch["vector"][:, -19:])  # the correction starts at zero
    loss = (model(batch) - torch.randn(4, 19)).pow(2).mean()
    loss.backward()
    assert model.head[-1].weight.grad.abs().sum() > 0  # and is trained


@pytest.mark.parametrize("raw", [MLP, RIDGE], ids=["neural", "estimator"])
def test_run_predict_and_evaluate_with_stacked_columns(tmp_path, dataset, raw):
    """The saved stack estimator rebuilds the inputs: `predict` on the run's test items gives the test
    predictions it wrote, and the evaluation sees the 19 stacked columns."""
    from pianolab.evaluate.suite import evaluate_target
    from pianolab.predict import predict_files

    folder = tmp_path / "run"
    execute(config_from_dict(raw), folder)
    assert (folder / STACK_FILE).is_file()
    written = pd.read_parquet(folder / "predictions.parquet").query("role == 'test'").head(5)
    by_stem = {it.stem: it.midi_path for it in dataset.items}
    df, errors = predict_files([by_stem[s] for s in written.stem], folder)
    assert not errors
    np.testing.assert_allclose(df[list(DIMENSIONS)].to_numpy(float),
                               written[[f"pred_{d}" for d in DIMENSIONS]].to_numpy(float), atol=1e-4)
    nums = json.loads(evaluate_target(folder, ["feature_importance"], out=tmp_path / "eval",
                                      echo=lambda s: None)["json"].read_text())
    assert any(f.startswith("stack:") for f in nums["feature_importance"]["run"])
