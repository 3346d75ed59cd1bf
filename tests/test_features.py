"""Spectrogram shapes and batch equivalence, filters vs librosa, classic and symbolic features."""

import numpy as np
import pytest
import torch

from pianolab.data.music import score_midi_path
from pianolab.features.aligned import ALIGNED_NAMES, score_aligned_features
from pianolab.features.filters import mel_filters
from pianolab.features.midi import read_notes
from pianolab.features.select import select_top_k
from pianolab.features.spectrogram import LENGTH_POLICIES, SPECTROGRAMS, compute_spectrograms, split_windows
from pianolab.features.symbolic import SYMBOLIC_DOCS, SYMBOLIC_NAMES, performance_features

SR, FR = 16000, 100
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # torch paths that must equal numpy's
GROUP = "Schubert_D960_mv3_8bars_12"


def _tone(seconds: float, f: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.1 * np.sin(2 * np.pi * f * t) * np.exp(-t)).astype(np.float32)


@pytest.mark.parametrize("kind,shape", [("mel_128", (1, 128)), ("mel_256", (1, 256)), ("log_mel", (1, 128)),
                                        ("cqt", (1, 193)), ("multi_resolution", (1, 128 + 193)),
                                        ("multi_window_mel", (3, 128))])
def test_spectrogram_shapes(kind, shape):
    (spec,) = compute_spectrograms([_tone(2.0)], kind, SR, FR)
    assert spec.shape == (*shape, 200) and spec.dtype == np.float32 and np.isfinite(spec).all()


@pytest.mark.parametrize("kind", sorted(SPECTROGRAMS.names()))
def test_batched_equals_one_by_one(kind):
    waves = [_tone(1.0, 220), _tone(2.3, 440), _tone(0.7, 880)]
    batched = compute_spectrograms(waves, kind, SR, FR, batch_size=3)
    for w, b in zip(waves, batched, strict=True):
        (single,) = compute_spectrograms([w], kind, SR, FR, batch_size=1)
        assert b.shape == single.shape
        np.testing.assert_allclose(b, single, atol=1e-2)


def test_cqt_peak_at_tone_frequency():
    (spec,) = compute_spectrograms([_tone(1.0, 440.0)], "cqt", SR, FR)
    assert 27.5 * 2 ** (spec[0, :, 50].argmax() / 24) == pytest.approx(440.0, rel=0.02)


def test_mel_filters_match_librosa():
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=128, fmin=20, fmax=8000)
    np.testing.assert_allclose(mel_filters(SR, 1024, 128, 20, 8000), ref, atol=1e-6)


def test_length_policies():
    x = _tone(3.2)
    assert len(LENGTH_POLICIES.get("crop")(x, SR, 10.0, 60.0)) == 10 * SR
    assert len(LENGTH_POLICIES.get("crop")(x, SR, 2.0, 60.0)) == 2 * SR
    assert len(LENGTH_POLICIES.get("pad")(x, SR, 2.0, 5.0)) == 5 * SR
    w = LENGTH_POLICIES.get("windows")(x, SR, 1.0, 60.0)
    assert len(w) == 4 * SR
    (spec,) = compute_spectrograms([w], "mel_128", SR, FR)
    assert split_windows(spec, 100).shape == (4, 1, 128, 100)
    assert split_windows(spec, 100, 50).shape == (7, 1, 128, 100)


def test_symbolic_names_documented_and_finite(dataset):
    assert len(SYMBOLIC_NAMES) >= 60 and set(SYMBOLIC_NAMES) == set(SYMBOLIC_DOCS)
    for it in dataset.items[:5]:
        x = performance_features(read_notes(it.midi_path))
        assert x.shape == (len(SYMBOLIC_NAMES),) and np.isfinite(x).all()


def test_symbolic_pedal_and_velocity_read_correctly(dataset):
    human = next(it for it in dataset.items if it.group == GROUP and not it.deadpan)
    f = dict(zip(SYMBOLIC_NAMES, performance_features(read_notes(human.midi_path)), strict=True))
    notes = read_notes(human.midi_path)
    assert f["n_notes"] == len(notes.notes)
    assert f["vel_mean"] == pytest.approx(notes.notes[:, 3].mean())
    assert 0 <= f["pedal_frac"] <= 1 and 0 <= f["legato_frac"] <= 1


def test_aligned_deadpan_vs_human(dataset):
    score = score_midi_path(dataset.root, GROUP)
    items = [it for it in dataset.items if it.group == GROUP]
    feats = {it.player: dict(zip(ALIGNED_NAMES, score_aligned_features(it.midi_path, score), strict=True))
             for it in items}
    dead = feats["Score"]
    humans = [f for p, f in feats.items() if p not in ("Score", "Score2")]
    assert dead["al_match_frac"] > 0.95
    assert dead["dev_global_std"] < 0.005 and dead["tempo_log_std"] < 0.01
    for h in humans:
        assert h["al_match_frac"] > 0.8
        assert h["dev_global_std"] > 5 * dead["dev_global_std"] + 0.01
        assert h["tempo_log_std"] > 0.03


