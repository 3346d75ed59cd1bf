"""Why a file cannot be read as a piano performance, in one line (for `predict` and `data check`)."""

from __future__ import annotations

import io
from pathlib import Path

DRUM_CHANNEL = 9  # General MIDI channel 10, counted from 0


def midi_problem(path: Path | str) -> str | None:
    """The problem of the MIDI file `path` (missing, empty, not MIDI, truncated, type 2, no notes,
    drum channel only), or None when it holds piano notes."""
    import mido

    path = Path(path)
    if not path.exists():
        return "no such file or folder"
    if not path.is_file():
        return "not a file"
    try:
        data = path.read_bytes()
    except OSError as e:
        return f"unreadable ({e.__class__.__name__}: {e.strerror})"
    if not data:
        return "empty file, not a MIDI file"
    if not data.startswith(b"MThd"):
        return "not a MIDI file (no MThd header)"
    try:
        midi = mido.MidiFile(file=io.BytesIO(data))
    except EOFError:
        return "truncated MIDI file (it ends inside a track)"
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        return f"unreadable MIDI ({e.__class__.__name__}: {e})"
    if midi.type == 2:
        return "type-2 MIDI (independent sequences) is not supported; save it as type 0 or 1"
    channels = {msg.channel for track in midi.tracks for msg in track if msg.type == "note_on" and msg.velocity}
    if not channels:
        return "MIDI file has no notes"
    if channels == {DRUM_CHANNEL}:
        return "only drum-channel (10) notes, no piano notes"
    return None
