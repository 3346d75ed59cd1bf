"""Recordings -> performance MIDI (notes, velocities, pedal) by registered transcribers, cached by
content (`transcribe_files`)."""

from pianolab.transcribe import transkun_v2  # noqa: F401  (registers 'transkun')
from pianolab.transcribe.base import DEFAULT_TRANSCRIBER, TRANSCRIBERS, make_transcriber, pick_device
from pianolab.transcribe.cache import transcribe_files

__all__ = ["DEFAULT_TRANSCRIBER", "TRANSCRIBERS", "make_transcriber", "pick_device", "transcribe_files"]