def test_compiled_dtw_takes_the_path_of_parangonars_python_dtw(dataset):
    """The aligner's coarse DTW, on the piano rolls it is given (score vs a human performance), on
    random binary rolls, and on silent rolls where every step ties (only the tie order decides)."""
    from parangonar.dp.dtw import DTW
    from partitura.utils.music import compute_pianoroll

    from pianolab.features.aligned import CompiledDTW, performance_array, score_array

    item = next(it for it in dataset.items if it.group == GROUP and it.player not in ("Score", "Score2"))
    rolls = [compute_pianoroll(arr, time_div=16, remove_drums=False).toarray().T
             for arr in (score_array(read_notes(score_midi_path(dataset.root, GROUP))),
                         performance_array(read_notes(item.midi_path)))]
    rng = np.random.default_rng(0)
    for x, y in (rolls, ((rng.random((60, 88)) > 0.9) * 1.0, (rng.random((70, 88)) > 0.9) * 1.0),
                 (np.zeros((6, 88)), np.zeros((9, 88)))):
        cost, path = DTW(metric="euclidean")(x, y)
        fast_cost, fast_path = CompiledDTW()(x, y)
        assert np.array_equal(np.asarray(path), np.asarray(fast_path)) and fast_cost == pytest.approx(cost)


def test_alignment_is_the_same_every_time(dataset):
    """parangonar's matcher samples note combinations at random: seeded, a performance whose repeated
    notes gave different pairs from call to call (unseeded) always gets the same ones."""
    from pianolab.features.aligned import _score, match
    from pianolab.features.kinds import _score_path

    path = dataset.root / "midi" / "Beethoven_WoO80_var23_8bars_26_13.mid"
    score, perf = _score(str(_score_path(path))), read_notes(path)
    first = match(score, perf)
    np.random.seed(1)
    assert all(np.array_equal(first, match(score, perf)) for _ in range(4))
    assert np.random.randint(1 << 30) == np.random.RandomState(1).randint(1 << 30)  # caller's state kept


def test_alignment_warm_up_leaves_the_kernel_for_other_processes(dataset, tmp_path):
    """The symbolic_aligned kind's warm-up compiles parangonar's DTW kernel into numba's on-disk cache
    (which workers then load instead of compiling it each), with the signature real alignments use."""
    import os
    import subprocess
    import sys

    from parangonar.dp.dtw import weighted_dtw_forward_and_backward as kernel

    from pianolab.features.aligned import _score, match, warm_up_alignment
    from pianolab.features.kinds import _score_path, get_kind

    assert get_kind("symbolic_aligned").warm_up is not None
    code = "from pianolab.features.aligned import warm_up_alignment; warm_up_alignment()"
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}, check=True)
    assert list(tmp_path.rglob("*weighted_dtw_forward_and_backward*.nbc"))
    warm_up_alignment()
    compiled = set(kernel.signatures)
    path = dataset.root / "midi" / "Beethoven_WoO80_var23_8bars_26_13.mid"
    match(_score(str(_score_path(path))), read_notes(path))
    assert compiled and set(kernel.signatures) == compiled


def test_select_top_k_finds_informative_columns():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 10))
    Y = np.stack([X[:, 3] * 2 + X[:, 7], X[:, 3] - X[:, 7]], 1) + 0.01 * rng.normal(size=(120, 2))
    top = select_top_k(X, Y, 2, seed=0)
    assert set(top) == {3, 7}
    assert (select_top_k(X, Y, 2, seed=0) == top).all()


def test_classic_set_names_match_output(dataset):
    pytest.importorskip("librosa")
    from pianolab.features.classic import classic_features, classic_names

    x = classic_features(_tone(2.0), SR, "spectral_only")
    assert x.shape == (len(classic_names("spectral_only")),) == (15,)
    assert len(classic_names("all_traditional")) == 120


def test_shared_spectra_give_librosas_own_arrays(dataset):
    """The descriptors share one STFT and one mel spectrogram (`Spectra`): on a rendered performance they
    equal what librosa computes from the wave inside mfcc, onset_strength and chroma_stft."""
    librosa = pytest.importorskip("librosa")
    from pianolab.features.classic import HOP, N_FFT, Spectra
    from pianolab.render import make_renderer

    item = next(it for it in dataset.items if it.group == GROUP)
    y = np.asarray(make_renderer("midirenderer", SR).render(item.midi_path.read_bytes()), dtype=np.float32)
    x = Spectra(y[: 8 * SR], SR)
    assert np.array_equal(librosa.feature.mfcc(S=x.mel_db, n_mfcc=13),
                          librosa.feature.mfcc(y=x.y, sr=SR, n_mfcc=13, n_fft=N_FFT, hop_length=HOP, n_mels=128))
    assert np.array_equal(librosa.onset.onset_strength(S=x.mel_db, sr=SR, hop_length=HOP),
                          librosa.onset.onset_strength(y=x.y, sr=SR, hop_length=HOP))
    assert np.array_equal(librosa.feature.chroma_stft(S=x.power, sr=SR),
                          librosa.feature.chroma_stft(y=x.y, sr=SR, n_fft=N_FFT, hop_length=HOP))


