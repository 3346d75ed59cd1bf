"""Read a MIDI file into plain arrays (notes and controllers in seconds) with one-line errors.

Used by the symbolic features, the score alignment and the MIDI-level augmentation. Only `mido`.
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np

from pianolab.errors import fail

NOTE_FIELDS = ("onset", "offset", "pitch", "velocity")
DEFAULT_TEMPO = 500000  # us per quarter until the first set_tempo
_END = mido.MetaMessage("end_of_track")  # the merged file's one end, at its last event


@dataclass(frozen=True)
class MidiNotes:
    """`notes`: (n, 4) float64 rows (onset s, offset s, pitch, velocity), sorted by onset then pitch.

    `controls[number]`: (m, 2) rows (time s, value) of that controller, in time order.
    `quarters`: (n,) onsets in quarter notes (ticks / ticks_per_beat), for score files.
    `end`: time of the last event in seconds.
    """

    notes: np.ndarray
    controls: dict[int, np.ndarray] = field(default_factory=dict)
    quarters: np.ndarray | None = None
    quarter_durations: np.ndarray | None = None
    end: float = 0.0

    def control(self, number: int) -> np.ndarray:
        return self.controls.get(number, np.zeros((0, 2)))


def open_midi(path: Path | str, data: bytes | None = None) -> mido.MidiFile:
    """Parse a MIDI file (or its bytes `data`, named `path` in errors); failures name the file."""
    path = Path(path)
    if data is None and not path.is_file():
        raise fail(path, "MIDI file not found")
    data = path.read_bytes() if data is None else data
    if not data:
        raise fail(path, "empty file, not a MIDI file")
    try:
        return mido.MidiFile(file=io.BytesIO(data))
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as e:
        raise fail(path, f"unreadable MIDI ({e.__class__.__name__}: {e})") from None


def _merged_events(tracks: list[mido.MidiTrack]) -> list[tuple[int, mido.Message]]:
    """(absolute tick, message) of every track in time order, ties in track order: the order of
    `mido.merge_tracks`, without its two validated copies of every message (most of a read's time)."""
    events = []
    for track in tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            events.append((tick, msg))
    events.sort(key=lambda event: event[0])
    return events


def read_notes(path: Path | str, data: bytes | None = None) -> MidiNotes:
    """Notes and controllers of a MIDI file (or its bytes) in seconds; PianolabError when no notes."""
    midi = open_midi(path, data)
    tpb = midi.ticks_per_beat
    open_notes: dict[tuple[int, int], list[tuple[float, int, int]]] = defaultdict(list)
    notes, quarters = [], []
    controls: dict[int, list[tuple[float, int]]] = defaultdict(list)
    try:
        merged = _merged_events(midi.tracks if midi.type != 2 else midi.tracks[:1])
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as e:
        raise fail(path, f"unreadable MIDI ({e.__class__.__name__}: {e})") from None
    t, tick, tempo = 0.0, 0, DEFAULT_TEMPO
    for tk, msg in merged + [(merged[-1][0] if merged else 0, _END)]:
        if msg.type == "end_of_track" and msg is not _END:
            continue  # as in mido.merge_tracks: the time runs on to the next event, in one step
        t += (tk - tick) * tempo / (1e6 * tpb)
        tick = tk
        if msg.type == "set_tempo":
            tempo = msg.tempo
        if msg.type == "note_on" and msg.velocity > 0:
            open_notes[(msg.channel, msg.note)].append((t, msg.velocity, tk))
        elif msg.type in ("note_off", "note_on"):
            stack = open_notes.get((msg.channel, msg.note))
            if stack:
                on, vel, on_tick = stack.pop(0)
                notes.append((on, t, msg.note, vel))
                quarters.append((on_tick / tpb, (tk - on_tick) / tpb))
        elif msg.type == "control_change":
            controls[msg.control].append((t, msg.value))
    for (_, pitch), stack in open_notes.items():
        for on, vel, on_tick in stack:
            notes.append((on, t, pitch, vel))
            quarters.append((on_tick / tpb, (tick - on_tick) / tpb))
    if not notes:
        raise fail(path, "MIDI file has no notes")
    arr = np.array(notes, dtype=np.float64)
    q = np.array(quarters, dtype=np.float64)
    order = np.lexsort((arr[:, 2], arr[:, 0]))
    ctrl = {k: np.array(v, dtype=np.float64) for k, v in controls.items()}
    return MidiNotes(arr[order], ctrl, q[order, 0], q[order, 1], end=t)

