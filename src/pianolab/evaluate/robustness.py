"""Input transforms for robustness tests (pure functions on float audio of shape (..., samples))
and the report of the metric drop they cause.

Each transform's effect is measurable: `measured_snr_db` for noise, the length ratio for time
stretch, the spectrum above the cutoff for the low-pass, the quantisation grid for bit depth, and
the decay of the impulse response (`reverb_ir`) for reverb.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.signal import butter, fftconvolve, sosfiltfilt

from pianolab.data.percepiano import DIMENSIONS
from pianolab.evaluate.metrics import MetricResult
from pianolab.registry import Registry

TRANSFORMS: Registry[Callable[..., np.ndarray]] = Registry("robustness transform")


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def measured_snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """10·log10(P(clean) / P(noisy − clean)) in dB."""
    return 10.0 * np.log10(_power(clean) / _power(np.asarray(noisy) - clean))


@TRANSFORMS.register("noise")
def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise scaled so that the achieved SNR is exactly `snr_db`."""
    audio = np.asarray(audio, dtype=np.float64)
    p_sig = _power(audio)
    if p_sig == 0:
        raise ValueError("add_noise: the input is silent; SNR is undefined")
    noise = rng.standard_normal(audio.shape)
    noise *= np.sqrt(p_sig / (_power(noise) * 10.0 ** (snr_db / 10.0)))
    return audio + noise


@TRANSFORMS.register("time_stretch")
def time_stretch(audio: np.ndarray, rate: float) -> np.ndarray:
    """Phase-vocoder time stretch (librosa), pitch kept: rate 2 plays twice as fast (half as many
    samples), rate 0.5 twice as slow. Some labels (tempo, timing) legitimately depend on it."""
    import librosa

    if rate <= 0:
        raise ValueError(f"time_stretch: rate must be > 0, got {rate}")
    return librosa.effects.time_stretch(np.asarray(audio, dtype=np.float32), rate=rate).astype(np.float64)


@TRANSFORMS.register("lowpass")
def lowpass(audio: np.ndarray, sr: int, cutoff: float, order: int = 8) -> np.ndarray:
    """Zero-phase Butterworth low-pass (`order` per pass, applied forward and backward)."""
    if not 0 < cutoff < sr / 2:
        raise ValueError(f"lowpass: cutoff must lie in (0, {sr / 2}) Hz, got {cutoff}")
    sos = butter(order, cutoff, btype="low", fs=sr, output="sos")
    return sosfiltfilt(sos, np.asarray(audio, dtype=np.float64), axis=-1)


@TRANSFORMS.register("bit_depth")
def bit_depth(audio: np.ndarray, bits: int) -> np.ndarray:
    """Clip to [-1, 1] and quantise to a signed `bits`-bit grid of step 1 / (2^(bits-1) − 1)."""
    if not 2 <= bits <= 24:
        raise ValueError(f"bit_depth: bits must lie in 2..24, got {bits}")
    q = 2 ** (bits - 1) - 1
    return np.round(np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0) * q) / q


def reverb_ir(sr: int, rt60: float, seed: int = 0) -> np.ndarray:
    """Impulse response (rt60·sr samples): a unit direct path followed by Gaussian noise under an
    exponential envelope 10^(−3 t / rt60) (−60 dB at t = rt60), energy-normalised."""
    n = max(2, int(round(rt60 * sr)))
    t = np.arange(n) / sr
    ir = np.random.default_rng(seed).standard_normal(n) * 10.0 ** (-3.0 * t / rt60)
    ir[0] = 1.0
    return ir / np.sqrt(np.sum(ir**2))


@TRANSFORMS.register("reverb")
def small_room_reverb(audio: np.ndarray, sr: int, rt60: float = 0.3, seed: int = 0) -> np.ndarray:
    """Convolve with `reverb_ir(sr, rt60, seed)`, keep the input length, restore the input RMS."""
    if rt60 <= 0:
        raise ValueError(f"small_room_reverb: rt60 must be > 0, got {rt60}")
    audio = np.asarray(audio, dtype=np.float64)
    ir = reverb_ir(sr, rt60, seed).reshape((1,) * (audio.ndim - 1) + (-1,))
    wet = fftconvolve(audio, ir, axes=-1)[..., : audio.shape[-1]]
    p_wet = _power(wet)
    return wet * np.sqrt(_power(audio) / p_wet) if p_wet > 0 else wet


def robustness_report(
    clean: Mapping[str, MetricResult],
    perturbed: Mapping[str, Mapping[str, MetricResult]],
    dims: Sequence[str] = DIMENSIONS,
) -> pd.DataFrame:
    """Metric drop per condition, metric and dimension.

    clean: {metric: MetricResult} on the clean test set; perturbed: {condition: {metric: result}}.
    Returns a long DataFrame [condition, metric, dim, clean, perturbed, drop] with dim 'overall'
    first; `drop` is positive when the perturbation made the metric worse (sign from
    `higher_is_better`).
    """
    rows = []
    for cond, results in perturbed.items():
        for name, res in results.items():
            ref = clean[name]
            sign = 1.0 if ref.higher_is_better else -1.0
            pairs = [("overall", ref.value, res.value)]
            if ref.per_dim is not None and res.per_dim is not None:
                labels = dims if len(dims) == len(ref.per_dim) else [str(i) for i in range(len(ref.per_dim))]
                pairs += list(zip(labels, ref.per_dim, res.per_dim, strict=True))
            rows += [{"condition": cond, "metric": name, "dim": d, "clean": float(c), "perturbed": float(p),
                      "drop": sign * (float(c) - float(p))} for d, c, p in pairs]
    return pd.DataFrame(rows, columns=["condition", "metric", "dim", "clean", "perturbed", "drop"])