def test_symbolic_relative_is_zero_for_the_score_itself(dataset):
    from pianolab.features.kinds import get_kind
    from pianolab.features.store import FeatureSpec

    kind, spec = get_kind("symbolic_relative"), FeatureSpec("symbolic_relative")
    items = {it.player: it for it in dataset.items if it.group == GROUP}
    rel = {p: kind.compute(it.midi_path.read_bytes(), it.midi_path, spec) for p, it in items.items()}
    assert np.abs(rel["Score"]).max() == 0  # the deadpan rendition is the score MIDI itself
    human = next(p for p in rel if p not in ("Score", "Score2"))
    n_notes = list(SYMBOLIC_NAMES).index("n_notes")
    n_score = len(read_notes(score_midi_path(dataset.root, GROUP)).notes)
    assert rel[human][n_notes] == len(read_notes(items[human].midi_path).notes) - n_score


def test_harmonic_ratio_equals_librosa_hpss():
    """The fast HPSS share (partial-sort median filters, power masks only) gives librosa's value,
    including a clip shorter than the 31-frame filter, and scipy's median filter exactly."""
    librosa = pytest.importorskip("librosa")
    import scipy.ndimage

    from pianolab.features.classic import harmonic_ratio, median_filter

    rng = np.random.default_rng(0)
    for n in (2048, 16000 * 3):
        y = (rng.standard_normal(n) * np.linspace(0, 1, n)).astype(np.float32)
        s = librosa.stft(y, n_fft=2048, hop_length=512)
        h, _ = librosa.decompose.hpss(s)
        want = float((np.abs(h) ** 2).sum() / (np.abs(s) ** 2).sum())
        assert harmonic_ratio(np.abs(s)) == pytest.approx(want, abs=1e-6)
        mag = np.abs(s)
        for axis, size in ((1, (1, 31)), (0, (31, 1))):
            want_median = scipy.ndimage.median_filter(mag, size, mode="reflect")
            assert np.array_equal(median_filter(mag, 31, axis), want_median)
            for device in DEVICES:  # the torch path (the GPU's in the feature store when there is one)
                assert np.array_equal(median_filter(mag, 31, axis, device=device), want_median)
        assert all(harmonic_ratio(mag, device=d) == harmonic_ratio(mag) for d in DEVICES)
    assert harmonic_ratio(np.zeros((1025, 40), np.float32)) == 0.0


def _notes_through_mido_merge(path) -> np.ndarray:
    """Note onsets/offsets the slow, obvious way: mido.merge_tracks, then seconds per delta."""
    import mido

    midi = mido.MidiFile(path)
    t, tempo, open_notes, notes = 0.0, 500000, {}, []
    for msg in mido.merge_tracks(midi.tracks):
        t += msg.time * tempo / (1e6 * midi.ticks_per_beat)
        if msg.type == "set_tempo":
            tempo = msg.tempo
        elif msg.type == "note_on" and msg.velocity > 0:
            open_notes.setdefault(msg.note, []).append((t, msg.velocity))
        elif msg.type in ("note_on", "note_off") and open_notes.get(msg.note):
            on, vel = open_notes[msg.note].pop(0)
            notes.append((on, t, msg.note, vel))
    arr = np.array(notes)
    return arr[np.lexsort((arr[:, 2], arr[:, 0]))], t


def test_read_notes_equals_mido_merge(dataset, tmp_path):
    import mido

    two_tracks = mido.MidiFile(ticks_per_beat=480)  # tempo changes in one track, notes in another,
    tempo = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=400000, time=0),  # tracks ending apart
                            mido.MetaMessage("set_tempo", tempo=700000, time=700),
                            mido.MetaMessage("end_of_track", time=100)])
    notes = mido.MidiTrack([mido.Message("note_on", note=60 + i % 5, velocity=50 + i, time=150 if i else 0)
                            for i in range(12)] + [mido.Message("note_off", note=60 + i % 5, time=90)
                                                   for i in range(12)])
    notes.append(mido.MetaMessage("end_of_track", time=333))
    two_tracks.tracks += [tempo, notes]
    two_tracks.save(tmp_path / "two.mid")
    paths = [tmp_path / "two.mid", *(it.midi_path for it in dataset.items[::97])]
    for path in paths:
        expected, end = _notes_through_mido_merge(path)
        got = read_notes(path)
        np.testing.assert_array_equal(got.notes, expected)
        assert got.end == end
