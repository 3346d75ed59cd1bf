"""Score-aligned performance features: timing, dynamics and articulation relative to the score.

Alignment: parangonar's `AutomaticNoteMatcher` (symbolic note matching) between the score note array
(from the excerpt group's score MIDI, positions in quarter notes) and the performance note array. Only
`match` pairs are used. Its coarse piano-roll DTW runs on parangonar's numba-compiled weighted DTW with
unit weights (`CompiledDTW`: the same path as its pure-Python default, about 4x faster per clip). The
matcher draws note combinations from numpy's global generator, seeded for each match (and restored
after), so a performance always gets the same alignment.
A "score onset" is a distinct score position; its performed time is the median onset of its matched
notes. Beat period bp = d(performed time) / d(score quarters) between a score onset and the first onset
at least `BEAT` quarters later (s per quarter; beat level, so grace notes and tiny score intervals do
not blow up the curve). Every feature is documented in `ALIGNED_DOCS`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from pianolab.errors import fail
from pianolab.features.midi import MidiNotes, read_notes

ALIGNED_DOCS: dict[str, str] = {
    "al_match_frac": "matched score notes / score notes",
    "al_extra_frac": "unmatched performance notes / performance notes (extra or wrong notes)",
    "tempo_qpm": "mean tempo in quarters per minute (slope of performed time vs score position)",
    "tempo_log_std": "std of log beat period over score onsets (tempo variability, rubato)",
    "tempo_log_range": "90th minus 10th percentile of log beat period",
    "tempo_log_diff": "mean |change| of log beat period between successive score onsets",
    "tempo_smooth_std": "std of the log beat period smoothed over 5 onsets (large-scale tempo shape)",
    "tempo_trend": "slope of log beat period vs score position in quarters (> 0: slowing down)",
    "tempo_final_rit": "log(beat period over the last 4 score onsets / median beat period)",
    "dev_global_std": "std (s) of onset deviation from the straight line (constant tempo) fit",
    "dev_global_max": "max |onset deviation| (s) from the constant-tempo fit",
    "dev_local_std": "std (s) of onset deviation from a local (5-onset moving median) tempo",
    "dev_local_mean_abs": "mean |onset deviation| (s) from the local tempo",
    "vel_score_corr": "Pearson correlation of performed with score-MIDI velocity over matched notes",
    "vel_score_slope": "regression slope of performed on score velocity (dynamic-contrast scaling)",
    "vel_score_offset": "mean performed minus score velocity",
    "vel_score_resid_std": "std of the residual of that regression (dynamics not in the score)",
    "art_score_ratio_mean": "mean of performed duration / (score duration x local beat period)",
    "art_score_ratio_median": "median of that ratio",
    "art_score_log_std": "std of the log of that ratio",
    "art_score_short_frac": "fraction of matched notes shorter than half their score duration",
    "async_spread_mean": "mean spread (s, last minus first onset) of notes of one score chord",
    "async_spread_std": "std of the chord spread (s)",
    "async_spread_max": "max chord spread (s)",
    "async_melody_lead": "mean onset (s) of the highest chord note minus the other notes (< 0: leads)",
}
ALIGNED_NAMES: tuple[str, ...] = tuple(ALIGNED_DOCS)
SMOOTH = 5
BEAT = 1.0  # quarters: span of one beat-period measurement


def score_array(notes: MidiNotes) -> np.ndarray:
    """Structured score note array parangonar expects (positions in quarters)."""
    arr = np.zeros(len(notes.notes), dtype=[("onset_beat", "f4"), ("duration_beat", "f4"),
                                            ("onset_quarter", "f4"), ("duration_quarter", "f4"),
                                            ("pitch", "i4"), ("velocity", "i4"), ("id", "U16")])
    arr["onset_beat"] = arr["onset_quarter"] = notes.quarters
    arr["duration_beat"] = arr["duration_quarter"] = np.maximum(notes.quarter_durations, 1e-3)
    arr["pitch"], arr["velocity"] = notes.notes[:, 2], notes.notes[:, 3]
    arr["id"] = [f"s{i}" for i in range(len(arr))]
    return arr


def performance_array(notes: MidiNotes) -> np.ndarray:
    """Structured performance note array parangonar expects (seconds)."""
    arr = np.zeros(len(notes.notes), dtype=[("onset_sec", "f4"), ("duration_sec", "f4"), ("pitch", "i4"),
                                            ("velocity", "i4"), ("id", "U16")])
    arr["onset_sec"] = notes.notes[:, 0]
    arr["duration_sec"] = np.maximum(notes.notes[:, 1] - notes.notes[:, 0], 1e-3)
    arr["pitch"], arr["velocity"] = notes.notes[:, 2], notes.notes[:, 3]
    arr["id"] = [f"p{i}" for i in range(len(arr))]
    return arr


def _score(path: str) -> MidiNotes:
    """The score's notes, read once per version of the file (a changed score is read again)."""
    stat = Path(path).stat()
    return _read_score(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=512)
