"""Transcription quality of recordings in monitoring: the signals on a rendered MIDI + audio pair (no
Transkun run: the transcription is put in the content-addressed cache, as a real one would be), the
`quality` column of the prediction log, and `pianolab monitor` reporting them with an alarm when asked."""

from __future__ import annotations

import json

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
from serve_support import MIDI, cli

from pianolab.data.percepiano import DIMENSIONS
from pianolab.serve.store import PredictionLog
from pianolab.transcribe import quality

RATE = 22050


def _performance(n: int = 20, velocity: int = 70, length: float = 0.3, step: float = 0.5) -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(0)
    piano.notes = [pretty_midi.Note(velocity, 60 + i % 12, i * step, i * step + length) for i in range(n)]
    pm.instruments.append(piano)
    return pm


@pytest.fixture
def recording(tmp_path):
    """A 10 s rendering (sine synthesis) of 20 notes, and the MIDI it was rendered from."""
    pm = _performance()
    wave = pm.synthesize(fs=RATE)[: 10 * RATE].astype(np.float32)
    wave = np.pad(wave, (0, 10 * RATE - len(wave)))
    sf.write(tmp_path / "take.wav", 0.5 * wave / np.abs(wave).max(), RATE)
    return tmp_path / "take.wav", pm


def test_signals_of_a_good_and_of_a_noisy_transcription(recording):
    wav, pm = recording
    wave, rate = sf.read(wav, dtype="float32")
    good = quality.transcription_quality(pm, wave, rate)
    assert good["duration_s"] == pytest.approx(10.0) and good["n_notes"] == 20
    assert good["notes_per_s"] == pytest.approx(2.0) and good["low_velocity_share"] == 0
    assert good["short_note_share"] == 0 and -30 < good["rms_dbfs"] < -3 and good["suspect"] == []
    noisy = _performance()  # the same take with 60 spurious 10 ms ghost notes, as from reverb or noise
    noisy.instruments[0].notes += [pretty_midi.Note(8, 40 + i % 30, i / 6, i / 6 + 0.01) for i in range(60)]
    bad = quality.transcription_quality(noisy, wave, rate)
    assert bad["low_velocity_share"] == pytest.approx(0.75) and bad["short_note_share"] == pytest.approx(0.75)
    assert {s.split()[0] for s in bad["suspect"]} == {"low_velocity_share", "short_note_share"}
    quiet = quality.transcription_quality(pm, wave * 1e-3, rate)
    assert [s.split()[0] for s in quiet["suspect"]] == ["rms_dbfs"]
    assert "n_notes" not in quality.transcription_quality(None, wave, rate)  # a model that hears the audio


def test_recording_quality_reads_the_cached_transcription_without_running_transkun(recording, tmp_path, monkeypatch):
    from pianolab.transcribe import transkun_v2
    from pianolab.transcribe.cache import entry_path

    pytest.importorskip("transkun")
    wav, pm = recording
    monkeypatch.setattr(transkun_v2, "load_model", lambda device: pytest.fail("Transkun must not run here"))
    tr = transkun_v2.Transkun(device="cpu")
    target = entry_path(wav, tr, tmp_path / "cache")
    target.parent.mkdir(parents=True)
    pm.write(str(target))
    q = quality.recording_quality(wav, cache_dir=tmp_path / "cache")
    assert q["n_notes"] == 20 and q["notes_per_s"] == pytest.approx(2.0) and q["suspect"] == []


