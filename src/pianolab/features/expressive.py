"""Expressive shaping of a performance against its score: bar-level tempo and dynamics arcs, melody
voicing, chord asynchrony by voice, pedalling at harmony changes and articulation by voice.

Read from parangonar's note alignment (`aligned.match`), and relative to the score MIDI where the score
itself carries timing or dynamics, so that the excerpt's deadpan `Score` rendition scores 0 on every arc,
asynchrony and relative feature. Bars come from the score MIDI's time signatures; PercePiano has no
phrase marks, so a phrase is taken as `PHRASE_BARS` bars (half that in excerpts of at most that many
bars). The melody is the score's skyline: at each score onset, its highest note when nothing higher is
still held. A "chord" is a score onset with two or more matched notes; a harmony change is a score onset
whose sounding pitch-class set shares less than half its union with the previous onset's. Features with
too little material (fewer than 3 bars, no chords, no pedal) are 0. Every feature is in `EXPRESSIVE_DOCS`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from pianolab.features.aligned import BEAT, match, transposed_score
from pianolab.features.midi import MidiNotes, open_midi
from pianolab.features.symbolic import PEDAL_ON

PHRASE_BARS = 4
ROLLED = 0.05  # s: a chord spread wider than this is heard as rolled
PEDAL_WINDOW = (-0.15, 0.4)  # s around a harmony change in which a pedal release counts as a change

EXPRESSIVE_DOCS: dict[str, str] = {
    # bar-level arcs: per-bar log(performed / score duration) and mean (performed - score) velocity
    "ex_bar_tempo_range": "max minus min of the per-bar log tempo relative to the score (bar-level rubato)",
    "ex_bar_tempo_slope": "slope of per-bar log tempo over the excerpt, 0..1 (> 0: pressing on)",
    "ex_bar_tempo_curv": "quadratic term of per-bar log tempo over the excerpt, -1..1 (< 0: arch, fastest mid-way)",
    "ex_bar_tempo_phrase_corr": "correlation of per-bar tempo with a phrase arch (faster mid-phrase, slower at ends)",
    "ex_phrase_end_slowing": "log tempo of each phrase's last bar minus its other bars (< 0: phrase-final slowing)",
    "ex_bar_dyn_range": "max minus min of the per-bar mean velocity above the score's (bar-level dynamic shaping)",
    "ex_bar_dyn_slope": "slope of per-bar velocity over the excerpt, 0..1, velocity steps (> 0: crescendo)",
    "ex_bar_dyn_curv": "quadratic term of per-bar velocity over the excerpt, -1..1 (< 0: arch, loudest mid-way)",
    "ex_bar_dyn_phrase_corr": "correlation of per-bar velocity with the phrase arch (louder mid-phrase)",
    "ex_phrase_end_softening": "velocity of each phrase's last bar minus its other bars (< 0: softer phrase ends)",
    "ex_tempo_dyn_corr": "correlation of per-bar tempo with per-bar velocity (> 0: faster when louder)",
    # melody versus accompaniment
    "ex_melody_vel_lead": "velocity of the melody note of a chord minus the chord's other notes, mean",
    "ex_melody_vel_lead_rel": "ex_melody_vel_lead minus the same in the score MIDI (voicing added by the player)",
    "ex_melody_vel_lead_std": "std of the melody's velocity lead over chords (consistency of the voicing)",
    "ex_melody_loudest_frac": "share of chords whose melody note is played loudest",
    "ex_melody_line_lead": "mean velocity of the melody minus the accompaniment, per bar, mean (line balance)",
    # asynchrony by voice (seconds, over chords)
    "ex_async_bass_lead": "onset of a chord's lowest note minus its other notes, mean (< 0: bass first)",
    "ex_async_top_bass": "onset of the melody note minus the lowest note, mean (> 0: bass before melody)",
    "ex_async_melody_lead_std": "std of the melody's onset lead over chords (regularity of the melody lead)",
    "ex_async_rolled_frac": f"share of chords spread wider than {ROLLED * 1000:.0f} ms (rolled, arpeggiated)",
    "ex_async_vel_coupling": "correlation over chords of the melody's velocity lead with its onset delay "
                             "(< 0: louder melody comes earlier)",
    # pedalling against the score's harmony
    "ex_pedal_release_on_change": "share of sustain-pedal releases close to a score harmony change",
    "ex_pedal_change_coverage": "share of score harmony changes with a sustain-pedal release close to them",
    "ex_pedal_blur_frac": "share of score harmony changes held through with the sustain pedal down (blurred)",
    "ex_pedal_release_lag": "median time (s) from a harmony change to its closest pedal release (syncopated pedalling)",
    # articulation by voice: log(performed duration / score duration at the local tempo)
    "ex_art_melody_log": "median log duration ratio (performed / score at local tempo) of melody notes",
    "ex_art_accomp_log": "median log duration ratio of accompaniment notes",
    "ex_art_melody_minus_accomp": "ex_art_melody_log minus ex_art_accomp_log (melody held longer than the rest)",
    "ex_melody_overlap_rel": "mean overlap (s) of successive melody notes minus the score's (finger legato)",
}
EXPRESSIVE_NAMES: tuple[str, ...] = tuple(EXPRESSIVE_DOCS)


@lru_cache(maxsize=512)
def _bar_grid(score_path: str, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """(quarter position, quarters per bar) of each time signature of the score MIDI (4/4 when none)."""
    midi = open_midi(score_path)
    rows = []
    for track in midi.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "time_signature":
                rows.append((tick / midi.ticks_per_beat, msg.numerator * 4 / msg.denominator))
    rows = sorted(rows) or [(0.0, 4.0)]
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


def bar_starts(score_path: Path | str, end: float) -> np.ndarray:
    """Quarter positions where the score's bars start, up to `end` quarters."""
    at, length = _bar_grid(str(score_path), Path(score_path).stat().st_mtime_ns)
    starts = []
    for i, (q, n) in enumerate(zip(at, length, strict=True)):
        stop = at[i + 1] if i + 1 < len(at) else end
        starts.extend(np.arange(q, max(stop, q + n), n) if q < end else [])
    return np.unique(np.array(starts))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and a.std() > 1e-9 and b.std() > 1e-9 else 0.0


