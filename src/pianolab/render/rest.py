"""Render without synthesising the rest at the end of a MIDI file.

PercePiano files can end ~20 s after their last event (the dataset's README), and a synthesiser renders
up to the end of the file (its voices are silent by then, but the samples are still made, converted
and resampled) before the trim throws them away. `render_skipping_rest` renders a copy that ends `TAIL_S` after the last
event and keeps it when the trimmed audio ends at least `GUARD_S` before that copy's end (the sound
has died away, and with no event left it cannot return); otherwise it renders the whole file. Either
way the result has the bits of the whole file's render (tested on real files).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import mido
import numpy as np

from pianolab.render.audio import finish

TAIL_S = 6.0  # s of release and reverb rendered after the last event
GUARD_S = 1.0  # s of silence that must end the shortened render for it to stand


def without_rest(midi: bytes, tail_s: float = TAIL_S) -> bytes | None:
    """The file with every track ending at most `tail_s` after its last event (at the tempo then in
    force); None when no track ends later than that (or for type 2 files, whose tracks play one after
    another, and files mido cannot read)."""
    try:
        mid = mido.MidiFile(file=io.BytesIO(midi))
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError):
        return None  # the synthesiser reports the bad file
    if mid.type == 2:
        return None
    last, tempos = 0, [(0, 500000)]
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type != "end_of_track":
                last = max(last, tick)
            if msg.type == "set_tempo":
                tempos.append((tick, msg.tempo))
    tempo = [t for tick, t in sorted(tempos, key=lambda t: t[0]) if tick <= last][-1]  # the file's over the default
    end = last + int(mido.second2tick(tail_s, mid.ticks_per_beat, tempo))
    cut = False
    for track in mid.tracks:
        tick = sum(msg.time for msg in track[:-1])
        if track and track[-1].type == "end_of_track" and tick + track[-1].time > end:
            track[-1] = track[-1].copy(time=max(0, end - tick))
            cut = True
    if not cut:
        return None
    out = io.BytesIO()
    mid.save(file=out)
    return out.getvalue()


def render_skipping_rest(synthesise: Callable[[bytes], tuple[np.ndarray, int]], midi: bytes,
                         rate_out: int, gain: float) -> np.ndarray:
    """`finish(*synthesise(midi), rate_out, gain)`, synthesising the file's final rest only when the
    sound is still audible `GUARD_S` before the end of the shortened copy."""
    short = without_rest(midi, TAIL_S)
    if short is not None:
        audio, rate = synthesise(short)
        wave = finish(audio, rate, rate_out, gain)
        if len(wave) <= len(audio) * rate_out / rate - GUARD_S * rate_out:
            return wave
    return finish(*synthesise(midi), rate_out, gain)
