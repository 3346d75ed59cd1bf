"""Post-processing shared by every renderer: WAV decode, numpy downmix, fixed gain, resample, trim.

All steps are deterministic (no dither) and never normalise a file to its own peak: loudness is what
the performer played. Trailing silence is trimmed at a fixed absolute threshold.
"""

from __future__ import annotations

import io
import wave

import numpy as np

from pianolab.errors import PianolabError

TRIM_DB = -70.0  # dBFS (absolute, full scale = 1.0): frames quieter than this count as silence
TRIM_FRAME_S = 0.01  # s: RMS frame for the trim decision
TRIM_KEEP_S = 0.2  # s: tail kept after the last frame above the threshold


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """PCM WAV bytes -> ((samples, channels) float32 in [-1, 1], sample rate)."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise PianolabError(f"renderer returned unreadable WAV ({e})") from None
    dtype = {2: "<i2", 4: "<i4"}.get(width)
    if dtype is None:
        raise PianolabError(f"renderer returned {8 * width}-bit WAV; expected 16 or 32 bit PCM")
    pcm = np.frombuffer(raw, dtype=dtype).reshape(-1, channels)
    return pcm.astype(np.float32) / float(2 ** (8 * width - 1)), rate


def downmix(audio: np.ndarray) -> np.ndarray:
    """(samples, channels) -> (samples,) mean of the channels."""
    return audio.mean(axis=1, dtype=np.float32) if audio.ndim == 2 else audio.astype(np.float32)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """(samples,) float32 resampled with soxr (high quality, deterministic)."""
    if rate_in == rate_out:
        return x
    import soxr

    return soxr.resample(x, rate_in, rate_out, quality="HQ").astype(np.float32)


def trim_trailing_silence(x: np.ndarray, rate: int, db: float = TRIM_DB) -> np.ndarray:
    """(samples,) -> prefix that ends `TRIM_KEEP_S` after the last frame louder than `db` dBFS."""
    hop = max(1, int(rate * TRIM_FRAME_S))
    n = len(x) // hop
    if n == 0:
        return x
    rms = np.sqrt((x[: n * hop].reshape(n, hop).astype(np.float64) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > 10 ** (db / 20))
    if not len(loud):
        return x[:0]
    end = min(len(x), (loud[-1] + 1) * hop + int(rate * TRIM_KEEP_S))
    return x[:end]


def finish(audio: np.ndarray, rate_in: int, rate_out: int, gain: float) -> np.ndarray:
    """Renderer output (samples, channels) -> (samples,) float32 at `rate_out`, fixed gain, trimmed."""
    mono = downmix(audio) * np.float32(gain)
    return trim_trailing_silence(resample(mono, rate_in, rate_out), rate_out)
