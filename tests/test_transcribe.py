"""Recordings in: audio decoding, the Transkun transcriber (torchaudio shim), and `pianolab predict` on a
rendered clip in WAV and FLAC through transcription, the feature store and a model (CLI subprocess)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
from serve_support import trained_models

from pianolab.audio import load_audio
from pianolab.errors import PianolabError

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "data" / "percepiano" / "midi" / "Schubert_D960_mv3_8bars_3_12.mid"
CLIP_S = 4.0  # every window of Transkun covers 16 s, so a clip this short costs three windows on the CPU


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The first CLIP_S seconds of a bundled performance (MIDI) and its render: WAV at 44.1 kHz, FLAC at 32 kHz."""
    from pianolab.render import make_renderer

    folder = tmp_path_factory.mktemp("clip")
    pm = pretty_midi.PrettyMIDI(str(SOURCE))
    for inst in pm.instruments:
        inst.notes = [n for n in inst.notes if n.start < CLIP_S]
        for n in inst.notes:
            n.end = min(n.end, CLIP_S)
        inst.control_changes = [c for c in inst.control_changes if c.time < CLIP_S]
    buf = io.BytesIO()
    pm.write(buf)
    wave = make_renderer("midirenderer", sample_rate=44100).render(buf.getvalue())
    sf.write(folder / "clip.wav", wave, 44100, subtype="PCM_16")
    import soxr

    sf.write(folder / "clip.flac", soxr.resample(wave, 44100, 32000), 32000)
    pm.write(str(folder / "clip.mid"))
    return folder


def test_load_audio_reads_each_format_and_refuses_others(clip, tmp_path):
    ref = load_audio(clip / "clip.wav", 16000)
    flac = load_audio(clip / "clip.flac", 16000)
    sf.write(tmp_path / "clip.ogg", sf.read(clip / "clip.wav")[0], 44100)
    ogg = load_audio(tmp_path / "clip.ogg", 16000)
    assert abs(len(flac) - len(ref)) <= 2 and abs(len(ogg) - len(ref)) <= 2
    n = min(len(ref), len(flac), len(ogg))
    assert np.corrcoef(ref[:n], flac[:n])[0, 1] > 0.999  # lossless, resampled twice
    assert np.corrcoef(ref[:n], ogg[:n])[0, 1] > 0.95  # lossy
    (tmp_path / "x.aiff").write_bytes(b"FORM")
    with pytest.raises(PianolabError, match=r"x.aiff: unsupported audio format '.aiff'"):
        load_audio(tmp_path / "x.aiff", 16000)
    (tmp_path / "bad.mp3").write_text("not an mp3 at all")
    with pytest.raises(PianolabError, match=r"bad.mp3: unreadable audio"):
        load_audio(tmp_path / "bad.mp3", 16000)


def test_transkun_loads_without_torchaudio_and_uses_the_checkpoints_filterbank():
    import torch

    from pianolab.transcribe.transkun_v2 import load_model, melscale_fbanks, package_files

    had_torchaudio = "torchaudio" in sys.modules
    model = load_model("cpu")
    assert ("torchaudio" in sys.modules) == had_torchaudio  # the shim lived only while the model was built
    saved = torch.load(package_files()[0], map_location="cpu", weights_only=True)["state_dict"]
    buffer = model.framewiseFeatureExtractor.freq2mels
    assert torch.equal(buffer, saved["framewiseFeatureExtractor.freq2mels"])
    # the shim's librosa filterbank is the same HTK filterbank up to float rounding
    built = melscale_fbanks(2049, 30, 8000, 229, 44100)
    assert built.shape == buffer.shape and torch.allclose(built, buffer, atol=1e-4)


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "pianolab", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **env}, timeout=600)


def test_predict_transcribes_recordings_and_caches_them(clip, tmp_path):
    import mir_eval
    import pandas as pd

    model = str(trained_models()["ridge"])
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    (tmp_path / "notes.aiff").write_text("not audio")
    env = {"PIANOLAB_CACHE": str(tmp_path / "cache")}
    files = [str(clip / "clip.wav"), str(clip / "clip.flac")]
    out = _cli("predict", *files, str(tmp_path / "broken.wav"), str(tmp_path / "notes.aiff"), "--model", model,
               "--out", str(tmp_path / "p.csv"), env=env)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert [ln for ln in lines if ln.startswith("error:")] == [
        f"error: {tmp_path / 'broken.wav'}: unreadable audio (Error opening '{tmp_path / 'broken.wav'}': "
        "Error in WAV/W64/RF64 file. Malformed 'fmt ' chunk.)",
        f"error: {tmp_path / 'notes.aiff'}: not a MIDI or audio file (.aiff; predict takes .mid/.midi and "
        "recordings: .wav, .flac, .ogg, .mp3)"]
    assert not [ln for ln in lines if "Traceback" in ln or "Warning" in ln], out.stderr
    first = pd.read_csv(tmp_path / "p.csv")
    assert list(first["path"]) == files and list(first["stem"]) == ["clip", "clip"]
    dims = first.columns[3:]
    assert len(dims) == 19 and first[dims].apply(lambda c: c.between(0, 1)).all().all()

    # the transcriptions (notes, velocities, pedal) against the source MIDI
    cached = sorted((tmp_path / "cache" / "transcriptions").rglob("*.mid"))
    assert len(cached) == 2
    ref = pretty_midi.PrettyMIDI(str(clip / "clip.mid")).instruments[0].notes
    ref_iv = np.array([[n.start, n.end] for n in ref])
    ref_pitch = np.array([pretty_midi.note_number_to_hz(n.pitch) for n in ref])
    for path in cached:
        est = pretty_midi.PrettyMIDI(str(path)).instruments[0]
        iv, pitch = np.array([[n.start, n.end] for n in est.notes]), np.array(
            [pretty_midi.note_number_to_hz(n.pitch) for n in est.notes])
        f1 = mir_eval.transcription.precision_recall_f1_overlap(ref_iv, ref_pitch, iv, pitch, offset_ratio=None)[2]
        assert f1 > 0.8, (path, f1)
        assert all(1 <= n.velocity <= 127 for n in est.notes)
        assert len({n.velocity for n in est.notes}) > 3  # velocities vary with the performance
        assert any(c.number == 64 for c in est.control_changes)  # the source holds the sustain pedal
    stamps = [p.stat().st_mtime_ns for p in cached]

    # second call: served from the cache (transkun made unimportable), same predictions
    blocker = tmp_path / "blocker" / "transkun"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('transkun must not be needed on a cache hit')\n")
    again = _cli("predict", *files, "--model", model, "--out", str(tmp_path / "q.csv"),
                 env={**env, "PYTHONPATH": f"{blocker.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "q.csv"), first)
    assert [p.stat().st_mtime_ns for p in cached] == stamps
