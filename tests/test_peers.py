"""`features.peer_centred`: vector features beside their deviation from the excerpt's mean, per role."""

import json

import numpy as np
import pytest

from pianolab.config import config_from_dict, config_hash, identity_dict
from pianolab.errors import PianolabError
from pianolab.train.inputs import Inputs, with_peer_columns
from pianolab.train.run import execute

RIDGE = {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge"}, "track": {"tracker": "none"}}
PEERS = {**RIDGE, "features": {"vector": ["symbolic"], "peer_centred": True}}


def test_peer_columns_are_deviations_from_the_group_mean():
    x = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, np.nan], [7.0, 70.0]], np.float32)
    out = with_peer_columns(Inputs(None, x, ["a", "b"], np.ones(4, bool)), np.array(["g", "g", "h", "h"]))
    assert out.vector_names == ["a", "b", "peer:a", "peer:b"]
    np.testing.assert_array_equal(out.vector[:, :2], x)
    np.testing.assert_allclose(out.vector[:, 2], [-1, 1, -1, 1])
    np.testing.assert_allclose(out.vector[[0, 1, 3], 3], [-10, 10, 0])  # NaN ignored in the mean
    assert np.isnan(out.vector[2, 3])


def test_off_keeps_old_hashes_on_changes_them():
    off, on = config_from_dict(RIDGE), config_from_dict(PEERS)
    assert "peer_centred" not in identity_dict(off)["features"]
    assert identity_dict(on)["features"]["peer_centred"] is True and config_hash(on) != config_hash(off)


def test_run_evaluate_and_predict_with_peer_features(tmp_path, dataset):
    from pianolab.evaluate.suite import evaluate_target
    from pianolab.predict import predict_files

    folder = tmp_path / "run"
    summary = execute(config_from_dict(PEERS), folder)
    assert np.isfinite(summary["within_excerpt_pearson"])
    nums = json.loads(evaluate_target(folder, ["feature_importance"], out=tmp_path / "eval",
                                      echo=lambda s: None)["json"].read_text())
    assert any(f.startswith("peer:") for f in nums["feature_importance"]["run"])
    group = dataset.column("group")
    same = [it.midi_path for it, g in zip(dataset.items, group, strict=True) if g == group[0]][:4]
    df, errors = predict_files(same, folder)
    assert not errors and len(df) == 4 and ((df.iloc[:, 1:] > 0) & (df.iloc[:, 1:] < 1)).all().all()
    alone, _ = predict_files(same[:1], folder)  # one file: its deviations are zero, a different input
    assert not np.allclose(alone.iloc[0, 1:].to_numpy(float), df.iloc[0, 1:].to_numpy(float))


def test_peer_centred_needs_vectors_and_no_augmented_copies(tmp_path):
    for features, message in (({"spectrogram": "log_mel", "peer_centred": True}, "needs vector features"),
                              ({"vector": ["symbolic"], "peer_centred": True, "augment_factor": 2},
                               "does not combine")):
        cfg = config_from_dict({**RIDGE, "features": features})
        with pytest.raises(PianolabError, match=message):
            execute(cfg, tmp_path / message.replace(" ", "_"))


def test_model_probe_of_a_peer_centred_neural_run(tmp_path):
    """The model-based sections rebuild the vector with its peer columns over the whole test fold."""
    from pianolab.evaluate.suite import evaluate_target

    folder = tmp_path / "run"
    execute(config_from_dict({**PEERS, "model": {"name": "symbolic_mlp"}, "train": {"epochs": 2}}), folder)
    nums = json.loads(evaluate_target(folder, ["loss_landscape"], out=tmp_path / "eval",
                                      echo=lambda s: None)["json"].read_text())
    landscape = nums["loss_landscape"]["run"]
    assert np.isfinite(landscape["center_loss"]) and landscape["max_2d"] > landscape["center_loss"]
