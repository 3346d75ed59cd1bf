"""Augmentation presets of the plan (A1), defined once for the renderer and the trainer.

MIDI-level parts (time stretch, pitch shift) are applied before rendering by `pianolab.render`;
spectrogram-level parts (SpecAugment, mixup probabilities) by the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from pianolab.registry import Registry


@dataclass(frozen=True)
class AugmentPreset:
    spec_augment_prob: float
    mixup_prob: float
    time_stretch_range: tuple[float, float]
    pitch_shift_range: tuple[int, int]
    velocity_jitter: int = 0  # +- MIDI velocity steps, MIDI level


PRESETS: Registry[AugmentPreset] = Registry("augmentation preset")
PRESETS.add("none", AugmentPreset(0.0, 0.0, (1.0, 1.0), (0, 0)))
PRESETS.add("light", AugmentPreset(0.3, 0.2, (0.95, 1.05), (-1, 1), 4))
PRESETS.add("medium", AugmentPreset(0.5, 0.3, (0.85, 1.15), (-2, 2), 8))
PRESETS.add("heavy", AugmentPreset(0.7, 0.5, (0.8, 1.2), (-3, 3), 12))
