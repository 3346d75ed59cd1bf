"""Symbolic performance features: what the performer did, read from the performance MIDI alone.

`performance_features(notes) -> (n_features,) float32` in the order of `SYMBOLIC_NAMES`; every name is
documented in `SYMBOLIC_DOCS`. Times are in seconds, velocities in MIDI steps (1..127), pitches in MIDI
numbers. An "event" is a cluster of note onsets within `CHORD_TOL` s of the cluster's first onset (a
chord or a single note); IOIs are taken between successive events. Trailing silence after the last
note-off is ignored: the span is first onset .. last offset.
"""

from __future__ import annotations

import numpy as np

from pianolab.features.midi import MidiNotes

CHORD_TOL = 0.035  # s: onsets closer than this belong to one event
DYN_WINDOW = 1.0  # s: window of the velocity curve
PEDAL_ON = 64  # CC value from which a pedal counts as pressed

SYMBOLIC_DOCS: dict[str, str] = {
    # rate and span
    "span_s": "first onset to last offset (s)",
    "n_notes": "number of notes",
    "note_rate": "notes per second over the span",
    "event_rate": "events (onset clusters) per second",
    "event_rate_std": "std of events per second over 2 s windows (local pace variation)",
    # inter-onset intervals between events
    "ioi_mean": "mean inter-event interval (s)",
    "ioi_median": "median inter-event interval (s)",
    "ioi_std": "std of inter-event intervals (s)",
    "ioi_cv": "ioi_std / ioi_mean",
    "ioi_p10": "10th percentile of inter-event intervals (s)",
    "ioi_p90": "90th percentile of inter-event intervals (s)",
    "ioi_log_std": "std of log inter-event intervals",
    "ioi_ratio_abs_log": "mean |log(ioi[i+1]/ioi[i])|: rhythmic irregularity between neighbours",
    "ioi_max": "longest inter-event interval (s): the longest pause or held note",
    # velocity
    "vel_mean": "mean note velocity",
    "vel_std": "std of note velocity",
    "vel_min": "minimum velocity",
    "vel_max": "maximum velocity",
    "vel_p10": "10th percentile of velocity",
    "vel_p50": "median velocity",
    "vel_p90": "90th percentile of velocity",
    "vel_range": "95th minus 5th percentile of velocity",
    "vel_iqr": "interquartile range of velocity",
    "vel_skew": "skewness of velocity",
    "vel_diff_abs": "mean |velocity change| between successive notes",
    "vel_pitch_corr": "Pearson correlation of velocity with pitch",
    "vel_top_lead": "velocity of a chord's highest note minus its other notes, mean (melody voicing)",
    "vel_bass_lead": "mean velocity of the lowest note of a chord minus the other chord notes",
    # dynamics over time (velocity curve: mean velocity in 1 s windows with notes)
    "dyn_curve_std": "std of the windowed mean-velocity curve",
    "dyn_curve_range": "max minus min of the windowed mean-velocity curve",
    "dyn_curve_diff": "mean |change| of the windowed curve between neighbouring windows",
    "dyn_slope": "linear trend of velocity over the span (velocity steps per second)",
    "dyn_energy_rate": "sum of (velocity/127)^2 per second: a loudness-density proxy",
    # articulation
    "dur_mean": "mean key-down duration (s)",
    "dur_median": "median key-down duration (s)",
    "dur_std": "std of key-down duration (s)",
    "dur_log_std": "std of log key-down duration",
    "art_ratio_mean": "mean of duration / time to the next event, per note (articulation ratio)",
    "art_ratio_median": "median articulation ratio",
    "art_ratio_std": "std of articulation ratio",
    "legato_frac": "fraction of notes held past the next event's onset (ratio > 1)",
    "staccato_frac": "fraction of notes released before half the time to the next event (ratio < 0.5)",
    "overlap_mean": "mean overlap (s) of a note with the next event, 0 when released before it",
    # pedal
    "pedal_frac": "fraction of the span with sustain (CC64) >= 64",
    "pedal_depth_mean": "time-weighted mean sustain CC64 value / 127",
    "pedal_half_frac": "fraction of the span with 0 < CC64 < 64 (half pedal)",
    "pedal_press_rate": "sustain presses (crossing 64 upward) per second",
    "pedal_press_count": "number of sustain presses",
    "pedal_len_mean": "mean length of a sustain press (s)",
    "pedal_len_std": "std of sustain press length (s)",
    "pedal_change_rate": "CC64 messages per second (pedal activity, incl. partial moves)",
    "pedal_notes_frac": "fraction of notes whose onset falls under the sustain pedal",
    "pedal_sustain_gain": "mean sounding duration with pedal / key-down duration",
    "soft_frac": "fraction of the span with the soft pedal (CC67) >= 64",
    "soft_press_count": "number of soft-pedal presses",
    "sostenuto_frac": "fraction of the span with the sostenuto pedal (CC66) >= 64",
    # polyphony and texture
    "poly_mean": "time-weighted mean number of keys down",
    "poly_max": "maximum number of keys down",
    "poly_std": "time-weighted std of keys down",
    "sound_poly_mean": "time-weighted mean number of sounding notes (pedal extends)",
    "chord_size_mean": "mean notes per event",
    "chord_frac": "fraction of events with two or more notes",
    "silence_frac": "fraction of the span with no key down and no pedal",
    # pitch
    "pitch_min": "lowest pitch",
    "pitch_max": "highest pitch",
    "pitch_range": "pitch_max - pitch_min",
    "pitch_mean": "mean pitch",
    "pitch_std": "std of pitch",
    "pitch_vel_weighted": "velocity-weighted mean pitch (brightness proxy)",
    "pitch_class_entropy": "entropy (bits) of the pitch-class histogram",
}
SYMBOLIC_NAMES: tuple[str, ...] = tuple(SYMBOLIC_DOCS)