def _mean(x) -> float:
    return float(np.mean(x)) if len(x) else 0.0


def _arc(curve: np.ndarray, bar_pos: np.ndarray, phrase: int) -> tuple[float, ...]:
    """Range, slope, quadratic term, phrase-arch correlation and phrase-end contrast of a per-bar curve."""
    if len(curve) < 3:
        return 0.0, 0.0, 0.0, 0.0, 0.0
    x = np.linspace(0.0, 1.0, len(curve))
    slope = np.polyfit(x, curve, 1)[0]
    curv = np.polyfit(2 * x - 1, curve, 2)[0]
    within = bar_pos % phrase
    arch = np.sin(np.pi * (within + 0.5) / phrase)
    last = within == phrase - 1
    end = _mean(curve[last]) - _mean(curve[~last]) if last.any() and (~last).any() else 0.0
    return float(np.ptp(curve)), float(slope), float(curv), _corr(curve, arch), float(end)


def _skyline(score: MidiNotes) -> np.ndarray:
    """(n,) bool: score notes of the melody (the highest note of an onset with nothing higher held)."""
    q, pitch = score.quarters, score.notes[:, 2]
    end = q + score.quarter_durations
    melody = np.zeros(len(q), dtype=bool)
    for pos in np.unique(q):
        at = np.flatnonzero(q == pos)
        top = at[np.argmax(pitch[at])]
        held = (q < pos) & (end > pos + 1e-6)
        if not held.any() or pitch[top] >= pitch[held].max():
            melody[top] = True
    return melody


def _harmony_changes(score: MidiNotes) -> np.ndarray:
    """Score positions (quarters) whose sounding pitch-class set differs from the previous onset's."""
    q, pcs = score.quarters, score.notes[:, 2].astype(int) % 12
    end = q + score.quarter_durations
    changes, prev = [], None
    for pos in np.unique(q):
        now = set(pcs[(q <= pos) & (end > pos + 1e-6)]) | set(pcs[q == pos])
        if prev is not None and len(now & prev) < 0.5 * len(now | prev):
            changes.append(pos)
        prev = now
    return np.array(changes)


def _releases(perf: MidiNotes) -> tuple[np.ndarray, np.ndarray]:
    """Times of sustain-pedal releases (CC64 falling below PEDAL_ON), and of presses."""
    cc = perf.control(64)
    if not len(cc):
        return np.zeros(0), np.zeros(0)
    down = np.concatenate([[False], cc[:, 1] >= PEDAL_ON])
    step = np.diff(down.astype(np.int8))
    return cc[step == -1, 0], cc[step == 1, 0]


