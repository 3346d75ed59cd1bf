"""Filter banks in numpy (no librosa at run time): Slaney mel filters and constant-Q kernels.

`mel_filters` equals `librosa.filters.mel(htk=False, norm="slaney")` (tested). `cqt_kernels` gives the
frequency responses of Hann-windowed complex exponentials, one per CQT bin, for use on an STFT of the
same `n_fft` with a rectangular window (see `spectrogram.CQT`).
"""

from __future__ import annotations

import numpy as np

_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(f, 1e-10) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log, lin)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


def mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float32 triangular filters, area-normalised (Slaney)."""
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


def cqt_frequencies(fmin: float, n_bins: int, bins_per_octave: int) -> np.ndarray:
    """(n_bins,) centre frequencies fmin * 2^(k / bins_per_octave)."""
    return fmin * 2.0 ** (np.arange(n_bins) / bins_per_octave)


def cqt_length(fmin: float, sr: int, bins_per_octave: int, filter_scale: float = 1.0) -> int:
    """Length in samples of the longest (lowest) kernel: Q * sr / fmin, Q = scale / (2^(1/b) - 1)."""
    q = filter_scale / (2.0 ** (1.0 / bins_per_octave) - 1)
    return int(np.ceil(q * sr / fmin))


def cqt_kernels(sr: int, n_fft: int, fmin: float, n_bins: int, bins_per_octave: int,
                filter_scale: float = 1.0) -> np.ndarray:
    """(n_bins, 1 + n_fft // 2) complex64: rfft of each L1-normalised, centred time-domain kernel.

    Applied as |(1/n_fft) * STFT_rect(x) @ conj(K).T| this equals the time-domain correlation of the
    frame with each kernel (Parseval; kernels are analytic, so negative frequencies carry ~0).
    """
    q = filter_scale / (2.0 ** (1.0 / bins_per_octave) - 1)
    kernels = np.zeros((n_bins, n_fft), dtype=np.complex128)
    for k, f in enumerate(cqt_frequencies(fmin, n_bins, bins_per_octave)):
        length = min(int(np.ceil(q * sr / f)), n_fft)
        t = np.arange(length) - length // 2
        sig = np.hanning(length + 2)[1:-1] * np.exp(2j * np.pi * f * t / sr)
        sig /= np.abs(sig).sum()
        kernels[k, (n_fft // 2 + t) % n_fft] = sig  # centred on sample n_fft // 2 of the frame
    return np.fft.fft(kernels, axis=1)[:, : 1 + n_fft // 2].astype(np.complex64)