def events(onsets: np.ndarray, tol: float = CHORD_TOL) -> np.ndarray:
    """(n,) event index of each sorted onset: a new event starts more than `tol` after the last start."""
    ids = np.zeros(len(onsets), dtype=np.int64)
    start = onsets[0] if len(onsets) else 0.0
    for i in range(1, len(onsets)):
        if onsets[i] - start > tol:
            start = onsets[i]
            ids[i] = ids[i - 1] + 1
        else:
            ids[i] = ids[i - 1]
    return ids


def _safe(fn, x, default=0.0) -> float:
    return float(fn(x)) if len(x) else default


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _skew(x: np.ndarray) -> float:
    s = x.std()
    return float(((x - x.mean()) ** 3).mean() / s**3) if s > 0 else 0.0


def step_fraction(cc: np.ndarray, t0: float, t1: float, pred) -> tuple[float, np.ndarray]:
    """Fraction of [t0, t1] where pred(value) holds for a step-held controller (0 before its first
    message), and the (k, 2) intervals where it holds (an open one ends at max(t1, last message))."""
    if t1 <= t0:
        return 0.0, np.zeros((0, 2))
    ct, cv = (cc[:, 0], cc[:, 1]) if len(cc) else (np.zeros(0), np.zeros(0))
    times = np.concatenate([[min(t0, ct.min(initial=t0))], ct, [max(t1, ct.max(initial=t1))]])
    on = pred(np.concatenate([[0.0], cv]))
    clipped = np.clip(times, t0, t1)
    frac = float((np.diff(clipped) * on).sum() / (t1 - t0))
    edges = np.diff(np.concatenate([[0], on.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return frac, np.stack([times[starts], times[ends]], 1).astype(np.float64).reshape(-1, 2)


def _pedal_mean(cc: np.ndarray, t0: float, t1: float) -> float:
    if not len(cc) or t1 <= t0:
        return 0.0
    times = np.clip(np.concatenate([cc[:, 0], [t1]]), t0, t1)
    return float((np.diff(times) * cc[:, 1]).sum() / (t1 - t0) / 127.0)


def _keys_down(notes: np.ndarray, offsets: np.ndarray, t0: float, t1: float) -> tuple[float, float, float]:
    """Time-weighted mean, max and std of the number of intervals [onset, offset) covering t."""
    times = np.concatenate([notes[:, 0], offsets])
    delta = np.concatenate([np.ones(len(notes)), -np.ones(len(offsets))])
    order = np.lexsort((delta, times))
    times, count = times[order], np.cumsum(delta[order])
    dt = np.diff(np.clip(np.append(times, t1), t0, t1))
    total = dt.sum()
    if total <= 0:
        return 0.0, float(count.max()), 0.0
    mean = float((count * dt).sum() / total)
    std = float(np.sqrt(max((((count - mean) ** 2) * dt).sum() / total, 0.0)))
    return mean, float(count.max()), std


def _sounding_offsets(notes: np.ndarray, sustain: np.ndarray) -> np.ndarray:
    """Offsets extended to the end of the sustain press that holds them at release."""
    off = notes[:, 1].copy()
    for s, e in sustain:
        held = (off >= s) & (off < e)
        off[held] = e
    return off


def performance_features(m: MidiNotes) -> np.ndarray:
    """(len(SYMBOLIC_NAMES),) float32 features of one performance (see SYMBOLIC_DOCS)."""
    n = m.notes
    on, off, pitch, vel = n[:, 0], n[:, 1], n[:, 2], n[:, 3]
    t0, t1 = float(on.min()), float(max(off.max(), on.max() + 1e-3))
    span = t1 - t0
    dur = np.maximum(off - on, 1e-3)
    ev = events(on)
    ev_on = np.array([on[ev == k].min() for k in range(ev[-1] + 1)])
    ioi = np.diff(ev_on)
    f: dict[str, float] = {"span_s": span, "n_notes": len(n), "note_rate": len(n) / span,
                           "event_rate": len(ev_on) / span}
    bins = np.arange(t0, t1 + 2.0, 2.0)
    f["event_rate_std"] = float(np.histogram(ev_on, bins)[0].std() / 2.0)
    log_ioi = np.log(np.maximum(ioi, 1e-3))
    f.update(ioi_mean=_safe(np.mean, ioi), ioi_median=_safe(np.median, ioi), ioi_std=_safe(np.std, ioi))
    f["ioi_cv"] = f["ioi_std"] / f["ioi_mean"] if f["ioi_mean"] > 0 else 0.0
    f["ioi_p10"] = float(np.percentile(ioi, 10)) if len(ioi) else 0.0
    f["ioi_p90"] = float(np.percentile(ioi, 90)) if len(ioi) else 0.0
    f["ioi_log_std"] = _safe(np.std, log_ioi)
    f["ioi_ratio_abs_log"] = _safe(np.mean, np.abs(np.diff(log_ioi)))
    f["ioi_max"] = _safe(np.max, ioi)

    p = np.percentile(vel, [5, 10, 25, 50, 75, 90, 95])
    f.update(vel_mean=vel.mean(), vel_std=vel.std(), vel_min=vel.min(), vel_max=vel.max(), vel_p10=p[1],
             vel_p50=p[3], vel_p90=p[5], vel_range=p[6] - p[0], vel_iqr=p[4] - p[2], vel_skew=_skew(vel))
    by_time = vel[np.argsort(on, kind="stable")]
    f["vel_diff_abs"] = _safe(np.mean, np.abs(np.diff(by_time)))
    f["vel_pitch_corr"] = _corr(vel, pitch)
    top, bass = [], []
    for k in np.flatnonzero(np.bincount(ev) >= 2):
        v, pch = vel[ev == k], pitch[ev == k]
        hi, lo = np.argmax(pch), np.argmin(pch)
        top.append(v[hi] - np.delete(v, hi).mean())
        bass.append(v[lo] - np.delete(v, lo).mean())
    f["vel_top_lead"], f["vel_bass_lead"] = _safe(np.mean, top), _safe(np.mean, bass)
    win = np.floor((on - t0) / DYN_WINDOW).astype(int)
    sums, counts = np.bincount(win, vel), np.bincount(win)
    curve = sums[counts > 0] / counts[counts > 0]
    f["dyn_curve_std"] = float(curve.std())
    f["dyn_curve_range"] = float(curve.max() - curve.min())
    f["dyn_curve_diff"] = _safe(np.mean, np.abs(np.diff(curve)))
    f["dyn_slope"] = float(np.polyfit(on - t0, vel, 1)[0]) if len(n) > 2 and on.std() > 0 else 0.0
    f["dyn_energy_rate"] = float(((vel / 127.0) ** 2).sum() / span)

    next_on = np.append(ev_on, np.inf)[ev + 1]
    gap = next_on - on
    has_next = np.isfinite(gap)
    ratio = dur[has_next] / np.maximum(gap[has_next], 1e-3)
    f.update(dur_mean=dur.mean(), dur_median=np.median(dur), dur_std=dur.std(), dur_log_std=np.log(dur).std())
    f["art_ratio_mean"], f["art_ratio_median"] = _safe(np.mean, ratio), _safe(np.median, ratio)
    f["art_ratio_std"] = _safe(np.std, ratio)
    f["legato_frac"], f["staccato_frac"] = _safe(np.mean, ratio > 1.0), _safe(np.mean, ratio < 0.5)
    f["overlap_mean"] = _safe(np.mean, np.maximum(off[has_next] - next_on[has_next], 0.0))

    sus = m.control(64)
    f["pedal_frac"], presses = step_fraction(sus, t0, t1, lambda v: v >= PEDAL_ON)
    f["pedal_depth_mean"] = _pedal_mean(sus, t0, t1)
    f["pedal_half_frac"], _ = step_fraction(sus, t0, t1, lambda v: (v > 0) & (v < PEDAL_ON))
    lengths = presses[:, 1] - presses[:, 0]
    f["pedal_press_rate"], f["pedal_press_count"] = len(presses) / span, len(presses)
    f["pedal_len_mean"], f["pedal_len_std"] = _safe(np.mean, lengths), _safe(np.std, lengths)
    f["pedal_change_rate"] = float(((sus[:, 0] >= t0) & (sus[:, 0] <= t1)).sum() / span) if len(sus) else 0.0
    under = np.zeros(len(n), dtype=bool)
    for s, e in presses:
        under |= (on >= s) & (on < e)
    f["pedal_notes_frac"] = float(under.mean())
    sounding = _sounding_offsets(n, presses)
    f["pedal_sustain_gain"] = float(((sounding - on) / dur).mean())
    f["soft_frac"], soft = step_fraction(m.control(67), t0, t1, lambda v: v >= PEDAL_ON)
    f["soft_press_count"] = len(soft)
    f["sostenuto_frac"], _ = step_fraction(m.control(66), t0, t1, lambda v: v >= PEDAL_ON)

    f["poly_mean"], f["poly_max"], f["poly_std"] = _keys_down(n, off, t0, t1)
    f["sound_poly_mean"] = _keys_down(n, sounding, t0, t1)[0]
    sizes = np.bincount(ev)
    f["chord_size_mean"], f["chord_frac"] = float(sizes.mean()), float((sizes >= 2).mean())
    busy = np.concatenate([np.stack([on, off], 1), presses]) if len(presses) else np.stack([on, off], 1)
    f["silence_frac"] = 1.0 - _covered(busy, t0, t1) / span

    f.update(pitch_min=pitch.min(), pitch_max=pitch.max(), pitch_range=pitch.max() - pitch.min(),
             pitch_mean=pitch.mean(), pitch_std=pitch.std())
    f["pitch_vel_weighted"] = float((pitch * vel).sum() / vel.sum())
    pc = np.bincount(pitch.astype(int) % 12, minlength=12) / len(pitch)
    f["pitch_class_entropy"] = float(-(pc[pc > 0] * np.log2(pc[pc > 0])).sum())
    return np.array([f[k] for k in SYMBOLIC_NAMES], dtype=np.float32)


def _covered(intervals: np.ndarray, t0: float, t1: float) -> float:
    """Total length of the union of (k, 2) intervals clipped to [t0, t1]."""
    iv = np.clip(intervals[np.argsort(intervals[:, 0])], t0, t1)
    total, cur_s, cur_e = 0.0, iv[0, 0], iv[0, 1]
    for s, e in iv[1:]:
        if s > cur_e:
            total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return float(total + cur_e - cur_s)
