"""MIDI-level augmentation before rendering: time stretch, pitch shift, velocity jitter.

Copy 0 is the clean performance; copy c >= 1 draws its parameters from the preset's ranges with a
seed derived from (stem, c), so every run and every process makes the same variants. Augmentation
factor N = copies 0..N-1 per training performance.

- time stretch: factor r (duration multiplier, r > 1 slower) from `time_stretch_range`; every
  set_tempo is scaled by r (a 120 bpm tempo is inserted when the file has none), so notes, pedal
  and all controllers move together.
- pitch shift: integer semitones from `pitch_shift_range`, clamped so that the lowest and highest
  notes stay within the piano range A0..C8 (21..108).
- velocity jitter: each note-on velocity + an integer uniform in [-j, j], clipped to 1..127.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

from pianolab.features.midi import open_midi
from pianolab.presets import PRESETS, AugmentPreset

PIANO_LOW, PIANO_HIGH = 21, 108
DEFAULT_TEMPO = 500000  # us per quarter (120 bpm), the MIDI default


@dataclass(frozen=True)
class AugmentParams:
    stretch: float = 1.0
    shift: int = 0
    velocity_jitter: int = 0
    seed: int = 0

    @property
    def identity(self) -> bool:
        return self.stretch == 1.0 and self.shift == 0 and self.velocity_jitter == 0


def copy_seed(stem: str, copy: int) -> int:
    """Deterministic 63-bit seed of one (item, copy), stable across processes and machines."""
    return int.from_bytes(hashlib.sha256(f"{stem.strip()}|{copy}".encode()).digest()[:8], "little") >> 1


def draw_params(preset: AugmentPreset | str | None, stem: str, copy: int) -> AugmentParams:
    """Parameters of copy `copy` of `stem` under `preset` (copy 0 or no preset: identity)."""
    if preset is None or copy == 0:
        return AugmentParams()
    p = PRESETS.get(preset) if isinstance(preset, str) else preset
    seed = copy_seed(stem, copy)
    rng = np.random.default_rng(seed)
    lo, hi = p.time_stretch_range
    stretch = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
    shift = int(rng.integers(p.pitch_shift_range[0], p.pitch_shift_range[1] + 1))
    return AugmentParams(stretch, shift, p.velocity_jitter, seed)


def _note_range(midi: mido.MidiFile) -> tuple[int, int]:
    pitches = [m.note for tr in midi.tracks for m in tr if m.type == "note_on" and m.velocity > 0]
    return (min(pitches), max(pitches)) if pitches else (60, 60)


def clamp_shift(shift: int, low: int, high: int) -> int:
    """Largest shift of the same sign (up to |shift|) keeping [low, high] inside the piano range."""
    return int(np.clip(shift, PIANO_LOW - low, PIANO_HIGH - high))


def augment_midi(data: bytes, params: AugmentParams, name: str = "<midi>") -> bytes:
    """Apply `params` to MIDI file bytes and return the new file's bytes (identity returns `data`)."""
    midi = open_midi(name, data)
    if params.identity:
        return data
    rng = np.random.default_rng(params.seed)
    shift = clamp_shift(params.shift, *_note_range(midi))
    has_tempo = False
    for track in midi.tracks:
        for i, msg in enumerate(track):
            if msg.type == "set_tempo":
                has_tempo = True
                track[i] = msg.copy(tempo=int(round(msg.tempo * params.stretch)))
            elif msg.type in ("note_on", "note_off"):
                vel = msg.velocity
                if msg.type == "note_on" and vel > 0 and params.velocity_jitter:
                    j = params.velocity_jitter
                    vel = int(np.clip(vel + rng.integers(-j, j + 1), 1, 127))
                track[i] = msg.copy(note=int(np.clip(msg.note + shift, 0, 127)), velocity=vel)
    if not has_tempo and params.stretch != 1.0:
        tempo = int(round(DEFAULT_TEMPO * params.stretch))
        midi.tracks[0].insert(0, mido.MetaMessage("set_tempo", tempo=tempo, time=0))
    out = io.BytesIO()
    midi.save(file=out)
    return out.getvalue()


def augmented_bytes(path, preset: str | None, copy: int, stem: str | None = None) -> bytes:
    """MIDI bytes of copy `copy` of the file at `path` (validated as MIDI first)."""
    path = Path(path)
    params = draw_params(preset, stem or path.stem, copy)
    return augment_midi(path.read_bytes(), params, str(path))
