"""Domain adaptation (`pianolab.adapt.domain`, issue 23 section 2): CORAL, per-domain standardisation,
self-training, DANN's gradient reversal, no target label in any fit, refusals, the experiment files."""

import dataclasses
import shutil
from pathlib import Path

import mido
import numpy as np
import pytest
import torch

from pianolab.adapt.domain import DannModel, align_features, coral_map, grad_reverse, resolve_corpus, self_train
from pianolab.config import config_from_dict, config_hash, identity_dict
from pianolab.errors import PianolabError
from pianolab.train import run
from pianolab.train.validate import check_config

REPO = Path(__file__).resolve().parents[1]
RIDGE = {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge"}, "track": {"tracker": "none"},
         "domain": {"source": "beethoven", "target": "schubert"}}


def _cfg(**domain):
    return config_from_dict({**RIDGE, "domain": {**RIDGE["domain"], **domain}})


def _poisoned(dataset):
    """A copy of the dataset whose Schubert (target) labels are all NaN."""
    ds = dataclasses.replace(dataset)
    labels = dataset.labels.copy()
    labels[dataset.column("composer") == "Schubert"] = np.nan
    ds.__dict__["labels"] = labels
    return ds


def _cell(cfg, dataset, monkeypatch, tmp_path):
    monkeypatch.setattr(run, "load_dataset", lambda root=None, midi=None: dataset)
    return run.prepare_cell(cfg, tmp_path / "run", "test", "v", torch.device("cpu"))


@pytest.fixture(scope="module")
def composer(dataset):
    """Fold 0 of Beethoven -> Schubert: its roles and inputs, read once (the method does not change them)."""
    cfg = _cfg()
    roles, _ = run.fold_roles(cfg, dataset, 0.0)
    return roles, run._load_domain(cfg, dataset, roles, torch.device("cpu"), False)


def _composer_cell(composer, cfg, dataset):
    roles, loaded = composer
    return run.make_cell(cfg, dataclasses.replace(loaded, dataset=dataset), roles, None, torch.device("cpu"))


def test_coral_gives_the_source_the_target_covariance_and_mean():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(4000, 4)) @ rng.normal(size=(4, 4)) + 3.0
    t = rng.normal(size=(3000, 4)) @ rng.normal(size=(4, 4)) - 1.0
    moved = coral_map(s, t, eps=1e-9)(s)
    np.testing.assert_allclose(np.cov(moved, rowvar=False), np.cov(t, rowvar=False), atol=1e-3)
    np.testing.assert_allclose(moved.mean(0), t.mean(0), atol=1e-4)
    assert np.abs(np.cov(s, rowvar=False) - np.cov(t, rowvar=False)).max() > 0.5  # they differed


def test_domain_cell_roles_and_feature_alignment_on_real_features(dataset, composer):
    """Beethoven -> Schubert: training items are Beethoven only, test and pool Schubert only; CORAL brings
    the scaled source covariance far closer to the pool's, standardise gives the pool zero mean, unit std."""
    names = dataset.column("composer")
    cell = _composer_cell(composer, _cfg(method="coral"), dataset)
    assert set(names[cell.roles.train]) == {"Beethoven"}
    assert set(names[cell.roles.test]) == set(names[cell.roles.unlabelled]) == {"Schubert"}
    assert not set(cell.roles.unlabelled) & set(cell.roles.test)
    plain = _composer_cell(composer, _cfg(), dataset)
    np.testing.assert_array_equal(plain.part["test"].vector, cell.part["test"].vector)  # target untouched
    gap = lambda a, b: np.linalg.norm(np.cov(a, rowvar=False) - np.cov(b, rowvar=False))  # noqa: E731
    pool = cell.part["unlabelled"].vector
    assert gap(cell.part["train"].vector, pool) < 0.5 * gap(plain.part["train"].vector, pool)
    std = align_features(_cfg(method="standardise").domain, plain.part)
    np.testing.assert_allclose(std["unlabelled"].vector.mean(0), 0, atol=1e-4)
    np.testing.assert_array_equal(std["train"].vector, plain.part["train"].vector)


@pytest.mark.parametrize("method", ["none", "standardise", "coral", "self_training"])
def test_no_target_label_reaches_the_fit(method, dataset, composer):
    cell = _composer_cell(composer, _cfg(method=method), _poisoned(dataset))
    assert np.isfinite(cell.targets["train"]).all()
    preds = run.fit_cell(cell, torch.device("cpu"))
    assert np.isfinite(preds["test"]).all() and preds["test"].shape == (len(cell.roles.test), 19)


