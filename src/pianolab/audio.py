"""Read recorded audio: WAV, FLAC, OGG and MP3 through libsndfile (soundfile), audioread for what
libsndfile cannot decode, downmixed to mono and resampled with soxr.

`load_audio(path, rate)` -> (samples,) float32 in [-1, 1]; a file that is not audio, or whose suffix is
not one of `AUDIO_SUFFIXES`, raises a one-line `PianolabError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pianolab.errors import PianolabError, fail

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def is_audio(path: Path) -> bool:
    return Path(path).suffix.lower() in AUDIO_SUFFIXES


def _soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return audio, rate


def _audioread(path: Path) -> tuple[np.ndarray, int]:
    import audioread

    with audioread.audio_open(str(path)) as f:
        rate, channels = f.samplerate, f.channels
        pcm = np.frombuffer(b"".join(f), dtype="<i2")
    return (pcm.astype(np.float32) / 32768.0).reshape(-1, channels), rate


def decode(path: Path) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 and the file's sample rate; soundfile first, then audioread."""
    path = Path(path)
    if not is_audio(path):
        raise fail(path, f"unsupported audio format {path.suffix or '(no suffix)'!r}; "
                         f"accepted: {', '.join(AUDIO_SUFFIXES)}")
    if not path.is_file():
        raise fail(path, "no such file")
    problems = []
    for reader in (_soundfile, _audioread):
        try:
            audio, rate = reader(path)
        except Exception as e:  # each library raises its own types for undecodable input
            problems.append(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
            continue
        if audio.size == 0:
            raise fail(path, "audio file holds no samples")
        return audio, int(rate)
    raise fail(path, f"unreadable audio ({problems[0]})")


def load_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of `path` at `sample_rate` (channel mean, soxr high quality)."""
    from pianolab.render.audio import downmix, resample

    audio, rate = decode(path)
    if not np.isfinite(audio).all():
        raise PianolabError(f"{path}: audio holds NaN or infinite samples")
    return resample(downmix(audio), rate, sample_rate)
