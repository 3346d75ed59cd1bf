"""Spectrogram front ends on torch: one code path for CPU and GPU, batched.

Every front end maps waves (B, samples) -> (B, channels, bins, samples // hop), hop = sample_rate /
frame_rate (default 160 samples = 10 ms). Frames are centred with zero padding (not reflection), so a
wave padded with zeros inside a batch gives the same frames as the wave alone (tested). Compression
(every kind but `mel_128`) is in dB at a fixed floor (-100 dB; no per-file reference), so loudness stays
comparable.

Registered kinds (fmin 20 Hz, fmax 8000 Hz for the mels; `version` enters the feature cache key):
- `mel_128`: 128 mel bands of linear power (no log), 25 ms Hann window, n_fft 1024: `log_mel` before
  its compression (version 2; version 1 was dB with a 64 ms window).
- `log_mel`: the same 128 mel bands in dB (the AST / Kaldi fbank time resolution).
- `mel_256`: 256 mel bands in dB, 128 ms Hann window (n_fft 2048: 256 bands need the finer FFT).
- `cqt`: constant-Q in dB, 24 bins per octave from A0 (27.5 Hz) up to 0.45 * sample_rate (193 bins at
  16 kHz), computed as an STFT with a rectangular window times a frequency-domain kernel bank (filters.py).
- `multi_resolution`: mel and CQT combined: `log_mel`'s 128 bands (25 ms, fine in time) then `cqt`'s
  bins (long windows in the bass, fine in pitch) on one frequency axis, 1 x (128 + 193) at 16 kHz
  (version 2; version 1 is today's `multi_window_mel`).
- `multi_window_mel`: 3 channels of 128-band dB mel with 32, 64 and 128 ms windows.
Length policies (applied to the wave before the front end): `crop` = first `seconds`, zero-padded;
`pad` = whole performance zero-padded (or cut) to `max_seconds`; `windows` = whole performance
zero-padded to a whole number of `seconds` windows (cut it with `split_windows`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from pianolab.features.filters import cqt_kernels, cqt_length, mel_filters
from pianolab.registry import Registry

FMIN, FMAX = 20.0, 8000.0


@dataclass(frozen=True)
class SpectrogramKind:
    """`build(sample_rate, frame_rate)` -> the front end module; `version` is bumped when its output changes."""

    build: Callable[[int, int], nn.Module]
    version: int = 1


DB_FLOOR = 1e-10  # power floor: -100 dB
SPECTROGRAMS: Registry[SpectrogramKind] = Registry("spectrogram kind")
LENGTH_POLICIES: Registry[Callable[..., np.ndarray]] = Registry("length policy")


def _pow2(n: float) -> int:
    return 1 << math.ceil(math.log2(max(n, 2)))


def _stft(x: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """(B, samples) -> (B, 1 + n_fft // 2, samples // hop) complex, frames centred, zero padded."""
    frames = x.shape[-1] // hop
    x = nn.functional.pad(x, (n_fft // 2, n_fft // 2))
    spec = torch.stft(x, n_fft, hop, window=window, center=False, return_complex=True)
    return spec[..., :frames]


class Mel(nn.Module):
    """(B, samples) -> (B, len(windows_s), n_mels, frames) mel power, one channel per window; in dB
    (floor -100 dB) when `db`."""

    def __init__(self, sample_rate: int, frame_rate: int, n_mels: int, windows_s: tuple[float, ...],
                 n_fft: int | None = None, db: bool = True):
        super().__init__()
        self.hop, self.db = sample_rate // frame_rate, db
        self.n_fft = n_fft or _pow2(max(windows_s) * sample_rate)
        self.register_buffer("fb", torch.from_numpy(mel_filters(sample_rate, self.n_fft, n_mels, FMIN,
                                                                min(FMAX, sample_rate / 2))))
        for i, w in enumerate(windows_s):
            win = torch.hann_window(int(round(w * sample_rate)), periodic=True, dtype=torch.float64)
            pad = self.n_fft - len(win)
            self.register_buffer(f"win{i}", nn.functional.pad(win, (pad // 2, pad - pad // 2)).float())
        self.n_windows = len(windows_s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(self.n_windows):
            mel = self.fb @ _stft(x, self.n_fft, self.hop, getattr(self, f"win{i}")).abs() ** 2
            out.append(10 * torch.log10(torch.clamp(mel, min=DB_FLOOR)) if self.db else mel)
        return torch.stack(out, 1)


class CQT(nn.Module):
    """(B, samples) -> (B, 1, n_bins, frames) dB constant-Q magnitude.

    Kernels are applied octave by octave, each on the STFT rows where that octave's kernels exceed
    `SPARSITY` of their peak (the rest is ~0), which is several times cheaper than the dense product.
    """

    SPARSITY = 1e-4

    def __init__(self, sample_rate: int, frame_rate: int, fmin: float = 27.5, bins_per_octave: int = 24):
        super().__init__()
        self.hop = sample_rate // frame_rate
        n_bins = int(bins_per_octave * math.log2(0.45 * sample_rate / fmin)) + 1
        self.n_fft = _pow2(cqt_length(fmin, sample_rate, bins_per_octave))
        k = np.conj(cqt_kernels(sample_rate, self.n_fft, fmin, n_bins, bins_per_octave)) / self.n_fft
        self.rows: list[tuple[int, int]] = []
        for g, start in enumerate(range(0, n_bins, bins_per_octave)):
            block = k[start : start + bins_per_octave]
            live = np.flatnonzero(np.abs(block).max(0) > self.SPARSITY * np.abs(block).max())
            lo, hi = int(live.min()), int(live.max()) + 1
            self.rows.append((lo, hi))
            self.register_buffer(f"k{g}", torch.from_numpy(block[:, lo:hi].T.copy()))
        self.register_buffer("window", torch.ones(self.n_fft))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = _stft(x, self.n_fft, self.hop, self.window).transpose(1, 2)  # (B, frames, F)
        parts = [spec[..., lo:hi] @ getattr(self, f"k{g}") for g, (lo, hi) in enumerate(self.rows)]
        mag = torch.cat(parts, -1).abs().transpose(1, 2)  # (B, n_bins, frames)
        return (20 * torch.log10(torch.clamp(mag, min=DB_FLOOR**0.5))).unsqueeze(1)


class Stacked(nn.Module):
    """(B, samples) -> (B, 1, sum of bins, frames): single-channel front ends on one frequency axis."""

    def __init__(self, *parts: nn.Module):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.hop = parts[0].hop  # every part has the same hop (sample_rate // frame_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts], -2)


def _log_mel(sr: int, fr: int, db: bool = True) -> Mel:
    return Mel(sr, fr, 128, (0.025,), n_fft=_pow2(0.064 * sr), db=db)


SPECTROGRAMS.add("mel_128", SpectrogramKind(lambda sr, fr: _log_mel(sr, fr, db=False), 2))
SPECTROGRAMS.add("mel_256", SpectrogramKind(lambda sr, fr: Mel(sr, fr, 256, (0.128,))))
SPECTROGRAMS.add("log_mel", SpectrogramKind(_log_mel))
SPECTROGRAMS.add("cqt", SpectrogramKind(CQT))
SPECTROGRAMS.add("multi_resolution", SpectrogramKind(lambda sr, fr: Stacked(_log_mel(sr, fr), CQT(sr, fr)), 2))
SPECTROGRAMS.add("multi_window_mel", SpectrogramKind(lambda sr, fr: Mel(sr, fr, 128, (0.032, 0.064, 0.128))))


@LENGTH_POLICIES.register("crop")
def _crop(x: np.ndarray, sr: int, seconds: float, max_seconds: float) -> np.ndarray:
    n = int(round(seconds * sr))
    return np.pad(x[:n], (0, max(0, n - len(x))))


@LENGTH_POLICIES.register("pad")
def _pad(x: np.ndarray, sr: int, seconds: float, max_seconds: float) -> np.ndarray:
    return _crop(x, sr, max_seconds, max_seconds)


@LENGTH_POLICIES.register("windows")
def _windows(x: np.ndarray, sr: int, seconds: float, max_seconds: float) -> np.ndarray:
    n = int(round(seconds * sr))
    return np.pad(x, (0, max(1, math.ceil(len(x) / n)) * n - len(x)))


def split_windows(spec: np.ndarray, frames: int, hop: int | None = None) -> np.ndarray:
    """(C, bins, T) -> (n_windows, C, bins, frames) windows every `hop` frames (default: no overlap)."""
    hop = hop or frames
    starts = range(0, max(spec.shape[-1] - frames, 0) + 1, hop)
    return np.stack([spec[..., s : s + frames] for s in starts])


@lru_cache(maxsize=16)
def frontend(kind: str, sample_rate: int, frame_rate: int, device: str) -> nn.Module:
    """The registered front end `kind` on `device`, built once per process."""
    return SPECTROGRAMS.get(kind).build(sample_rate, frame_rate).to(device)


@torch.no_grad()
def compute_spectrograms(waves: list[np.ndarray], kind: str, sample_rate: int, frame_rate: int,
                         device: str | torch.device = "cpu", batch_size: int = 8) -> list[np.ndarray]:
    """Waves (samples_i,) -> float32 arrays (C, bins, samples_i // hop), in batches on `device`.

    Waves of a batch are zero-padded to the longest and each output cut to its own frame count,
    which equals computing them one by one (up to float tolerance).
    """
    module = frontend(kind, sample_rate, frame_rate, str(device))
    out: list[np.ndarray | None] = [None] * len(waves)
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        longest = max(len(waves[i]) for i in idx)
        batch = np.zeros((len(idx), longest), dtype=np.float32)
        for j, i in enumerate(idx):
            batch[j, : len(waves[i])] = waves[i]
        spec = module(torch.from_numpy(batch).to(device)).float().cpu().numpy()
        for j, i in enumerate(idx):
            out[i] = np.ascontiguousarray(spec[j, ..., : len(waves[i]) // module.hop])
    return out