def test_the_upper_bound_does_read_target_labels(dataset, monkeypatch, tmp_path):
    """The poison is real: training on the target's own labels (train_on: target) meets the NaNs."""
    cell = _cell(_cfg(train_on="target"), _poisoned(dataset), monkeypatch, tmp_path)
    assert np.isnan(cell.targets["train"]).all()


def test_self_training_fits_the_pool_on_pseudo_labels_only(dataset, composer):
    cell = _composer_cell(composer, _cfg(method="self_training"), _poisoned(dataset))
    seen = []

    def fit(c):
        seen.append(c)
        return run.fit_cell(dataclasses.replace(c, cfg=_cfg()), torch.device("cpu"))

    last = self_train(cell, fit, rounds=2)
    n, pool = len(cell.part["train"].vector), len(cell.part["unlabelled"].vector)
    assert len(seen) == 2 and all(c.folder is None for c in seen)  # probes write nothing
    assert len(last.targets["train"]) == n + pool
    np.testing.assert_array_equal(last.targets["train"][:n], cell.targets["train"])  # source labels kept
    probe = run.fit_cell(dataclasses.replace(seen[1], cfg=_cfg()), torch.device("cpu"))["test"]
    np.testing.assert_allclose(last.targets["train"][n:], probe, rtol=1e-5)  # the 2nd model's predictions
    assert np.isfinite(last.targets["train"]).all()


def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.randn(5, 3, requires_grad=True)
    y = grad_reverse(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.25 * torch.arange(3.0).expand(5, 3))


def test_dann_trains_the_neural_model_against_the_domain_classifier(dataset, monkeypatch, tmp_path):
    from pianolab.models import create_model

    task = create_model("symbolic_mlp", in_features=4, hidden=8, layers=1, dropout=0.0)
    model = DannModel(task, 8, 4)
    src, tgt = {"vector": torch.randn(6, 4)}, {"vector": torch.randn(6, 4) + 2}
    model.domain_loss(src, tgt, 1.0).backward()
    body = [p.grad for p in task.body.parameters()]
    model.zero_grad()
    (-model.domain_loss(src, tgt, -1.0)).backward()  # scale -1: no reversal, the loss' own sign flipped
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(body, [p.grad for p in task.body.parameters()],
                                                                   strict=True))
    cfg = config_from_dict({**RIDGE, "model": {"name": "symbolic_mlp", "params": {"hidden": 16}},
                            "train": {"epochs": 2}, "domain": {**RIDGE["domain"], "method": "dann"}})
    cell = _cell(cfg, _poisoned(dataset), monkeypatch, tmp_path)
    assert np.isfinite(run.fit_cell(cell, torch.device("cpu"))["test"]).all()
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    assert saved and not any(k.startswith(("task.", "domain.")) for k in saved)  # a plain symbolic_mlp's


def test_a_folder_target_named_by_stems(dataset, tmp_path):
    """Transcription-like target: a folder of MIDI named by PercePiano stems (velocities on another scale)
    plus a file that names no item (unlabelled extra); its files, not the dataset's, are rated."""
    folder = tmp_path / "transcribed"
    folder.mkdir()
    stems = [it.stem for it in dataset.items if it.composer == "Beethoven"][::3]
    for stem in stems:
        mid = mido.MidiFile(dataset.items[dataset.index[stem]].midi_path)
        for track in mid.tracks:
            for msg in track:
                if msg.type == "note_on" and msg.velocity:
                    msg.velocity = min(127, msg.velocity + 30)
        mid.save(folder / f"{stem}.mid")
    shutil.copy(dataset.items[0].midi_path, folder / "maestro_take.mid")
    corpus = resolve_corpus(str(folder), dataset)
    assert len(corpus.items) == len(stems) and [p.name for p in corpus.extra] == ["maestro_take.mid"]
    quirk = next(it for it in dataset.items if it.midi_path.name.startswith(" "))  # named as PercePiano names it
    shutil.copy(quirk.midi_path, folder / quirk.midi_path.name)
    assert resolve_corpus(str(folder), dataset).items[quirk.stem].name == quirk.midi_path.name
    (folder / quirk.midi_path.name).unlink()
    cfg = config_from_dict({**RIDGE, "domain": {"target": str(folder), "method": "standardise"}})
    check_config(cfg, "cfg.yaml")
    cpu = torch.device("cpu")
    roles, _ = run.fold_roles(cfg, dataset, 0.0)
    assert {dataset.stems[i] for i in (*roles.test, *roles.unlabelled)} <= set(stems)
    assert len(roles.train) > 500  # the source: every performance of the fold's training part (clean MIDI)
    loaded = run._load_domain(cfg, dataset, roles, cpu, False)
    assert len(loaded.parts(roles)["unlabelled"].vector) == len(roles.unlabelled) + 1
    clean = run.load_items(cfg, dataset, roles.test, cpu).rows(roles.test).vector
    assert not np.allclose(loaded.target.rows(roles.test).vector, clean, equal_nan=True)  # other files read
    assert np.isfinite(run.fit_cell(run.make_cell(cfg, loaded, roles, None, cpu), cpu)["test"]).all()


