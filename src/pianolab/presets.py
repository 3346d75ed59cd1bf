"""Augmentation presets of the plan (A1), defined once for the renderer and the trainer.

MIDI-level parts (time stretch, pitch shift, velocity jitter) are applied before rendering by
`pianolab.render`, to the `features.augment_factor - 1` augmented copies only; spectrogram-level parts
(SpecAugment, mixup probabilities) by the trainer. `spec_light`/`spec_medium`/`spec_heavy` are the
spectrogram-level parts alone, for training without augmented copies (a full preset there is refused:
its MIDI-level parts would do nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
for _name in ("light", "medium", "heavy"):
    PRESETS.add(f"spec_{_name}", replace(PRESETS.get(_name), time_stretch_range=(1.0, 1.0), pitch_shift_range=(0, 0),
                                         velocity_jitter=0))
