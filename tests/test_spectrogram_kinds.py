"""Spectrogram kinds deliver what their names promise: mel_128 is linear mel power and log_mel its dB,
multi_resolution holds log mel and CQT bins, and changed kinds carry a new cache version."""

from pathlib import Path

import numpy as np
import yaml

from pianolab.features.kinds import get_kind
from pianolab.features.spectrogram import DB_FLOOR, compute_spectrograms
from pianolab.features.store import FeatureSpec

SR, FR = 16000, 100
REPO = Path(__file__).resolve().parents[1]


def _chord(seconds: float = 1.5) -> np.ndarray:
    """A decaying A-major triad (A4, C#5, E5) with a few harmonics, like a struck piano chord."""
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(0.05 / h * np.sin(2 * np.pi * h * f * t) for f in (440.0, 554.37, 659.25) for h in (1, 2, 3))
    return (wave * np.exp(-2 * t)).astype(np.float32)


def test_mel_128_is_linear_power_and_log_mel_its_db():
    (linear,) = compute_spectrograms([_chord()], "mel_128", SR, FR)
    (db,) = compute_spectrograms([_chord()], "log_mel", SR, FR)
    assert linear.shape == db.shape == (1, 128, 150)
    assert linear.min() >= 0 and db.min() < 0  # power is never negative; quiet bands are negative dB
    np.testing.assert_allclose(db, 10 * np.log10(np.maximum(linear, DB_FLOOR)), atol=1e-3)
    assert linear.max() / np.median(linear) > 1e3  # a linear scale: the peaks dwarf the median


def test_multi_resolution_is_log_mel_over_cqt():
    wave = _chord()
    (multi,) = compute_spectrograms([wave], "multi_resolution", SR, FR)
    (mel,) = compute_spectrograms([wave], "log_mel", SR, FR)
    (cqt,) = compute_spectrograms([wave], "cqt", SR, FR)
    assert multi.shape == (1, 128 + 193, 150)
    np.testing.assert_allclose(multi[:, :128], mel, atol=1e-4)
    np.testing.assert_allclose(multi[:, 128:], cqt, atol=1e-4)
    frame = multi[0, 128:, 75]  # the CQT part resolves each note of the chord (24 bins per octave from A0)
    for f in (440.0, 554.37, 659.25):
        b = round(24 * np.log2(f / 27.5))
        assert frame[b] == frame[b - 1 : b + 2].max() and frame[b] > np.median(frame) + 20


def test_multi_window_mel_keeps_the_three_windows():
    (spec,) = compute_spectrograms([_chord()], "multi_window_mel", SR, FR)
    assert spec.shape == (3, 128, 150)
    # a tone's energy spreads over fewer mel bands with a longer window (finer frequency resolution)
    spread = [(ch[:, 75] > ch[:, 75].max() - 20).sum() for ch in spec]
    assert spread[0] > spread[2]


def test_changed_kinds_are_new_cache_entries():
    """The store's key holds the kind's version: arrays cached under the old meaning are not served."""
    assert {k: get_kind(k).version for k in ("mel_128", "multi_resolution", "log_mel", "cqt")} == \
        {"mel_128": 2, "multi_resolution": 2, "log_mel": 1, "cqt": 1}
    assert FeatureSpec("mel_128").relevant()["version"] == 2


def test_c2_variants_select_the_kind_they_are_named_after():
    exp = yaml.safe_load((REPO / "experiments" / "c2_spectrograms.yaml").read_text())
    assert exp["baseline"]["features"]["spectrogram"] == "log_mel"
    for name, change in exp["variants"].items():
        assert change == {"features.spectrogram": name}
        get_kind(name)
    assert {"mel_128", "multi_resolution", "multi_window_mel", "cqt"} <= set(exp["variants"])