@pytest.mark.parametrize("domain, model, message", [
    ({"method": "dann"}, "ridge", "domain.method: dann needs a neural model, and 'ridge' is a scikit-learn"),
    ({"method": "coral", "target": None, "source": None}, "ridge", "domain.method: has no effect: no "
     "domain.target"),
    ({"method": "coral", "train_on": "target"}, "ridge", "domain.train_on: target is the upper bound"),
    ({"source": None}, "ridge", "domain.source (percepiano) holds 814 of the target's items"),
    ({"method": "mmd"}, "ridge", "unknown domain adaptation method 'mmd'; valid: coral, dann, none"),
    ({"method": "coral", "params": {"rounds": 2}}, "ridge", "method 'coral' does not accept rounds; valid: eps"),
    ({"target": "/nonexistent"}, "ridge", "domain.target: '/nonexistent' is neither a registered domain"),
    ({"train_on": "both"}, "ridge", "domain.train_on: must be one of source, target"),
])
def test_refusals_are_one_line(domain, model, message):
    cfg = config_from_dict({**RIDGE, "model": {"name": model}, "domain": {**RIDGE["domain"], **domain}})
    with pytest.raises(PianolabError) as err:
        check_config(cfg, "cfg.yaml")
    assert message in str(err.value) and "\n" not in str(err.value) and str(err.value).startswith("cfg.yaml: ")


def test_hash_unchanged_without_a_domain():
    plain = config_from_dict({k: v for k, v in RIDGE.items() if k != "domain"})
    assert "domain" not in identity_dict(plain) and config_hash(plain) != config_hash(_cfg())


def test_experiment_files_load_and_variants_must_share_the_target(tmp_path):
    from pianolab.ab.spec import load_experiment

    exp = load_experiment(REPO / "experiments" / "e2_domain_composer.yaml")
    assert {exp.config(v).domain.target for v in exp.variant_names} == {"schubert"}
    assert exp.config("target_labels").domain.train_on == "target"
    mlp = load_experiment(REPO / "experiments" / "e2_domain_composer_mlp.yaml")
    assert mlp.config("dann").domain.method == "dann" and mlp.config("dann").model.name == "symbolic_mlp"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nhypothesis: h\nbaseline: {features: {vector: [symbolic]}, model: {name: ridge}, "
                   "domain: {source: beethoven, target: schubert}}\nvariants: {other: {domain.target: beethoven, "
                   "domain.source: schubert, multi_factor: true, reason: r}}\n")
    with pytest.raises(PianolabError, match="domain.target differs between variants"):
        load_experiment(bad)


def test_transcribed_experiment_reads_the_committed_transcriptions(tmp_path, monkeypatch):
    """(a) names its target folder relative to the working directory: refused where the folder is
    missing, read from the repository root (data/percepiano/transcribed/fluidr3_clean)."""
    from pianolab.ab.spec import load_experiment

    path = REPO / "experiments" / "e2_domain_transcribed.yaml"
    folder = "data/percepiano/transcribed/fluidr3_clean"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PianolabError, match=f"'{folder}' is neither a registered domain"):
        load_experiment(path)
    monkeypatch.chdir(REPO)
    exp = load_experiment(path)
    assert {exp.config(v).domain.target for v in exp.variant_names} == {folder}
    assert exp.config("target_labels").domain.train_on == "target" and len(exp.variant_names) == 5
