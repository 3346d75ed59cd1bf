"""Registered feature kinds: what each needs (MIDI or audio), which settings change it, its names.

A kind's `uses` lists the FeatureSpec fields its output depends on: only those enter the cache key,
so e.g. changing the renderer does not invalidate symbolic features. `version` is bumped when the
computation changes, which invalidates old cache entries of that kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pianolab.registry import Registry

MIDI_FIELDS = ("kind", "augment", "copy")
AUDIO_FIELDS = (*MIDI_FIELDS, "renderer", "sample_rate")
SPEC_FIELDS = (*AUDIO_FIELDS, "frame_rate", "seconds", "length_policy", "max_seconds")


@dataclass(frozen=True)
class FeatureKind:
    """`input`: 'midi' (compute(midi_bytes, path, spec) -> (n,) array) or 'audio' (compute(wave, spec,
    device): device a torch device for its array work, or None for numpy);
    `spectrogram`: output is (C, bins, frames), computed in batches by spectrogram.compute_spectrograms;
    `uses_score`: it reads the performance's score (its cache key includes the score's hash);
    `warm_up(spec)`: compile what the kind JIT-compiles (librosa's or parangonar's numba kernels) in this
    process, so that parallel workers load it from numba's cache instead of compiling it at the same
    time: concurrent writers of that cache leave files that crash their readers (numba issue 10128)."""

    name: str
    input: str
    uses: tuple[str, ...]
    version: int = 1
    names: tuple[str, ...] | None = None
    compute: Callable | None = None
    spectrogram: bool = False
    warm_up: Callable | None = None
    uses_score: bool = False


FEATURE_KINDS: Registry[FeatureKind] = Registry("feature kind")


@lru_cache(maxsize=2)
def _notes(path: Path, data: bytes):
    """read_notes, once for the MIDI kinds of one file (their callers only read the arrays)."""
    from pianolab.features.midi import read_notes

    return read_notes(path, data)


def _symbolic(data: bytes, path: Path, spec) -> np.ndarray:
    from pianolab.features.symbolic import performance_features

    return performance_features(_notes(path, data))


def _score_path(path: Path) -> Path:
    """The score MIDI of a performance (given by the user or PercePiano's own; see features.scores)."""
    from pianolab.features.scores import score_for, score_midi

    return score_midi(score_for(path))


def _score_shift(path: Path, spec) -> int:
    """Semitones the score must move to match this copy of the performance (its augmentation's pitch shift)."""
    from pianolab.render.augment import draw_params

    return draw_params(spec.augment, Path(path).stem, spec.copy).shift


def _symbolic_aligned(data: bytes, path: Path, spec) -> np.ndarray:
    from pianolab.features.aligned import score_aligned_features
    from pianolab.features.symbolic import performance_features

    perf = _notes(path, data)
    return np.concatenate([performance_features(perf), score_aligned_features(
        path, _score_path(path), perf, score_shift=_score_shift(path, spec))])


def _symbolic_relative(data: bytes, path: Path, spec) -> np.ndarray:
    """The symbolic statistics of the performance minus those of its excerpt's deadpan score MIDI
    (transposed like the performance's augmented copy): what the performer changed, with what the
    music itself fixes (note rate, range, polyphony of the score) taken out."""
    from pianolab.features.aligned import transposed_score
    from pianolab.features.symbolic import performance_features

    score = transposed_score(_score_path(path), _score_shift(path, spec))
    return _symbolic(data, path, spec) - performance_features(score)


def _symbolic_expressive(data: bytes, path: Path, spec) -> np.ndarray:
    from pianolab.features.expressive import score_expressive_features

    return score_expressive_features(path, _score_path(path), _notes(path, data), _score_shift(path, spec))


def _classic(name: str) -> Callable:
    def compute(wave: np.ndarray, spec, device: str | None = None) -> np.ndarray:
        from pianolab.features.classic import classic_features

        return classic_features(wave, spec.sample_rate, name, device)

    return compute


def _warm_classic(name: str) -> Callable:
    def warm_up(spec) -> None:
        from pianolab.features.classic import classic_features

        noise = np.random.default_rng(0).standard_normal(2 * spec.sample_rate).astype(np.float32)
        classic_features(0.1 * noise, spec.sample_rate, name)

    return warm_up


def register_all() -> None:
    """Fill FEATURE_KINDS (idempotent); called lazily by the store so imports stay side-effect free."""
    if "symbolic" in FEATURE_KINDS:
        return
    from pianolab.features.aligned import ALIGNED_NAMES, warm_up_alignment
    from pianolab.features.classic import CLASSIC_SETS, classic_names
    from pianolab.features.expressive import EXPRESSIVE_NAMES
    from pianolab.features.spectrogram import SPECTROGRAMS
    from pianolab.features.symbolic import SYMBOLIC_NAMES

    FEATURE_KINDS.add("symbolic", FeatureKind("symbolic", "midi", MIDI_FIELDS, 1, SYMBOLIC_NAMES, _symbolic))
    # version 2: the aligner's random draws are seeded (version 1 could differ from call to call)
    FEATURE_KINDS.add("symbolic_aligned", FeatureKind("symbolic_aligned", "midi", MIDI_FIELDS, 2,
                                                      SYMBOLIC_NAMES + ALIGNED_NAMES, _symbolic_aligned,
                                                      warm_up=lambda spec: warm_up_alignment(), uses_score=True))
    FEATURE_KINDS.add("symbolic_relative", FeatureKind("symbolic_relative", "midi", MIDI_FIELDS, 1,
                                                       SYMBOLIC_NAMES, _symbolic_relative, uses_score=True))
    FEATURE_KINDS.add("symbolic_expressive", FeatureKind("symbolic_expressive", "midi", MIDI_FIELDS, 1,
                                                         EXPRESSIVE_NAMES, _symbolic_expressive,
                                                         warm_up=lambda spec: warm_up_alignment(), uses_score=True))
    for name in CLASSIC_SETS:
        kind = FeatureKind(name, "audio", AUDIO_FIELDS, 1, classic_names(name), _classic(name),
                           warm_up=_warm_classic(name))
        FEATURE_KINDS.add(name, kind)
    for name in SPECTROGRAMS:
        version = SPECTROGRAMS.get(name).version
        FEATURE_KINDS.add(name, FeatureKind(name, "audio", SPEC_FIELDS, version, spectrogram=True))


def get_kind(name: str) -> FeatureKind:
    register_all()
    return FEATURE_KINDS.get(name)