def test_served_recording_carries_its_quality(tmp_path, monkeypatch):
    """A recording served by the shipped model: rated from its (cached) transcription, with its signals."""
    from pianolab.predict import SHIPPED_MODELS
    from pianolab.serve.model import ServedModel
    from pianolab.transcribe import transkun_v2
    from pianolab.transcribe.cache import entry_path

    pytest.importorskip("transkun")
    monkeypatch.setenv("PIANOLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(transkun_v2, "load_model", lambda device: pytest.fail("Transkun must not run here"))
    pm = pretty_midi.PrettyMIDI(str(MIDI / "Beethoven_WoO80_thema_8bars_11_1.mid"))
    wave = pm.synthesize(fs=RATE).astype(np.float32)
    sf.write(tmp_path / "take.wav", 0.5 * wave / np.abs(wave).max(), RATE)
    tr = transkun_v2.Transkun(device="cpu")
    target = entry_path(tmp_path / "take.wav", tr)
    target.parent.mkdir(parents=True)
    pm.write(str(target))
    pred = ServedModel("default", SHIPPED_MODELS["default"]).predict(tmp_path / "take.wav", "wav")
    assert pred.values.shape == (len(DIMENSIONS),)
    assert pred.quality["n_notes"] == 64 and pred.quality["suspect"] == []
    assert pred.quality["duration_s"] == pytest.approx(len(wave) / RATE)


def _log(tmp_path, n_good: int, n_bad: int) -> PredictionLog:
    """A prediction log with MIDI requests and recordings, some with suspect transcriptions."""
    log = PredictionLog(tmp_path / "log.sqlite")
    ok = {"duration_s": 30.0, "rms_dbfs": -20.0, "n_notes": 300, "notes_per_s": 10.0, "low_velocity_share": 0.01,
          "short_note_share": 0.02}
    rows = [("mid", None)] * 3 + [("wav", ok)] * n_good + [("wav", {**ok, "short_note_share": 0.4})] * n_bad
    for i, (kind, q) in enumerate(rows):
        q = None if q is None else {**q, "suspect": quality.suspect(q)}
        log.log_prediction(request_id=f"r{i}", input_hash=f"h{i}", client="c", kind=kind, file_name=f"x{i}.{kind}",
                           model="default", role="answer", latency_ms=5.0, values=np.full(len(DIMENSIONS), .5),
                           features=None, quality=q)
    return log


def test_monitor_reports_transcription_quality_and_alarms_when_configured(tmp_path):
    from pianolab.serve.monitor import transcription

    log = _log(tmp_path, n_good=6, n_bad=2)
    summary = transcription(log.predictions())
    assert summary["recordings"] == 8 and summary["suspect"] == 2 and summary["suspect_share"] == 0.25
    assert summary["reasons"] == {"short_note_share": 2}
    assert summary["signals"]["notes_per_s"]["median"] == 10.0 and summary["signals"]["rms_dbfs"]["n"] == 8
    args = ["monitor", "--log", str(log.path), "--registry", str(tmp_path / "registry"), "--model", "default",
            "--min-window", "1000", "--report", str(tmp_path / "m.html")]
    calm = cli(*args, "--json")
    assert calm.returncode == 0, calm.stdout + calm.stderr  # reported, no alarm unless configured
    assert "2/8 recordings suspect" in calm.stdout
    assert json.loads(calm.stdout[: calm.stdout.rindex("}") + 1])["transcription"]["suspect"] == 2
    alarm = cli(*args, "--transcription-share", "0.2")
    assert alarm.returncode == 1 and "ALARM transcription quality: 2/8 recordings suspect" in alarm.stdout
    assert "short_note_share 2x" in (tmp_path / "m.html").read_text()
    from pianolab.predict import SHIPPED_MODELS
    from pianolab.serve.model import ServedModel
    from pianolab.serve.monitor import Thresholds, analyse

    model = ServedModel("default", SHIPPED_MODELS["default"])
    assert analyse(log, model, Thresholds(min_window=1000, transcription_share=0.3))["alarms"] == []


def test_old_log_gains_the_quality_column(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "old.sqlite")
    db.executescript("CREATE TABLE predictions (request_id TEXT NOT NULL, at REAL NOT NULL, input_hash TEXT NOT "
                     "NULL, client TEXT, kind TEXT, file_name TEXT, model TEXT NOT NULL, role TEXT NOT NULL, "
                     "latency_ms REAL, predictions TEXT NOT NULL, features TEXT, input BLOB, "
                     "PRIMARY KEY (request_id, model));")
    db.close()
    log = PredictionLog(tmp_path / "old.sqlite")
    log.log_prediction(request_id="r", input_hash="h", client="c", kind="wav", file_name="x.wav", model="m",
                       role="answer", latency_ms=1.0, values=np.zeros(len(DIMENSIONS)), features=None,
                       quality={"rms_dbfs": -20.0, "suspect": []})
    assert json.loads(log.predictions()["quality"][0]) == {"rms_dbfs": -20.0, "suspect": []}
