import pytest

from pianolab.config import config_from_dict, config_hash, load_config, replace
from pianolab.errors import PianolabError


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: {name: ast_ultra_tiny}\nfeatures: {spectrogram: log_mel}\n")
    cfg = load_config(path, ["model.params.depth=4", "optim.lr=0.0003", "features.vector=[symbolic]"])
    assert cfg.model.params == {"depth": 4}
    assert cfg.optim.lr == 0.0003 and cfg.features.vector == ("symbolic",)
    assert cfg.train.epochs == 100  # default lives in code


def test_unknown_key_lists_valid_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim: {lr: 0.001, lrr: 2}\n")
    with pytest.raises(PianolabError, match=r"run.yaml: unknown key 'optim.lrr'; valid: optim.lr, "):
        load_config(path)
    with pytest.raises(PianolabError, match="unknown key 'trian'"):
        config_from_dict({"trian": {}})


def test_wrong_type_is_one_line():
    with pytest.raises(PianolabError, match=r"train.epochs must be int, got 'ten'"):
        config_from_dict({"train": {"epochs": "ten"}})
    with pytest.raises(PianolabError, match="features.vector must be a list"):
        config_from_dict({"features": {"vector": 3}})


def test_hash_ignores_device_and_tracking_only():
    a = config_from_dict({})
    assert config_hash(a) == config_hash(replace(a, train={"device": "cuda"}, track={"tracker": "none"}))
    assert config_hash(a) != config_hash(replace(a, train={"seed": 1}))
    assert config_hash(a) != config_hash(replace(a, optim={"lr": 0.01}))


def test_bad_override_syntax():
    from pianolab.config import apply_overrides

    with pytest.raises(PianolabError, match="key=value"):
        apply_overrides({}, ["model.depth"])
