"""How far to trust a recording's transcription: cheap proxies from the transcribed MIDI and the audio.

Transkun's note and pedal posteriors stay inside its decoder (`transcribeFrames` returns decoded notes
only), so the signals are honest proxies, each a few milliseconds to compute:

- `duration_s`, `rms_dbfs` (the recording's length and loudness; a near-silent take transcribes badly),
- `n_notes`, `notes_per_s` (over the recording's duration),
- `low_velocity_share` (notes with velocity < 20: ghost notes from noise, reverb or sympathetic strings),
- `short_note_share` (notes shorter than 30 ms: spurious onsets).

`BOUNDS` are the ranges outside which a transcription is suspect, set from the 1011 PercePiano
performance MIDIs the models are trained on: notes per second 1.6..26.1 (1st-99th percentile 2.0..21.8),
low-velocity share 99th percentile 0.09 (max 0.22), short-note share 99th percentile 0.18 (max 0.30).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

LOW_VELOCITY = 20
SHORT_S = 0.03
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "duration_s": (2.0, None), "rms_dbfs": (-45.0, None), "notes_per_s": (1.0, 30.0),
    "low_velocity_share": (None, 0.15), "short_note_share": (None, 0.25),
}
SIGNALS = ("duration_s", "rms_dbfs", "n_notes", "notes_per_s", "low_velocity_share", "short_note_share")


def audio_signals(wave: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Duration (s) and RMS level (dBFS) of a mono wave."""
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if len(wave) else 0.0
    return {"duration_s": len(wave) / sample_rate, "rms_dbfs": 20 * math.log10(max(rms, 1e-10))}


def midi_signals(midi, duration_s: float) -> dict[str, float]:
    """Note count, notes per second of `duration_s`, low-velocity and very-short shares of a transcription
    (a pretty_midi.PrettyMIDI or a MIDI path)."""
    import pretty_midi

    pm = midi if isinstance(midi, pretty_midi.PrettyMIDI) else pretty_midi.PrettyMIDI(str(midi))
    notes = [n for inst in pm.instruments for n in inst.notes]
    vel = np.array([n.velocity for n in notes], dtype=float)
    dur = np.array([n.end - n.start for n in notes], dtype=float)
    return {"n_notes": len(notes), "notes_per_s": len(notes) / duration_s if duration_s > 0 else 0.0,
            "low_velocity_share": float(np.mean(vel < LOW_VELOCITY)) if len(notes) else 0.0,
            "short_note_share": float(np.mean(dur < SHORT_S)) if len(notes) else 0.0}


def suspect(quality: dict) -> list[str]:
    """The signals of `quality` outside `BOUNDS` (empty: nothing suspect), e.g. 'notes_per_s 0.2 < 1'."""
    out = []
    for name, (low, high) in BOUNDS.items():
        value = quality.get(name)
        if value is None:
            continue
        if low is not None and value < low:
            out.append(f"{name} {value:.3g} < {low:g}")
        if high is not None and value > high:
            out.append(f"{name} {value:.3g} > {high:g}")
    return out


def transcription_quality(midi, wave: np.ndarray, sample_rate: int) -> dict:
    """Every signal of one recording (`wave`, mono) and its transcription (`midi`; None: the model heard
    the audio itself, audio signals only), with `suspect` (the signals out of bounds)."""
    q = audio_signals(wave, sample_rate)
    if midi is not None:
        q.update(midi_signals(midi, q["duration_s"]))
    q["suspect"] = suspect(q)
    return q


def recording_quality(audio: Path, transcribed: bool = True, cache_dir: Path | None = None) -> dict:
    """`transcription_quality` of a recording file; its transcription is read from the transcription
    cache (`pianolab.transcribe.cache`), where predicting it has just put it."""
    from pianolab.audio import decode
    from pianolab.render.audio import downmix

    wave, rate = decode(audio)
    midi = None
    if transcribed:
        from pianolab.transcribe.cache import transcribe_files

        found, _ = transcribe_files([audio], cache_dir=cache_dir)
        midi = found.get(Path(audio))
    return transcription_quality(midi, downmix(wave), rate)
