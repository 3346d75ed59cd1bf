"""Renderer determinism, pedal effect, silence trim and MIDI-level augmentation on real files."""

import io

import mido
import numpy as np
import pytest

from pianolab.errors import PianolabError
from pianolab.features.midi import read_notes
from pianolab.render import augment_midi, draw_params, make_renderer, rest
from pianolab.render.audio import trim_trailing_silence
from pianolab.render.augment import AugmentParams, clamp_shift

SHORT = "Beethoven_WoO80_thema_8bars_Score_1"  # ~9 s deadpan file


@pytest.fixture(scope="module")
def short_midi(dataset):
    return next(it.midi_path for it in dataset.items if it.stem == SHORT).read_bytes()


@pytest.fixture(scope="module")
def renderer():
    return make_renderer("midirenderer", 16000)


def _pedal_variant(data: bytes, hold: bool) -> bytes:
    """The file with CC64 removed, or replaced by one press held to the end; the end of the file
    moved 3 s later so that the synthesiser renders the release tail."""
    mid = mido.MidiFile(file=io.BytesIO(data))
    for tr in mid.tracks:
        kept = [m for m in tr if not (m.type == "control_change" and m.control == 64)]
        tr[:] = kept
        if tr and tr[-1].type == "end_of_track":
            tr[-1] = tr[-1].copy(time=tr[-1].time + 3 * 2 * mid.ticks_per_beat)
    if hold:
        mid.tracks[-1].insert(0, mido.Message("control_change", control=64, value=127, time=0))
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def test_render_is_deterministic(renderer, short_midi):
    a, b = renderer.render(short_midi), renderer.render(short_midi)
    assert a.dtype == np.float32 and a.ndim == 1
    assert a.tobytes() == b.tobytes()
    assert 5 * 16000 < len(a) < 20 * 16000


def test_sustain_pedal_lengthens_the_tail(renderer, short_midi):
    with_pedal = renderer.render(_pedal_variant(short_midi, hold=True))
    dry = renderer.render(_pedal_variant(short_midi, hold=False))
    last_off = int(read_notes("x", short_midi).notes[:, 1].max() * 16000)
    assert len(with_pedal) > len(dry) + 0.3 * 16000
    tail = slice(last_off + 4000, last_off + 12000)
    rms = lambda x: np.sqrt((np.pad(x, (0, 16000 * 20))[tail] ** 2).mean())
    assert rms(with_pedal) > 3 * rms(dry)


def test_trailing_silence_trimmed():
    sr = 16000
    tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr).astype(np.float32)
    x = np.concatenate([tone, np.zeros(5 * sr, np.float32)])
    y = trim_trailing_silence(x, sr)
    assert sr <= len(y) <= sr + 0.25 * sr
    assert len(trim_trailing_silence(np.zeros(sr, np.float32), sr)) == 0


def test_fixed_gain_keeps_dynamics(renderer, short_midi):
    loud = renderer.render(short_midi)
    soft = renderer.render(augment_midi(short_midi, AugmentParams(velocity_jitter=0, stretch=1.0 + 1e-9)))
    assert np.isclose(np.abs(loud).max(), np.abs(soft).max(), rtol=0.05)
    quiet = mido.MidiFile(file=io.BytesIO(short_midi))
    for tr in quiet.tracks:
        for i, m in enumerate(tr):
            if m.type == "note_on" and m.velocity > 0:
                tr[i] = m.copy(velocity=max(1, m.velocity // 3))
    buf = io.BytesIO()
    quiet.save(file=buf)
    assert np.abs(renderer.render(buf.getvalue())).max() < 0.7 * np.abs(loud).max()


@pytest.mark.parametrize("preset", ["light", "medium", "heavy"])
def test_augmentation_ranges_and_determinism(short_midi, preset):
    from pianolab.presets import PRESETS

    p = PRESETS.get(preset)
    clean = read_notes("clean", short_midi)
    for copy in (1, 2, 3):
        params = draw_params(preset, SHORT, copy)
        assert params == draw_params(preset, SHORT, copy)
        assert p.time_stretch_range[0] <= params.stretch <= p.time_stretch_range[1]
        assert p.pitch_shift_range[0] <= params.shift <= p.pitch_shift_range[1]
        data = augment_midi(short_midi, params)
        assert data == augment_midi(short_midi, params)
        aug = read_notes("aug", data)
        span = lambda n: n.notes[:, 1].max() - n.notes[:, 0].min()
        assert span(aug) / span(clean) == pytest.approx(params.stretch, rel=1e-3)
        assert (aug.notes[:, 2] - clean.notes[:, 2] == params.shift).all()
        jitter = np.abs(aug.notes[:, 3] - clean.notes[:, 3])
        assert jitter.max() <= p.velocity_jitter and aug.notes[:, 3].min() >= 1
    assert draw_params(preset, SHORT, 0).identity


def test_pitch_shift_clamped_to_piano():
    assert clamp_shift(3, 21, 107) == 1
    assert clamp_shift(-3, 22, 80) == -1
    assert clamp_shift(2, 40, 80) == 2


def test_unknown_renderer_lists_valid():
    with pytest.raises(PianolabError, match="midirenderer"):
        make_renderer("nope")


def test_fluidsynth_missing_says_how_to_install(short_midi, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(PianolabError, match="apt-get install fluidsynth"):
        make_renderer("fluidsynth").render(short_midi)


LONG_REST = "Schubert_D960_mv3_8bars_0_17"  # its last event at ~6 s, its end ~19 s later


def _full_render(data: bytes) -> np.ndarray:
    import midirenderer

    from pianolab.render.audio import decode_wav, finish
    from pianolab.render.renderers import timgm6mb_path

    return finish(*decode_wav(bytes(midirenderer.render_wave_from(timgm6mb_path().read_bytes(), data))), 16000, 1.0)


@pytest.mark.parametrize("tail_s", [rest.TAIL_S, 0.3])
def test_final_rest_is_not_synthesised_and_the_bits_stay(dataset, renderer, monkeypatch, tail_s):
    """The shortened copy stands when the sound has died away before its end; with a tail too short
    for that (0.3 s, pedal down at the end) the whole file is rendered. The bits are the whole file's."""
    import midirenderer

    data = next(it.midi_path for it in dataset.items if it.stem == LONG_REST).read_bytes()
    notes = read_notes("x", data)
    last = max(notes.notes[:, 1].max(), *(c[-1, 0] for c in notes.controls.values()))
    short = rest.without_rest(data, tail_s)
    assert mido.MidiFile(file=io.BytesIO(short)).length == pytest.approx(last + tail_s, abs=0.01)
    assert mido.MidiFile(file=io.BytesIO(data)).length > last + 15
    full = _full_render(data)
    synthesised = []
    real = midirenderer.render_wave_from
    monkeypatch.setattr(midirenderer, "render_wave_from", lambda sf, midi: synthesised.append(midi) or real(sf, midi))
    monkeypatch.setattr(rest, "TAIL_S", tail_s)
    assert renderer.render(data).tobytes() == full.tobytes()
    assert synthesised == ([short, data] if tail_s == 0.3 else [short])


def test_a_file_without_a_final_rest_is_rendered_as_it_is(short_midi):
    assert rest.without_rest(short_midi) is None
