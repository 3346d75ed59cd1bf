"""Feature names in musical words, for explanations a musician can read.

`MUSICAL` gives the symbolic and score-aligned features short musical names (the technical definition of
each stays in `SYMBOLIC_DOCS` / `ALIGNED_DOCS` / `EXPRESSIVE_DOCS`); `describe` also covers the `peer:`
and `stack:` columns and falls back to the feature's documentation for kinds without an entry.
"""

from __future__ import annotations

MUSICAL: dict[str, str] = {
    # rate and span
    "span_s": "length of the performance", "n_notes": "number of notes played",
    "note_rate": "notes per second (density and speed)", "event_rate": "pace: attacks per second",
    "event_rate_std": "unevenness of the pace from bar to bar",
    # timing
    "ioi_mean": "average time between attacks (slowness)", "ioi_median": "typical time between attacks",
    "ioi_std": "variation of the time between attacks", "ioi_cv": "rhythmic unevenness (relative)",
    "ioi_p10": "shortest gaps between attacks (fastest passages)",
    "ioi_p90": "longest gaps between attacks (slowest moments)",
    "ioi_log_std": "spread of note lengths in time (rhythmic contrast)",
    "ioi_ratio_abs_log": "rhythmic irregularity from one note to the next (rubato, unsteadiness)",
    "ioi_max": "longest pause or held note",
    # velocity
    "vel_mean": "overall loudness", "vel_std": "dynamic contrast between notes", "vel_min": "softest note",
    "vel_max": "loudest note", "vel_p10": "level of the soft notes", "vel_p50": "typical loudness",
    "vel_p90": "level of the loud notes", "vel_range": "dynamic range (soft to loud)",
    "vel_iqr": "dynamic spread of the middle half of the notes",
    "vel_skew": "whether a few notes stand out loudly (accents)",
    "vel_diff_abs": "loudness jumps between successive notes",
    "vel_pitch_corr": "high notes played louder than low notes",
    "vel_top_lead": "melody voicing: top note of chords brought out",
    "vel_bass_lead": "bass voicing: lowest note of chords brought out",
    # dynamics over time
    "dyn_curve_std": "dynamic shaping over time (crescendi, diminuendi)",
    "dyn_curve_range": "range of the dynamic shape over the phrase",
    "dyn_curve_diff": "how quickly the dynamics change second to second",
    "dyn_slope": "overall crescendo (> 0) or diminuendo (< 0)",
    "dyn_energy_rate": "loudness density (sound energy per second)",
    # articulation
    "dur_mean": "how long keys are held", "dur_median": "typical key-down time",
    "dur_std": "variety of note lengths", "dur_log_std": "contrast of short and long notes",
    "art_ratio_mean": "legato vs detached touch (held time relative to the next note)",
    "art_ratio_median": "typical touch: legato or detached", "art_ratio_std": "variety of touch",
    "legato_frac": "share of overlapping, legato notes", "staccato_frac": "share of short, staccato notes",
    "overlap_mean": "how much notes overlap the next one (finger legato)",
    # pedal
    "pedal_frac": "time with the sustain pedal down", "pedal_depth_mean": "depth of sustain pedalling",
    "pedal_half_frac": "half-pedalling", "pedal_press_rate": "pedal changes per second",
    "pedal_press_count": "number of pedal changes", "pedal_len_mean": "length of each pedal",
    "pedal_len_std": "variety of pedal lengths", "pedal_change_rate": "pedal-foot activity",
    "pedal_notes_frac": "share of notes played under the pedal",
    "pedal_sustain_gain": "how much the pedal lengthens the notes (resonance, blur)",
    "soft_frac": "time with the soft pedal (una corda)", "soft_press_count": "soft-pedal presses",
    "sostenuto_frac": "time with the sostenuto pedal",
    # texture
    "poly_mean": "thickness of the texture (keys held at once)", "poly_max": "fullest chord",
    "poly_std": "changes in texture thickness", "sound_poly_mean": "number of notes ringing at once",
    "chord_size_mean": "notes per attack (chordal writing)", "chord_frac": "share of attacks that are chords",
    "silence_frac": "share of silence (rests, breathing space)",
    # pitch
    "pitch_min": "lowest note (register)", "pitch_max": "highest note (register)",
    "pitch_range": "width of the register used", "pitch_mean": "register (average pitch)",
    "pitch_std": "spread of the register", "pitch_vel_weighted": "brightness: where the loud notes lie",
    "pitch_class_entropy": "harmonic variety (pitch classes used)",
    # score-aligned
    "al_match_frac": "accuracy: share of the score's notes played",
    "al_extra_frac": "wrong or extra notes", "tempo_qpm": "tempo", "tempo_log_std": "rubato (tempo flexibility)",
    "tempo_log_range": "range of tempo changes", "tempo_log_diff": "beat-to-beat tempo fluctuation",
    "tempo_smooth_std": "large-scale tempo shaping", "tempo_trend": "slowing down (> 0) or pressing on (< 0)",
    "tempo_final_rit": "final ritardando", "dev_global_std": "timing freedom against a steady beat",
    "dev_global_max": "largest departure from a steady beat", "dev_local_std": "unevenness against the local beat",
    "dev_local_mean_abs": "note-to-note timing unevenness",
    "vel_score_corr": "dynamics following the score", "vel_score_slope": "dynamic contrast relative to the score",
    "vel_score_offset": "louder (> 0) or softer than the score's dynamics",
    "vel_score_resid_std": "dynamic nuance beyond the score",
    "art_score_ratio_mean": "notes held longer (legato) or shorter than written",
    "art_score_ratio_median": "typical note length against the score", "art_score_log_std": "variety of articulation",
    "art_score_short_frac": "notes cut shorter than written", "async_spread_mean": "spread of chords (arpeggiation)",
    "async_spread_std": "variety of chord spread", "async_spread_max": "most spread chord",
    "async_melody_lead": "melody lead: top note ahead of the chord (< 0)",
}


def _docs() -> dict[str, str]:
    from pianolab.features.aligned import ALIGNED_DOCS
    from pianolab.features.expressive import EXPRESSIVE_DOCS
    from pianolab.features.symbolic import SYMBOLIC_DOCS

    return {**SYMBOLIC_DOCS, **ALIGNED_DOCS, **EXPRESSIVE_DOCS}


def describe(column: str) -> str:
    """Musical words for a model input column such as `symbolic:vel_mean`, `peer:symbolic:pedal_frac`
    or `stack:timbre_bright_dark`."""
    if column.startswith("peer:"):
        return describe(column[5:]) + ", compared with other performances of the excerpt"
    if column.startswith("stack:"):
        return f"the tree ensemble's estimate of {column[6:].replace('_', ' ')}"
    kind, _, name = column.rpartition(":")
    words = MUSICAL.get(name) or _docs().get(name) or name.replace("_", " ")
    return f"{words} (score-relative)" if kind == "symbolic_relative" else words
