"""Self-supervised pretraining (issue 23 §4): masked-feature pretraining on the real data lowers the
masked-reconstruction loss and reads no label and no test-fold input; SSAST-style masked-patch
pretraining of a tiny AST on CPU; refusals are one line at load time."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from pianolab.adapt import pretrain as pt
from pianolab.config import config_from_dict
from pianolab.data.percepiano import load_dataset
from pianolab.errors import PianolabError
from pianolab.models import create_model
from pianolab.train import run as run_mod
from pianolab.train.run import execute, neural_parts, prepare_cell
from pianolab.train.trainer import Tensors
from pianolab.train.validate import check_config

MLP = {"features": {"vector": ["symbolic"]}, "model": {"name": "symbolic_mlp", "params": {"hidden": 64}},
       "train": {"epochs": 2, "batch_size": 32, "device": "cpu"}, "track": {"tracker": "none"},
       "pretrain": {"method": "masked_feature", "epochs": 4}}



@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: small models on a shared 2-core machine are much slower with more."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

def test_masked_feature_lowers_the_loss_and_reads_no_label_nor_test_input(tmp_path, monkeypatch, dataset):
    unlabelled = dataset.root / "midi"  # as a user corpus: its PercePiano items must be dropped
    cfg = config_from_dict({**MLP, "pretrain": {**MLP["pretrain"], "corpus": [str(unlabelled)]}})
    execute(cfg, tmp_path / "a")
    rec = json.loads((tmp_path / "a" / pt.RESULT_FILE).read_text())
    assert rec["masked_loss_after"] < 0.8 * rec["masked_loss_before"]
    assert rec["train_loss"][-1] < rec["train_loss"][0]
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    pool = rec["pool"]
    assert pool["fold_items"] == meta["n_train"] + meta["n_val"]  # the test fold's items are not in it
    assert pool["corpus"] == len(dataset.unlabelled_midi) > 0  # only the unlabelled files of midi/
    assert pool["score_midi"] > 0 and pool["dropped_items"] >= len(dataset)
    assert rec["rows"] == pool["fold_items"] + pool["score_midi"] + pool["corpus"] - pool["unreadable"]

    # every label NaN: the same pretraining (no label is read), fold roles unchanged
    real = load_dataset

    def unlabelled_data(root=None, midi=None):
        ds = real(root, midi=midi)
        return dataclasses.replace(ds, items=[dataclasses.replace(it, labels=(float("nan"),) * 19)
                                              for it in ds.items])

    monkeypatch.setattr(run_mod, "load_dataset", unlabelled_data)
    cell = prepare_cell(cfg, tmp_path / "b", "test", "x", torch.device("cpu"))
    assert np.isnan(cell.dataset.labels).all()
    neural_parts(cell, torch.device("cpu"))
    again = json.loads((tmp_path / "b" / pt.RESULT_FILE).read_text())
    assert again["masked_loss_before"] == rec["masked_loss_before"]
    assert again["masked_loss_after"] == rec["masked_loss_after"]
    files, _ = pt.corpus_files(cell)
    test_stems = {cell.dataset.items[i].stem for i in cell.roles.test}
    assert not test_stems & {f.stem for f in files}


def _tiny_ast():
    return create_model("ast_ultra_tiny", n_freq=32, n_frames=48, patch=8, depth=1, dim=32, heads=2,
                        drop_path=0.0, dropout=0.0)


def test_patch_targets_follow_the_token_order():
    model = _tiny_ast()
    conv = model.encoder.patch_embed
    with torch.no_grad():  # every token channel = its patch's mean
        conv.weight.fill_(1.0 / 64)
        conv.bias.zero_()
    spec = torch.randn(2, 1, 32, 48)
    tokens, target, grid = pt.patch_tokens(conv, spec)
    assert grid == (4, 6) and tokens.shape == (2, 24, 32) and target.shape == (2, 24, 64)
    assert torch.allclose(tokens[..., 0], target.mean(-1), atol=1e-5)
    _, pos = model.encoder._tokens(spec)  # the encoder's own grid
    assert pos == grid


def test_masked_patch_pretrains_a_tiny_ast_on_cpu():
    torch.manual_seed(0)
    t = torch.linspace(0, 6.28, 48)
    f = torch.linspace(0, 3.14, 32)[:, None]
    phase = torch.rand(64, 1, 1, 1) * 6.28
    spec = torch.sin(f * 3 + t[None] + phase) + 0.1 * torch.randn(64, 1, 32, 48)  # structured, predictable
    cfg = config_from_dict({"model": {"name": "ast_ultra_tiny"}, "features": {"spectrogram": "log_mel"},
                            "train": {"batch_size": 16}, "optim": {"lr": 3e-3, "weight_decay": 0.0},
                            "pretrain": {"method": "masked_patch", "epochs": 15, "mask_ratio": 0.4}})
    model = _tiny_ast()
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    rec = pt.pretrain_on(model, pt.Pool([Tensors({"spec": spec}, None)]), cfg, torch.device("cpu"))
    assert rec["masked_loss_after"] < 0.7 * rec["masked_loss_before"]
    assert all(torch.equal(v, model.head.state_dict()[k]) for k, v in head.items())  # the head is left alone


def test_refusals_are_one_line_at_load_time():
    base = {"features": {"vector": ["symbolic"]}, "model": {"name": "symbolic_mlp"}}

    def refused(data, match):
        with pytest.raises(PianolabError, match=match) as e:
            check_config(config_from_dict({**base, **data}), "x.yaml")
        assert "\n" not in str(e.value)

    refused({"pretrain": {"method": "masked_patch"}}, "pretrains ASTRegressor models; model 'symbolic_mlp'")
    refused({"pretrain": {"epochs": 5}}, "pretrain.epochs: has no effect: pretraining is off")
    refused({"model": {"name": "ensemble_gb_et"}, "pretrain": {"method": "masked_feature"}},
            "pretrain.method: has no effect: model 'ensemble_gb_et' is a scikit-learn estimator")
    refused({"pretrain": {"method": "masked_feature", "corpus": ["/no/such/folder"]}}, "does not exist")
    refused({"features": {"vector": ["symbolic_aligned"]},
             "pretrain": {"method": "masked_feature", "corpus": ["data/percepiano/midi"]}},
            "corpus MIDI have no score")
    refused({"features": {"vector": ["symbolic"], "stack": "ridge"}, "pretrain": {"method": "masked_feature"}},
            "features.stack")
    refused({"pretrain": {"method": "bert"}}, "unknown name 'bert'")
    check_config(config_from_dict({**base, "pretrain": {"method": "masked_feature", "epochs": 5}}), "x.yaml")


def test_the_packed_backend_runs_pretraining_cells_one_at_a_time():
    from pianolab.ab.backends import _packable

    base = {"model": {"name": "ast_ultra_tiny"}, "features": {"spectrogram": "log_mel"}}
    assert _packable(config_from_dict(base))
    assert not _packable(config_from_dict({**base, "pretrain": {"method": "masked_patch"}}))  # a pack skips it
