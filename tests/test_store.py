"""Feature store: strict specs, cache hit/miss when a setting changes, manifest, bad MIDI files."""

import json

import numpy as np
import pytest

from pianolab.errors import PianolabError
from pianolab.features.build import load_features
from pianolab.features.store import FeatureSpec, Store

SHORT = "Beethoven_WoO80_thema_8bars_Score_1"


@pytest.fixture(scope="module")
def short_path(dataset):
    return next(it.midi_path for it in dataset.items if it.stem == SHORT)


@pytest.fixture
def bad_files(tmp_path, short_path):
    good = short_path.read_bytes()
    no_notes = bytes.fromhex("4d546864000000060000000101e04d54726b0000000400ff2f00")
    files = {"empty.mid": b"", "truncated.mid": good[: len(good) // 3], "text.mid": b"hello, not MIDI\n",
             "no_notes.mid": no_notes}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return [tmp_path / n for n in files]


def test_spec_from_dict_is_strict():
    spec = FeatureSpec.from_dict({"kind": "mel_128", "seconds": 5.0})
    assert spec.sample_rate == 16000 and spec.length_policy == "crop" and spec.copy == 0
    with pytest.raises(PianolabError, match="unknown key.*valid: kind"):
        FeatureSpec.from_dict({"kind": "mel_128", "hop": 3})
    with pytest.raises(PianolabError, match="unknown feature kind 'mel_999'.*cqt"):
        FeatureSpec.from_dict({"kind": "mel_999"})
    with pytest.raises(PianolabError, match="augmentation preset"):
        FeatureSpec.from_dict({"kind": "cqt", "augment": "extreme", "copy": 1})


def test_key_depends_only_on_relevant_settings():
    base = FeatureSpec("symbolic")
    assert base.key() == FeatureSpec("symbolic", renderer="fluidsynth", seconds=3.0).key()
    assert base.key() != FeatureSpec("symbolic", augment="light", copy=1).key()
    mel = FeatureSpec("mel_128")
    assert mel.key() != FeatureSpec("mel_128", seconds=5.0).key()
    assert mel.key() != FeatureSpec("mel_128", renderer="fluidsynth").key()


def test_cache_hit_and_miss(tmp_path, short_path):
    spec = FeatureSpec("mel_128", seconds=2.0)
    first = load_features([short_path], spec, cache_dir=tmp_path, device="cpu")
    assert (first.computed, first.hits) == (1, 0) and first.arrays[0].shape == (1, 128, 200)
    again = load_features([short_path], spec, cache_dir=tmp_path, device="cpu")
    assert (again.computed, again.hits) == (0, 1)
    np.testing.assert_array_equal(again.arrays[0], first.arrays[0])
    changed = load_features([short_path], FeatureSpec("mel_128", seconds=3.0), cache_dir=tmp_path)
    assert (changed.computed, changed.hits) == (1, 0) and changed.arrays[0].shape == (1, 128, 300)
    records = Store(tmp_path).manifest()
    assert len(records) == 2
    assert records[0]["renderer"]["renderer"] == "midirenderer" and "numpy" in records[0]["versions"]
    assert records[0]["input"] == short_path.name
    json.dumps(records)


def test_symbolic_table_and_augmented_copy(tmp_path, short_path):
    clean = load_features([short_path], FeatureSpec("symbolic"), cache_dir=tmp_path)
    assert clean.names and clean.arrays[0].shape == (len(clean.names),)
    aug = load_features([short_path], FeatureSpec("symbolic", augment="heavy", copy=1), cache_dir=tmp_path)
    assert aug.computed == 1 and not np.array_equal(aug.arrays[0], clean.arrays[0])
    assert clean.matrix().shape == (1, len(clean.names))


def test_bad_midi_skipped_by_name(tmp_path, bad_files, short_path):
    table = load_features([short_path, *bad_files], FeatureSpec("symbolic"), cache_dir=tmp_path / "c")
    assert table.arrays[0] is not None and all(a is None for a in table.arrays[1:])
    assert [p.name for p, _ in table.skipped] == [p.name for p in bad_files]
    for path, reason in table.skipped:
        assert path.name in reason
    assert "no notes" in dict((p.name, r) for p, r in table.skipped)["no_notes.mid"]
    assert np.isnan(table.matrix()[1:]).all()


def test_bad_midi_raises_when_asked(tmp_path, bad_files):
    for bad in bad_files:
        with pytest.raises(PianolabError, match=bad.name):
            load_features([bad], FeatureSpec("mel_128"), cache_dir=tmp_path, on_error="raise")


def test_damaged_entry_is_recomputed(tmp_path, short_path):
    spec = FeatureSpec("symbolic")
    load_features([short_path], spec, cache_dir=tmp_path)
    (entry,) = list(tmp_path.rglob("*.npy"))
    entry.write_bytes(b"garbage")
    again = load_features([short_path], spec, cache_dir=tmp_path)
    assert again.computed == 1 and again.arrays[0] is not None


def test_parallel_build_warms_jit_kernels_first_and_equals_inline(tmp_path, dataset, monkeypatch):
    """Worker processes must find librosa's numba kernels compiled (compiling them at once crashes)."""
    import pianolab.features.build as build_mod

    paths = [it.midi_path for it in sorted(dataset.items, key=lambda it: it.midi_path.stat().st_size)[:2]]
    specs = [FeatureSpec("all_traditional"), FeatureSpec("symbolic")]
    warmed, real = [], build_mod.warm_up
    monkeypatch.setattr(build_mod, "warm_up", lambda todo: warmed.append({s.kind for s in todo}) or real(todo))
    parallel = build_mod.build(paths, specs, tmp_path / "pool", "cpu", "raise", workers=2)
    inline = build_mod.build(paths, specs, tmp_path / "inline", "cpu", "raise", workers=0)
    assert warmed == [{"all_traditional", "symbolic"}]
    for a, b in zip(parallel, inline, strict=True):
        assert a.computed == b.computed == 2
        np.testing.assert_allclose(np.stack(a.arrays), np.stack(b.arrays), rtol=1e-5, atol=1e-6)


def test_builds_sharing_renders_render_each_file_once(tmp_path, short_path, monkeypatch):
    from pianolab.features.build import build
    from pianolab.render.renderers import MidiRenderer

    calls = []
    render = MidiRenderer.render
    monkeypatch.setattr(MidiRenderer, "render", lambda self, data: calls.append(1) or render(self, data))
    renders = {}
    first = build([short_path], [FeatureSpec("log_mel", seconds=2.0)], tmp_path / "a", "cpu", renders=renders)
    second = build([short_path], [FeatureSpec("cqt", seconds=2.0)], tmp_path / "a", "cpu", renders=renders)
    assert len(calls) == 1 and len(renders) == 1  # the second build took the first one's render
    alone = build([short_path], [FeatureSpec("cqt", seconds=2.0)], tmp_path / "b", "cpu")
    assert len(calls) == 2 and first[0].arrays[0].shape[0] == 1
    np.testing.assert_array_equal(second[0].arrays[0], alone[0].arrays[0])
