"""The registry of audio -> performance-MIDI transcribers and what every transcriber provides.

A transcriber has `name`, `version` (what identifies its output: package version, weights, settings),
`sample_rate` (the rate its `transcribe` takes) and `transcribe(waves) -> list[pretty_midi.PrettyMIDI]`
for a batch of mono float32 waves at that rate.
"""

from __future__ import annotations

from pianolab.registry import Registry

TRANSCRIBERS: Registry[type] = Registry("transcriber")
DEFAULT_TRANSCRIBER = "transkun"


def pick_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def make_transcriber(name: str = DEFAULT_TRANSCRIBER, **options):
    """Build a registered transcriber; unknown names list the valid ones."""
    return TRANSCRIBERS.get(name)(**options)
