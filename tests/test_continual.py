"""Continual learning of new dimensions (issue 23 §3) on the real data: forgetting is measured, replay
forgets less than naive fine-tuning, phase 1 never sees the later dimensions' labels, EWC's penalty is
zero at the phase-1 weights, refusals are one line at load time."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from pianolab.adapt import continual
from pianolab.config import config_from_dict
from pianolab.data.percepiano import DIMENSIONS, load_dataset
from pianolab.errors import PianolabError
from pianolab.models import create_model
from pianolab.train import run as run_mod
from pianolab.train.run import execute
from pianolab.train.trainer import Tensors
from pianolab.train.validate import check_config

BASE = {"features": {"vector": ["symbolic"]}, "model": {"name": "symbolic_mlp", "params": {"hidden": 64}},
        "train": {"epochs": 6, "batch_size": 32, "device": "cpu"}, "track": {"tracker": "none"}}


def _cfg(strategy: str, **extra):
    return config_from_dict({**BASE, "continual": {"strategy": strategy, **extra}})


def _run(tmp_path, name, cfg):
    execute(cfg, tmp_path / name)
    return json.loads((tmp_path / name / continual.RESULT_FILE).read_text())



@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: small models on a shared 2-core machine are much slower with more."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

def test_first_dimensions_by_category_and_name():
    idx = continual.first_dimensions(("timing", "articulation", "pedal"))
    assert [DIMENSIONS[i] for i in idx] == list(DIMENSIONS[:5])
    assert list(continual.first_dimensions(["music_making", "timbre_soft_loud"])) == [8, 11, 12, 13, 14]
    with pytest.raises(PianolabError, match="unknown dimension or category 'tempo'"):
        continual.first_dimensions(["tempo"])
    with pytest.raises(PianolabError, match="some but not all"):
        continual.first_dimensions(continual.CATEGORIES)


def test_naive_forgets_more_than_replay_and_phase1_never_sees_new_labels(tmp_path, monkeypatch):
    naive = _run(tmp_path, "naive", _cfg("naive"))
    replay = _run(tmp_path, "replay", _cfg("replay", replay_fraction=0.3))
    assert naive["first"] == list(DIMENSIONS[:5]) and len(naive["new"]) == 14
    assert naive["first_after_phase1"] == replay["first_after_phase1"]  # same phase 1
    assert naive["forgetting"] > 0.01 and naive["forgetting"] > replay["forgetting"] + 0.01
    assert naive["new_after_phase2"] > 0.5 and replay["new_after_phase2"] > 0.5
    # the run's predictions are the final model's, all 19 dimensions
    preds = __import__("pandas").read_parquet(tmp_path / "naive" / "predictions.parquet")
    assert all(f"pred_{d}" in preds for d in DIMENSIONS)
    phases = [r["phase"] for r in map(json.loads, (tmp_path / "naive" / "metrics.jsonl").read_text().splitlines())]
    assert phases == [1] * 6 + [2] * 6

    # phase 1 with the later dimensions' labels scrambled: the same phase-1 model (it never saw them)
    real = load_dataset

    def scrambled(root=None, midi=None):
        ds = real(root, midi=midi)
        rng = np.random.default_rng(0)
        items = [dataclasses.replace(it, labels=tuple(it.labels[:5]) + tuple(rng.random(14))) for it in ds.items]
        return dataclasses.replace(ds, items=items)

    monkeypatch.setattr(run_mod, "load_dataset", scrambled)
    seen = []
    original = continual.Trainer.train_epoch
    monkeypatch.setattr(continual.Trainer, "train_epoch",
                        lambda self, train: seen.append(train.target.shape[1]) or original(self, train))
    other = _run(tmp_path, "scrambled", _cfg("naive"))
    assert other["first_after_phase1"] == naive["first_after_phase1"]
    assert other["new_after_phase2"] != naive["new_after_phase2"]
    assert seen[:6] == [5] * 6  # phase 1: the first dimensions' targets only


def test_ewc_penalty_is_zero_at_the_phase1_weights():
    torch.manual_seed(0)
    old = continual.first_dimensions(["timing", "articulation", "pedal"])
    phase1 = create_model("symbolic_mlp", n_outputs=len(old), in_features=12, hidden=16)
    grown = create_model("symbolic_mlp", n_outputs=19, in_features=12, hidden=16)
    data = Tensors({"vector": torch.randn(40, 12)}, torch.randn(40, len(old)))
    grown.load_state_dict(continual.grow(phase1.state_dict(), grown, old))
    ctx = continual.Context(config_from_dict({"continual": {"strategy": "ewc"}}), phase1, data, grown, data, old,
                            torch.device("cpu"))
    penalty = continual.STRATEGIES.get("ewc").phase2(ctx).penalty
    assert penalty(grown).item() == 0.0
    grown.eval(), phase1.eval()
    # the old outputs carried over (up to float rounding: a 19-row head multiplies in another order)
    assert torch.allclose(grown(data.batch)[:, old], phase1(data.batch), atol=1e-6)
    with torch.no_grad():
        grown.head[-1].weight[np.setdiff1d(np.arange(19), old)] += 1.0  # new rows: free
    assert penalty(grown).item() == 0.0
    with torch.no_grad():
        grown.body.net[0].weight += 0.1  # shared body: penalised
    assert penalty(grown).item() > 0.0


def test_refusals_are_one_line_at_load_time():
    def refused(data, match):
        base = {k: v for k, v in BASE.items() if k != "train"}
        with pytest.raises(PianolabError, match=match) as e:
            check_config(config_from_dict({**base, **data}), "x.yaml")
        assert "\n" not in str(e.value)

    refused({"model": {"name": "ensemble_gb_et"}, "continual": {"strategy": "naive"}},
            "continual.strategy: has no effect: model 'ensemble_gb_et' is a scikit-learn estimator")
    refused({"continual": {"strategy": "naive", "ewc_lambda": 5.0}}, "continual.ewc_lambda: has no effect")
    refused({"continual": {"strategy": "forget"}}, "unknown name 'forget'")
    refused({"continual": {"strategy": "lwf", "first": ["tempo"]}}, "unknown dimension or category 'tempo'")
    refused({"continual": {"first": ["timing"]}}, "continual.first: has no effect")
    check_config(_cfg("ewc", ewc_lambda=5.0), "x.yaml")  # its own option: fine


def test_the_packed_backend_runs_continual_cells_one_at_a_time():
    from pianolab.ab.backends import _packable

    assert _packable(config_from_dict(BASE)) and not _packable(_cfg("naive"))
