"""Classic audio features (librosa) as summary statistics of one rendered performance.

Frame-level descriptors use a 2048-sample window and a 512-sample hop on the whole (trimmed) render.
Each descriptor d is summarised as `d_mean`, `d_std`, `d_p10`, `d_p50`, `d_p90`, except where noted.
Named sets (`CLASSIC_SETS`):
- `spectral_only`: spectral centroid, rolloff (85 %), bandwidth (Hz).
- `mfcc_only`: MFCC 0..12 (`mfcc{k}_*`, 128 mel bands).
- `temporal_only`: `tempo_bpm` (librosa beat tracker), `onset_rate` (onsets per second),
  `beat_ioi_cv` (std / mean of inter-beat intervals: beat consistency), `onset_strength_*`, `rms_*`.
- `harmonic_only`: `chroma{0..11}_mean`/`_std` (pitch class C..B, STFT chroma), `harmonic_ratio`
  (harmonic energy / total after HPSS), `key_strength` (max Pearson r of the mean chroma with the 24
  rotated Krumhansl-Kessler key profiles), `key_clarity` (best minus second-best r).
- `all_traditional`: all of the above.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from pianolab.registry import Registry

N_FFT, HOP = 2048, 512
STATS = ("mean", "std", "p10", "p50", "p90")
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# each descriptor function: (Spectra of one wave, device for array work or None) -> {name: value}
CLASSIC_SETS: Registry[tuple[Callable[..., dict[str, float]], ...]] = Registry("classic set")


class Spectra:
    """One wave and its analyses, each computed once for all the descriptors of a set: the magnitude
    STFT (2048 / 512), its power and the 128-band log-power mel spectrogram built from it. librosa
    computes the same arrays from `y` inside `mfcc`, `onset_strength` and `chroma_stft` (the same
    values: tested)."""

    def __init__(self, y: np.ndarray, sr: int):
        self.y, self.sr = y, sr

    @functools.cached_property
    def mag(self) -> np.ndarray:
        import librosa

        return np.abs(librosa.stft(self.y, n_fft=N_FFT, hop_length=HOP))

    @functools.cached_property
    def power(self) -> np.ndarray:
        return self.mag**2

    @functools.cached_property
    def mel_db(self) -> np.ndarray:
        import librosa

        return librosa.power_to_db(librosa.feature.melspectrogram(S=self.power, sr=self.sr, n_mels=128))


def _stats(prefix: str, x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64).ravel()
    if not len(x):
        return {f"{prefix}_{s}": 0.0 for s in STATS}
    p10, p50, p90 = np.percentile(x, [10, 50, 90])
    return dict(zip([f"{prefix}_{s}" for s in STATS], [x.mean(), x.std(), p10, p50, p90], strict=True))


def spectral(x: Spectra, device: str | None = None) -> dict[str, float]:
    import librosa

    s, sr = x.mag, x.sr
    return {**_stats("centroid", librosa.feature.spectral_centroid(S=s, sr=sr)),
            **_stats("rolloff", librosa.feature.spectral_rolloff(S=s, sr=sr, roll_percent=0.85)),
            **_stats("bandwidth", librosa.feature.spectral_bandwidth(S=s, sr=sr))}


def mfcc(x: Spectra, device: str | None = None) -> dict[str, float]:
    import librosa

    m = librosa.feature.mfcc(S=x.mel_db, n_mfcc=13)
    return {k: v for i in range(13) for k, v in _stats(f"mfcc{i}", m[i]).items()}


def temporal(x: Spectra, device: str | None = None) -> dict[str, float]:
    import librosa

    y, sr = x.y, x.sr
    env = librosa.onset.onset_strength(S=x.mel_db, sr=sr, hop_length=HOP)
    tempo, beats = librosa.beat.beat_track(onset_envelope=env, sr=sr, hop_length=HOP)
    onsets = librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=HOP)
    ibi = np.diff(librosa.frames_to_time(beats, sr=sr, hop_length=HOP))
    cv = float(ibi.std() / ibi.mean()) if len(ibi) > 1 and ibi.mean() > 0 else 0.0
    rms = librosa.feature.rms(y=y, frame_length=N_FFT, hop_length=HOP)
    return {"tempo_bpm": float(np.atleast_1d(tempo)[0]), "onset_rate": len(onsets) / (len(y) / sr),
            "beat_ioi_cv": cv, **_stats("onset_strength", env), **_stats("rms", rms)}


def median_filter(x: np.ndarray, width: int, axis: int, device: str | None = None) -> np.ndarray:
    """Median over an odd `width` along `axis`, edges mirrored as scipy.ndimage's "reflect" (numpy's
    "symmetric"): the values of `scipy.ndimage.median_filter`, by a partial sort of sliding windows
    (about 2x faster), or with torch on `device` (a median is one of the window's values, so every
    device gives the same array)."""
    pad = [(0, 0)] * x.ndim
    pad[axis] = (width // 2, width // 2)
    padded = np.pad(x, pad, mode="symmetric")
    if device is not None:
        import torch

        windows = torch.from_numpy(padded).to(device).unfold(axis, width, 1)
        return windows.median(dim=-1).values.cpu().numpy()
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=axis)
    return np.partition(windows, width // 2, axis=-1)[..., width // 2]


def harmonic_ratio(mag: np.ndarray, kernel: int = 31, device: str | None = None) -> float:
    """Share of the power in the harmonic part of librosa's HPSS (median filters of `kernel` bins /
    frames, soft Wiener masks of power 2, margin 1) of the magnitude spectrogram `mag` (freq, time),
    without building the complex harmonic and percussive spectrograms; the filters run on `device`
    (a torch device) when one is given."""
    harm, perc = median_filter(mag, kernel, axis=1, device=device), median_filter(mag, kernel, axis=0, device=device)
    z = np.maximum(harm, perc)
    silent = z < np.finfo(mag.dtype).tiny
    z[silent] = 1.0
    h2, p2 = (harm / z) ** 2, (perc / z) ** 2
    mask = np.where(silent, 0.5, h2 / np.where(silent, 1.0, h2 + p2))
    power = mag.astype(np.float64) ** 2
    total = power.sum()
    return float((power * mask**2).sum() / total) if total > 0 else 0.0


def harmonic(x: Spectra, device: str | None = None) -> dict[str, float]:
    import librosa

    chroma = librosa.feature.chroma_stft(S=x.power, sr=x.sr)
    f = {f"chroma{i}_{s_}": float(fn(chroma[i])) for i in range(12) for s_, fn in (("mean", np.mean),
                                                                                    ("std", np.std))}
    f["harmonic_ratio"] = harmonic_ratio(x.mag, device=device)
    mean = chroma.mean(axis=1)
    rs = sorted((np.corrcoef(mean, np.roll(p, k))[0, 1] if mean.std() > 0 else 0.0)
                for p in (_MAJOR, _MINOR) for k in range(12))
    f["key_strength"], f["key_clarity"] = float(rs[-1]), float(rs[-1] - rs[-2])
    return f


def _stat_names(*prefixes: str) -> tuple[str, ...]:
    return tuple(f"{p}_{s}" for p in prefixes for s in STATS)


spectral.names = _stat_names("centroid", "rolloff", "bandwidth")
mfcc.names = _stat_names(*(f"mfcc{i}" for i in range(13)))
temporal.names = ("tempo_bpm", "onset_rate", "beat_ioi_cv", *_stat_names("onset_strength", "rms"))
harmonic.names = (*(f"chroma{i}_{s}" for i in range(12) for s in ("mean", "std")), "harmonic_ratio",
                  "key_strength", "key_clarity")
CLASSIC_SETS.add("spectral_only", (spectral,))
CLASSIC_SETS.add("mfcc_only", (mfcc,))
CLASSIC_SETS.add("temporal_only", (temporal,))
CLASSIC_SETS.add("harmonic_only", (harmonic,))
CLASSIC_SETS.add("all_traditional", (spectral, mfcc, temporal, harmonic))


def classic_names(name: str) -> tuple[str, ...]:
    """Feature names of the set `name`, in output order."""
    return tuple(n for fn in CLASSIC_SETS.get(name) for n in fn.names)


def classic_features(y: np.ndarray, sr: int, name: str, device: str | None = None) -> np.ndarray:
    """(samples,) float32 wave -> (n_features,) float32 of the set `name` (order: `classic_names`);
    `device`: a torch device for the HPSS median filters (the same values as numpy's, faster on a GPU)."""
    y = np.asarray(y, dtype=np.float32)
    if len(y) < N_FFT:
        y = np.pad(y, (0, N_FFT - len(y)))
    f: dict[str, float] = {}
    spectra = Spectra(y, sr)
    for fn in CLASSIC_SETS.get(name):
        f.update(fn(spectra, device))
    return np.nan_to_num(np.array([f[k] for k in classic_names(name)], dtype=np.float32))