def _read_score(path: str, mtime_ns: int, size: int) -> MidiNotes:
    return read_notes(path)


@cache
def _cache_dtw_kernel() -> None:
    """Let numba keep parangonar's compiled DTW kernel on disk (parangonar compiles it afresh in every
    process): worker processes then load what `warm_up_alignment` compiled before they started."""
    from parangonar.dp.dtw import weighted_dtw_forward_and_backward

    if hasattr(weighted_dtw_forward_and_backward, "enable_caching"):  # a numba dispatcher
        weighted_dtw_forward_and_backward.enable_caching()


def warm_up_alignment() -> None:
    """Compile (and cache) the alignment's numba kernel: a made-up scale of 16 notes aligned with itself."""
    onsets = np.arange(16) * 0.5
    notes = np.column_stack([onsets, onsets + 0.45, 60 + np.arange(16) % 12, np.full(16, 64.0)])
    scale = MidiNotes(notes, quarters=np.arange(16.0), quarter_durations=np.full(16, 0.9), end=8.0)
    match(scale, scale)


class CompiledDTW:
    """parangonar's DTW interface (`(distance, path) = dtw(X, Y)`) on its numba-compiled weighted DTW,
    unit step weights, steps tried diagonal first: the choices of its pure-Python `DTW`, whose
    backtracking takes the cheapest predecessor in that order."""

    def __init__(self, metric: str = "euclidean"):
        from parangonar.dp.dtw import WDTW

        _cache_dtw_kernel()
        self.dtw = WDTW(directional_weights=np.ones(3), directions=np.array([[1, 1], [1, 0], [0, 1]]),
                        metric=metric)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        path, cost = self.dtw(x, y, return_matrices=True)
        return float(cost[-1, -1]), path


