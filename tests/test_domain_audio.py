"""Domain shift (b), one renderer -> another (issue 23 section 2): a spectrogram-only model hears the
target's recordings as they are (their own log-mel, never a transcription), a folder mixing MIDI and
recordings keeps its rows in item order, and no target label reaches its fit."""

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import pianolab.transcribe
from pianolab.config import config_from_dict
from pianolab.errors import PianolabError
from pianolab.render.renderers import MidiRenderer
from pianolab.train import run
from pianolab.train.inputs import feature_spec, hears_audio, load_file_inputs, load_inputs, load_wav_inputs
from pianolab.train.validate import check_config

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
AST = {"features": {"spectrogram": "log_mel", "seconds": 2.0},
       "model": {"name": "ast_ultra_tiny", "params": {"depth": 1, "dim": 32, "heads": 2, "patch": 32}},
       "train": {"epochs": 2, "batch_size": 4}, "track": {"tracker": "none"}}


@pytest.fixture(autouse=True)
def no_transcription(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a spectrogram-only model must hear the recordings, not their transcription")

    monkeypatch.setattr(pianolab.transcribe, "transcribe_files", refuse)


@pytest.fixture(scope="module")
def corpora(dataset, tmp_path_factory):
    """Fold 0's items as two folders: a labelled source of 8 training items' MIDI (8 excerpts), and a target of
    recordings (the project's renderer at half level, 22.05 kHz FLAC) of 3 test and 3 training items,
    one test item's MIDI, and one recording that names no item."""
    roles, _ = run.fold_roles(config_from_dict(AST), dataset, 0.0)
    train, test = [dataset.stems[i] for i in roles.train], [dataset.stems[i] for i in roles.test]
    root = tmp_path_factory.mktemp("domains")
    (root / "source").mkdir()
    (root / "target").mkdir()
    groups = dataset.column("group")
    for stem in list({groups[dataset.index[s]]: s for s in train[:-3]}.values())[:8]:  # 8 excerpts
        shutil.copy(dataset.items[dataset.index[stem]].midi_path, root / "source" / f"{stem}.mid")
    renderer = MidiRenderer(sample_rate=22050)
    for name, stem in [*((s, s) for s in test[:3] + train[-3:]), ("take", train[10])]:
        wave = renderer.render(dataset.items[dataset.index[stem]].midi_path.read_bytes())
        soundfile.write(root / "target" / f"{name}.flac", 0.5 * wave, 22050, subtype="PCM_16")
    shutil.copy(dataset.items[dataset.index[test[3]]].midi_path, root / "target" / f"{test[3]}.mid")
    return root


def _cfg(corpora, **domain):
    return config_from_dict({**AST, "domain": {"source": str(corpora / "source"), "target": str(corpora / "target"),
                                               **domain}})


def test_a_spectrogram_model_hears_the_target_recordings(dataset, corpora, monkeypatch, tmp_path):
    cfg = _cfg(corpora)
    check_config(cfg, "cfg.yaml")
    monkeypatch.setattr(run, "load_dataset", lambda root=None, midi=None: dataset)
    cell = run.prepare_cell(cfg, tmp_path / "run", "test", "v", CPU)  # no transcription (the fixture)
    stems = lambda idx: [dataset.stems[i] for i in idx]  # noqa: E731
    assert len(stems(cell.roles.test)) == 4 and len(stems(cell.roles.unlabelled)) == 3
    assert set(stems(cell.roles.train)) | set(stems(cell.roles.val)) <= {p.stem for p in (corpora / "source").iterdir()}
    target = corpora / "target"
    expected = [load_wav_inputs(cfg.features, [target / f"{s}.flac"]).spec[0] if (target / f"{s}.flac").is_file()
                else load_inputs(cfg.features, [target / f"{s}.mid"]).spec[0] for s in stems(cell.roles.test)]
    np.testing.assert_array_equal(cell.part["test"].spec, np.stack(expected))  # in item order, MIDI included
    heard = [k for k, s in enumerate(stems(cell.roles.test)) if (target / f"{s}.flac").is_file()]
    renders = load_inputs(cfg.features, [dataset.items[i].midi_path for i in cell.roles.test]).spec
    assert len(heard) == 3 and all(np.abs(cell.part["test"].spec[k] - renders[k]).mean() > 1.0 for k in heard)
    pool = load_wav_inputs(cfg.features, [target / f"{s}.flac" for s in stems(cell.roles.unlabelled)]
                           + [target / "take.flac"]).spec
    np.testing.assert_array_equal(cell.part["unlabelled"].spec, pool)  # the pool plus the unnamed extra
    assert np.isfinite(run.fit_cell(cell, CPU)["test"]).all()


CLASSIC = {"features": {"vector": ["all_traditional"]},
           "model": {"name": "random_forest", "params": {"n_estimators": 10}}, "track": {"tracker": "none"}}


def test_an_audio_descriptor_model_hears_recordings_as_they_are(dataset, tmp_path):
    """Trees on the classic audio descriptors read a recording's own descriptors: a FLAC of the project's
    render gives those of its MIDI (no transcription: the fixture), and a model with MIDI kinds still refuses it."""
    cfg = config_from_dict(CLASSIC)
    assert hears_audio(cfg.features) and not hears_audio(config_from_dict(
        {**CLASSIC, "features": {"vector": ["symbolic", "all_traditional"]}}).features)
    rate = feature_spec(cfg.features, "all_traditional").sample_rate
    items = dataset.items[5:7]
    wav = tmp_path / f"{items[1].stem}.wav"  # the render as a float WAV: the same samples, read as a recording
    soundfile.write(wav, MidiRenderer(sample_rate=rate).render(items[1].midi_path.read_bytes()), rate, subtype="FLOAT")
    mixed = load_file_inputs(cfg.features, [items[0].midi_path, wav])  # MIDI rendered, the recording heard
    from_midi = load_inputs(cfg.features, [it.midi_path for it in items]).vector
    names = load_inputs(cfg.features, [items[0].midi_path]).vector_names
    assert mixed.ok.all() and mixed.vector_names == load_wav_inputs(cfg.features, [wav]).vector_names == names
    np.testing.assert_array_equal(mixed.vector[0], from_midi[0])
    np.testing.assert_allclose(mixed.vector[1], from_midi[1], rtol=1e-5)
    with pytest.raises(PianolabError, match="needs MIDI input"):
        load_wav_inputs(config_from_dict({**CLASSIC, "features": {"vector": ["symbolic"]}}).features, [wav])


def test_an_audio_descriptor_model_adapts_to_the_target_recordings(dataset, corpora, monkeypatch, tmp_path):
    """Domain shift (b) for the trees: CORAL on the descriptors of the target's recordings, read as they are."""
    cfg = config_from_dict({**CLASSIC, "domain": {"source": str(corpora / "source"), "target": str(corpora / "target"),
                                                  "method": "coral"}})
    check_config(cfg, "cfg.yaml")
    roles, _ = run.fold_roles(cfg, dataset, run.val_fraction(cfg))
    loaded = run._load_domain(cfg, dataset, roles, CPU, False)  # no transcription (the fixture)
    target = corpora / "target"
    test = [dataset.stems[i] for i in roles.test]
    raw = np.stack([load_wav_inputs(cfg.features, [target / f"{s}.flac"]).vector[0] if (target / f"{s}.flac").is_file()
                    else load_inputs(cfg.features, [target / f"{s}.mid"]).vector[0] for s in test])
    assert len(test) == 4
    np.testing.assert_array_equal(loaded.target.rows(roles.test).vector, raw)  # in item order, MIDI included
    cell = run.make_cell(cfg, loaded, roles, None, CPU)
    assert np.isfinite(run.fit_cell(cell, CPU)["test"]).all()


def _poisoned(dataset, folder):
    """A copy of the dataset whose labels of the target's stem-named files are all NaN."""
    ds = dataclasses.replace(dataset)
    labels = dataset.labels.copy()
    labels[[dataset.index[p.stem] for p in folder.iterdir() if p.stem in dataset.index]] = np.nan
    ds.__dict__["labels"] = labels
    return ds


@pytest.mark.parametrize("method", ["none", "self_training", "dann"])
def test_no_target_label_reaches_an_audio_model_fit(method, dataset, corpora):
    cfg = _cfg(corpora, method=method)
    check_config(cfg, "cfg.yaml")  # dann: the AST models have an embedding
    poisoned = _poisoned(dataset, corpora / "target")
    roles, _ = run.fold_roles(cfg, poisoned, run.val_fraction(cfg))
    loaded = run._load_domain(cfg, poisoned, roles, CPU, False)
    cell = run.make_cell(cfg, loaded, roles, None, CPU)
    assert np.isfinite(cell.targets["train"]).all()
    preds = run.fit_cell(cell, CPU)
    assert np.isfinite(preds["test"]).all() and preds["test"].shape == (len(roles.test), 19)
    upper = _cfg(corpora, train_on="target")  # the poison is real: the upper bound meets it
    up_roles, _ = run.fold_roles(upper, poisoned, run.val_fraction(upper))
    assert np.isnan(run.make_cell(upper, run._load_domain(upper, poisoned, up_roles, CPU, False), up_roles, None,
                                  CPU).targets["train"]).all()


def test_renderer_experiment_loads_once_its_folder_exists(dataset, tmp_path, monkeypatch):
    """(b) runs with one command once renders/fluidr3 holds FLAC renders named by PercePiano stems."""
    from pianolab.ab.spec import load_experiment
    from pianolab.errors import PianolabError

    monkeypatch.chdir(tmp_path)
    path = REPO / "experiments" / "needs_renders" / "e2_domain_renderer.yaml"
    with pytest.raises(PianolabError, match="'renders/fluidr3' is neither a registered domain"):
        load_experiment(path)
    (tmp_path / "renders" / "fluidr3").mkdir(parents=True)
    for it in dataset.items[:3]:
        soundfile.write(tmp_path / "renders" / "fluidr3" / f"{it.stem}.flac", np.zeros(2205, dtype=np.float32), 22050)
    exp = load_experiment(path)
    assert set(exp.variant_names) == {"baseline", "dann", "self_training", "target_labels"}
    assert exp.config("dann").model.name == "ast_ultra_tiny" and exp.config("dann").features.spectrogram == "log_mel"
    assert exp.config("target_labels").domain.train_on == "target"
