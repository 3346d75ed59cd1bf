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


@pytest.mark.parametrize("data, message", [
    ({"train": {"epochs": -5}}, "train.epochs: must be >= 1, got -5"),
    ({"train": {"epochs": 0}}, "train.epochs: must be >= 1, got 0"),
    ({"train": {"seed": -1}}, "train.seed: must be >= 0, got -1"),
    ({"data": {"folds": 1}}, "data.folds: must be >= 2, got 1"),
    ({"optim": {"lr": 0}}, "optim.lr: must be > 0, got 0.0"),
    ({"optim": {"warmup_frac": 1.0}}, "optim.warmup_frac: must be >= 0 and < 1, got 1.0"),
    ({"regularize": {"mixup_prob": 1.5}}, "regularize.mixup_prob: must be >= 0 and <= 1, got 1.5"),
    ({"regularize": {"val_fraction": -0.1}}, "regularize.val_fraction: must be >= 0 and < 1"),
    ({"objective": {"label_smoothing": 1}}, "objective.label_smoothing: must be >= 0 and < 1"),
    ({"features": {"top_k": 0}}, "features.top_k: must be >= 1, got 0"),
    ({"features": {"augment_factor": 0}}, "features.augment_factor: must be >= 1, got 0"),
    ({"train": {"max_seconds": -3}}, "train.max_seconds: must be >= 0"),
    ({"tuning": {"inner_folds": 1}}, "tuning.inner_folds: must be >= 2"),
])
def test_numeric_ranges_checked_at_load(tmp_path, data, message):
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PianolabError, match=f"^{path}: {message}"):
        load_config(path)


def test_ranges_accept_their_bounds_and_none():
    cfg = config_from_dict({"train": {"epochs": 1, "seed": 0, "max_seconds": None}, "data": {"folds": 2},
                            "optim": {"warmup_frac": 0.0}, "regularize": {"mixup_prob": 1.0, "val_fraction": 0.0}})
    assert (cfg.train.epochs, cfg.data.folds, cfg.optim.warmup_frac, cfg.regularize.mixup_prob) == (1, 2, 0.0, 1.0)


def test_leaves_are_spelling_independent():
    from pianolab.config import leaves

    nested = {"model": {"name": "ridge", "params": {"alpha": 1.0}}, "features": {"vector": ["symbolic"]}}
    dotted = {"model.name": "ridge", "model.params.alpha": 1.0, "features.vector": ["symbolic"]}
    mixed = {"model": {"name": "ridge"}, "model.params": {"alpha": 1.0}, "features.vector": ["symbolic"]}
    assert leaves(nested) == leaves(dotted) == leaves(mixed) == dotted
    assert leaves({"tuning": {"space": {"a": {"low": 1}}}}, frozenset({"tuning.space"})) == \
        {"tuning.space": {"a": {"low": 1}}}
    assert leaves({"model": {"params": {}}}) == {}
