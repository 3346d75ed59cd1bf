"""SpecAugment (Park et al. 2019) on device-resident spectrogram batches.

Frequency and time masks per sample, drawn from a torch.Generator on the batch's device: the same
generator state gives the same masks; everything stays on the device (no host syncs, no branching on
tensor values). Masked cells are filled with the sample's mean, so any spectrogram scaling works.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pianolab.presets import PRESETS


def _axis_masks(n: int, size: int, count: int, lo_frac: float, hi_frac: float,
                generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """(n, size) bool: the union of `count` bands per sample, each of width uniform in
    [floor(lo_frac * size), floor(hi_frac * size)] at a uniform start."""
    lo, hi = int(lo_frac * size), int(hi_frac * size)
    u = torch.rand(2, n, count, generator=generator, device=device)
    width = torch.floor(lo + u[0] * (hi - lo + 1))
    start = torch.floor(u[1] * (size - width + 1))
    pos = torch.arange(size, device=device)
    band = (pos >= start[..., None]) & (pos < (start + width)[..., None])  # (n, count, size)
    return band.any(1)


@dataclass(frozen=True)
class SpecAugment:
    """Masks `freq_masks` frequency bands and `time_masks` time spans per sample.

    Band widths are fractions of the axis (so any F and T work); each sample is augmented with
    probability `prob`. Call: `aug(spec (B, C, F, T), prob=None, generator=None) -> spec`.
    """

    prob: float = 1.0
    freq_masks: int = 2
    min_freq: float = 0.0
    max_freq: float = 0.15
    time_masks: int = 2
    min_time: float = 0.0
    max_time: float = 0.1

    def masks(self, spec: torch.Tensor, prob: float | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 1, F, T) bool: True where `spec` is masked."""
        n, _, f, t = spec.shape
        p = self.prob if prob is None else prob
        freq = _axis_masks(n, f, self.freq_masks, self.min_freq, self.max_freq, generator, spec.device)
        time = _axis_masks(n, t, self.time_masks, self.min_time, self.max_time, generator, spec.device)
        apply = torch.rand(n, generator=generator, device=spec.device) < p
        return (freq[:, None, :, None] | time[:, None, None, :]) & apply[:, None, None, None]

    def __call__(self, spec: torch.Tensor, prob: float | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        fill = spec.mean(dim=(1, 2, 3), keepdim=True)
        return torch.where(self.masks(spec, prob, generator), fill, spec)


def spec_augment_from_preset(name: str) -> SpecAugment:
    """SpecAugment with the probability of the named preset (`pianolab.presets.PRESETS`)."""
    return SpecAugment(prob=PRESETS.get(name).spec_augment_prob)