def _pedal(perf: MidiNotes, change_t: np.ndarray) -> tuple[float, float, float, float]:
    releases, presses = _releases(perf)
    if not len(releases) or not len(change_t):
        return 0.0, 0.0, 0.0, 0.0
    lag = releases[None, :] - change_t[:, None]  # (changes, releases)
    near = (lag >= PEDAL_WINDOW[0]) & (lag <= PEDAL_WINDOW[1])
    events = np.sort(np.concatenate([releases, presses]))
    state = np.concatenate([[False], np.isin(events, presses)])  # pedal down after each event
    down_before = state[np.searchsorted(events, change_t + PEDAL_WINDOW[0], side="right")]
    blurred = down_before & ~near.any(axis=1)
    closest = np.take_along_axis(lag, np.where(near, np.abs(lag), np.inf).argmin(axis=1)[:, None], 1)[:, 0]
    hit = near.any(axis=1)
    return (float(near.any(axis=0).mean()), float(hit.mean()), float(blurred.mean()),
            float(np.median(closest[hit])) if hit.any() else 0.0)


def expressive_features(score: MidiNotes, perf: MidiNotes, pairs: np.ndarray, bars: np.ndarray) -> np.ndarray:
    """(len(EXPRESSIVE_NAMES),) float32 features from matched (score, performance) note pairs; `bars`:
    quarter positions where the score's bars start (see EXPRESSIVE_DOCS)."""
    f = dict.fromkeys(EXPRESSIVE_NAMES, 0.0)
    if len(pairs) < 4:
        return np.array([f[k] for k in EXPRESSIVE_NAMES], dtype=np.float32)
    si, pi = pairs[:, 0], pairs[:, 1]
    sq, pt, st = score.quarters[si], perf.notes[pi, 0], score.notes[si, 0]
    pos, inv = np.unique(np.round(sq, 4), return_inverse=True)
    t = np.array([np.median(pt[inv == i]) for i in range(len(pos))])
    ts = np.array([st[inv == i][0] for i in range(len(pos))])
    dv = perf.notes[pi, 3] - score.notes[si, 3]

    # bar-level arcs
    inside = bars[(bars > pos[0]) & (bars < pos[-1])]
    edges = np.concatenate([[pos[0]], inside, [pos[-1]]])
    bar_id = np.searchsorted(bars, edges[:-1], side="right") - 1
    ratio = np.diff(np.interp(edges, pos, t)) / np.maximum(np.diff(np.interp(edges, pos, ts)), 1e-6)
    seg = np.clip(np.searchsorted(edges, sq, side="right") - 1, 0, len(edges) - 2)
    keep = (np.diff(edges) >= BEAT - 1e-6) & (ratio > 0) & (np.bincount(seg, minlength=len(ratio)) > 0)
    tempo = -np.log(np.where(keep, ratio, 1.0))[keep]
    tempo -= tempo.mean() if len(tempo) else 0.0
    dyn = (np.bincount(seg, dv, len(ratio)) / np.maximum(np.bincount(seg, minlength=len(ratio)), 1))[keep]
    dyn -= dyn.mean() if len(dyn) else 0.0
    n_bars = len(bars[bars < score.quarters.max() + 1e-6])
    phrase = PHRASE_BARS if n_bars > PHRASE_BARS else max(PHRASE_BARS // 2, 1)
    (f["ex_bar_tempo_range"], f["ex_bar_tempo_slope"], f["ex_bar_tempo_curv"], f["ex_bar_tempo_phrase_corr"],
     f["ex_phrase_end_slowing"]) = _arc(tempo, bar_id[keep], phrase)
    (f["ex_bar_dyn_range"], f["ex_bar_dyn_slope"], f["ex_bar_dyn_curv"], f["ex_bar_dyn_phrase_corr"],
     f["ex_phrase_end_softening"]) = _arc(dyn, bar_id[keep], phrase)
    f["ex_tempo_dyn_corr"] = _corr(tempo, dyn)

    # voices at each chord (score onset with >= 2 matched notes)
    melody = _skyline(score)[si]
    pv, sv, pitch = perf.notes[pi, 3], score.notes[si, 3], score.notes[si, 2]
    leads, leads_score, loudest, t_leads, bass_leads, top_bass, spreads = [], [], [], [], [], [], []
    for i in np.flatnonzero(np.bincount(inv) >= 2):
        at = np.flatnonzero(inv == i)
        on, lo = pt[at], np.argmin(pitch[at])
        spreads.append(np.ptp(on))
        bass_leads.append(on[lo] - np.delete(on, lo).mean())
        if melody[at].any():
            top = int(np.flatnonzero(melody[at])[0])
            leads.append(pv[at][top] - np.delete(pv[at], top).mean())
            leads_score.append(sv[at][top] - np.delete(sv[at], top).mean())
            loudest.append(pv[at][top] >= pv[at].max())
            t_leads.append(on[top] - np.delete(on, top).mean())
            top_bass.append(on[top] - on[lo])
    f["ex_melody_vel_lead"] = _mean(leads)
    f["ex_melody_vel_lead_rel"] = _mean(leads) - _mean(leads_score)
    f["ex_melody_vel_lead_std"] = float(np.std(leads)) if leads else 0.0
    f["ex_melody_loudest_frac"] = _mean(loudest)
    bar_of = np.searchsorted(bars, sq, side="right") - 1
    line = [pv[(bar_of == b) & melody].mean() - pv[(bar_of == b) & ~melody].mean() for b in np.unique(bar_of)
            if ((bar_of == b) & melody).any() and ((bar_of == b) & ~melody).any()]
    f["ex_melody_line_lead"] = _mean(line)
    f["ex_async_bass_lead"], f["ex_async_top_bass"] = _mean(bass_leads), _mean(top_bass)
    f["ex_async_melody_lead_std"] = float(np.std(t_leads)) if t_leads else 0.0
    f["ex_async_rolled_frac"] = _mean(np.array(spreads) > ROLLED)
    f["ex_async_vel_coupling"] = _corr(np.array(leads, dtype=float), np.array(t_leads, dtype=float))

    # pedalling at harmony changes (performed time of each change, interpolated between matched onsets)
    changes = _harmony_changes(score)
    changes = changes[(changes >= pos[0]) & (changes <= pos[-1])]
    (f["ex_pedal_release_on_change"], f["ex_pedal_change_coverage"], f["ex_pedal_blur_frac"],
     f["ex_pedal_release_lag"]) = _pedal(perf, np.interp(changes, pos, t))

    # articulation by voice, against the score's duration at the local tempo
    nxt = np.minimum(np.searchsorted(pos, pos + BEAT - 1e-6), len(pos) - 1)
    dts = ts[nxt] - ts
    local = np.where(dts > 1e-6, (t[nxt] - t) / np.where(dts > 1e-6, dts, 1.0), np.nan)
    ok = np.isfinite(local) & (local > 0)
    local_at = np.interp(sq, pos[ok], local[ok]) if ok.any() else np.ones(len(sq))
    score_dur = np.maximum(score.notes[si, 1] - st, 1e-3)
    log_ratio = np.log(np.maximum(perf.notes[pi, 1] - pt, 1e-3) / np.maximum(score_dur * local_at, 1e-3))
    if melody.any() and (~melody).any():
        f["ex_art_melody_log"] = float(np.median(log_ratio[melody]))
        f["ex_art_accomp_log"] = float(np.median(log_ratio[~melody]))
        f["ex_art_melody_minus_accomp"] = f["ex_art_melody_log"] - f["ex_art_accomp_log"]
    line_notes = np.flatnonzero(melody)[np.argsort(sq[melody], kind="stable")]
    if len(line_notes) > 1:
        a, b = line_notes[:-1], line_notes[1:]
        played = perf.notes[pi[a], 1] - pt[b]
        written = (score.notes[si[a], 1] - st[b]) * local_at[a]
        f["ex_melody_overlap_rel"] = float(np.mean(played - written))
    return np.array([f[k] for k in EXPRESSIVE_NAMES], dtype=np.float32)


def score_expressive_features(perf_path: Path | str, score_path: Path | str, perf: MidiNotes,
                              score_shift: int = 0) -> np.ndarray:
    """(len(EXPRESSIVE_NAMES),) features of one performance (its notes `perf`) against its score MIDI,
    transposed by `score_shift` semitones (an augmented copy's pitch shift); a missing score or a failed
    alignment raises PianolabError naming the file, as for `symbolic_aligned`."""
    score = transposed_score(score_path, score_shift)
    bars = bar_starts(score_path, float((score.quarters + score.quarter_durations).max()))
    return expressive_features(score, perf, match(score, perf, perf_path), bars)