def match(score: MidiNotes, perf: MidiNotes, path: Path | str = "") -> np.ndarray:
    """(k, 2) int indices (score note, performance note) of parangonar's matched pairs."""
    import parangonar

    logging.getLogger("parangonar").setLevel(logging.ERROR)
    state = np.random.get_state()
    np.random.seed(0)  # the matcher samples note combinations from numpy's global generator
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pairs = parangonar.AutomaticNoteMatcher(note_matcher=CompiledDTW)(
                score_array(score), performance_array(perf), verbose_time=False)
    except Exception as e:  # noqa: BLE001 - third-party matcher: report any failure as this file's
        raise fail(path, f"score alignment failed ({e.__class__.__name__}: {e})") from None
    finally:
        np.random.set_state(state)
    rows = [(int(p["score_id"][1:]), int(p["performance_id"][1:])) for p in pairs if p["label"] == "match"]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def _moving_median(x: np.ndarray, k: int = SMOOTH) -> np.ndarray:
    pad = np.pad(x, k // 2, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(pad, k), axis=1)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and a.std() > 0 and b.std() > 0 else 0.0


def aligned_features(score: MidiNotes, perf: MidiNotes, pairs: np.ndarray) -> np.ndarray:
    """(len(ALIGNED_NAMES),) float32 features from matched pairs (see ALIGNED_DOCS)."""
    f = dict.fromkeys(ALIGNED_NAMES, 0.0)
    f["al_match_frac"] = len(pairs) / len(score.notes)
    f["al_extra_frac"] = 1.0 - len(np.unique(pairs[:, 1])) / len(perf.notes) if len(pairs) else 1.0
    if len(pairs) < 4:
        return np.array([f[k] for k in ALIGNED_NAMES], dtype=np.float32)
    sq, pt = score.quarters[pairs[:, 0]], perf.notes[pairs[:, 1], 0]
    pos, inv = np.unique(np.round(sq, 4), return_inverse=True)
    t = np.array([np.median(pt[inv == i]) for i in range(len(pos))])
    nxt = np.searchsorted(pos, pos + BEAT - 1e-6)
    has = nxt < len(pos)
    dq, dt = pos[nxt[has]] - pos[has], t[nxt[has]] - t[has]
    ok = dt > 0
    bp = dt[ok] / dq[ok]
    log_bp = np.log(bp) if len(bp) else np.zeros(1)
    slope = np.polyfit(pos, t, 1)[0] if len(pos) > 1 and pos.std() > 0 else 0.0
    f["tempo_qpm"] = 60.0 / slope if slope > 0 else 0.0
    f["tempo_log_std"] = float(log_bp.std())
    f["tempo_log_range"] = float(np.percentile(log_bp, 90) - np.percentile(log_bp, 10))
    f["tempo_log_diff"] = float(np.abs(np.diff(log_bp)).mean()) if len(log_bp) > 1 else 0.0
    f["tempo_smooth_std"] = float(_moving_median(log_bp).std())
    mid = pos[has][ok]
    f["tempo_trend"] = float(np.polyfit(mid, log_bp, 1)[0]) if len(bp) > 2 and mid.std() > 0 else 0.0
    f["tempo_final_rit"] = float(np.log(bp[-4:].mean() / np.median(bp))) if len(bp) > 4 else 0.0
    if len(pos) > 2:
        resid = t - np.polyval(np.polyfit(pos, t, 1), pos)
        f["dev_global_std"], f["dev_global_max"] = float(resid.std()), float(np.abs(resid).max())
        local = _moving_median(t - pos * slope) + pos * slope
        f["dev_local_std"] = float((t - local).std())
        f["dev_local_mean_abs"] = float(np.abs(t - local).mean())

    sv, pv = score.notes[pairs[:, 0], 3], perf.notes[pairs[:, 1], 3]
    f["vel_score_corr"] = _corr(sv, pv)
    f["vel_score_offset"] = float((pv - sv).mean())
    if sv.std() > 0:
        a, b = np.polyfit(sv, pv, 1)
        f["vel_score_slope"], f["vel_score_resid_std"] = float(a), float((pv - (a * sv + b)).std())
    else:
        f["vel_score_resid_std"] = float(pv.std())

    local_bp = np.interp(sq, mid, bp) if len(bp) else np.full(len(sq), slope)
    expected = np.maximum(score.quarter_durations[pairs[:, 0]] * local_bp, 1e-3)
    played = np.maximum(perf.notes[pairs[:, 1], 1] - pt, 1e-3)
    ratio = played / expected
    f["art_score_ratio_mean"], f["art_score_ratio_median"] = float(ratio.mean()), float(np.median(ratio))
    f["art_score_log_std"] = float(np.log(ratio).std())
    f["art_score_short_frac"] = float((ratio < 0.5).mean())

    spreads, leads = [], []
    pitches = score.notes[pairs[:, 0], 2]
    for i in np.flatnonzero(np.bincount(inv) >= 2):
        on, pch = pt[inv == i], pitches[inv == i]
        spreads.append(on.max() - on.min())
        hi = np.argmax(pch)
        leads.append(on[hi] - np.delete(on, hi).mean())
    if spreads:
        f["async_spread_mean"], f["async_spread_std"] = float(np.mean(spreads)), float(np.std(spreads))
        f["async_spread_max"], f["async_melody_lead"] = float(np.max(spreads)), float(np.mean(leads))
    return np.array([f[k] for k in ALIGNED_NAMES], dtype=np.float32)


def transposed_score(score_path: Path | str, shift: int = 0) -> MidiNotes:
    """The score MIDI's notes, transposed by `shift` semitones (an augmented copy's pitch shift),
    clamped to the piano range like the performance's."""
    if not Path(score_path).is_file():
        raise fail(score_path, "score MIDI not found")
    score = _score(str(score_path))
    if shift:
        from pianolab.render.augment import clamp_shift

        notes = score.notes.copy()
        notes[:, 2] += clamp_shift(shift, int(notes[:, 2].min()), int(notes[:, 2].max()))
        score = replace(score, notes=notes)
    return score


def score_aligned_features(perf_path: Path | str, score_path: Path | str, perf: MidiNotes | None = None,
                           score_shift: int = 0) -> np.ndarray:
    """(len(ALIGNED_NAMES),) features of one performance (its file, or `perf`: its notes already read)
    against its score MIDI, transposed by `score_shift` semitones (the pitch shift of an augmented copy)."""
    score, perf = transposed_score(score_path, score_shift), read_notes(perf_path) if perf is None else perf
    return aligned_features(score, perf, match(score, perf, perf_path))
