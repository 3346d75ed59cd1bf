"""The `symbolic_expressive` kind on real PercePiano files: deadpan vs human, voicing, pedalling, bars."""

from dataclasses import replace

import numpy as np
import pytest

from pianolab.data.music import score_midi_path
from pianolab.errors import PianolabError
from pianolab.features.aligned import match, transposed_score
from pianolab.features.expressive import (
    EXPRESSIVE_DOCS,
    EXPRESSIVE_NAMES,
    _harmony_changes,
    _skyline,
    bar_starts,
    expressive_features,
    score_expressive_features,
)
from pianolab.features.midi import read_notes

GROUP = "Schubert_D960_mv3_8bars_12"
ARCS = ("ex_bar_tempo_range", "ex_bar_tempo_slope", "ex_bar_tempo_curv", "ex_phrase_end_slowing",
        "ex_bar_dyn_range", "ex_bar_dyn_slope", "ex_bar_dyn_curv", "ex_phrase_end_softening")
ASYNC = ("ex_async_bass_lead", "ex_async_top_bass", "ex_async_melody_lead_std", "ex_async_rolled_frac")


def _inputs(dataset, item):
    path = score_midi_path(dataset.root, item.group)
    score, perf = transposed_score(path), read_notes(item.midi_path)
    bars = bar_starts(path, float((score.quarters + score.quarter_durations).max()))
    return score, perf, match(score, perf), bars


def _named(x) -> dict[str, float]:
    return dict(zip(EXPRESSIVE_NAMES, x, strict=True))


@pytest.fixture(scope="module")
def group(dataset):
    return {it.player: it for it in dataset.items if it.group == GROUP}


def test_kind_is_registered_named_documented_and_finite(group):
    from pianolab.features.kinds import get_kind
    from pianolab.features.store import FeatureSpec

    kind = get_kind("symbolic_expressive")
    assert kind.uses_score and kind.names == EXPRESSIVE_NAMES and set(EXPRESSIVE_NAMES) == set(EXPRESSIVE_DOCS)
    assert len(EXPRESSIVE_NAMES) >= 25 and all(EXPRESSIVE_DOCS.values())
    for it in list(group.values())[:4]:
        x = kind.compute(it.midi_path.read_bytes(), it.midi_path, FeatureSpec("symbolic_expressive"))
        assert x.shape == (len(EXPRESSIVE_NAMES),) and np.isfinite(x).all()


def test_deadpan_has_flat_arcs_and_no_asynchrony_unlike_humans(dataset, group):
    feats = {p: _named(score_expressive_features(it.midi_path, score_midi_path(dataset.root, GROUP),
                                                  read_notes(it.midi_path))) for p, it in group.items()}
    dead = feats["Score"]  # the score MIDI itself, played back
    for name in (*ARCS, *ASYNC, "ex_melody_vel_lead_rel", "ex_art_melody_log", "ex_melody_overlap_rel"):
        assert dead[name] == pytest.approx(0.0, abs=1e-6), name
    humans = [f for p, f in feats.items() if p not in ("Score", "Score2")]
    assert len(humans) >= 5
    for h in humans:
        assert h["ex_bar_tempo_range"] > 0.03 and h["ex_bar_dyn_range"] > 2.0
        assert h["ex_async_melody_lead_std"] > 0.003
    assert np.mean([h["ex_melody_vel_lead_rel"] for h in humans]) > 2.0  # pianists voice the melody


def test_louder_top_voice_raises_the_balance_features(dataset, group):
    human = next(it for p, it in group.items() if p not in ("Score", "Score2"))
    score, perf, pairs, bars = _inputs(dataset, human)
    melody_notes = pairs[_skyline(score)[pairs[:, 0]], 1]
    base = _named(expressive_features(score, perf, pairs, bars))
    for step, sign in ((12.0, 1), (-12.0, -1)):
        notes = perf.notes.copy()
        notes[melody_notes, 3] = np.clip(notes[melody_notes, 3] + step, 1, 127)
        moved = _named(expressive_features(score, replace(perf, notes=notes), pairs, bars))
        for name in ("ex_melody_vel_lead", "ex_melody_vel_lead_rel", "ex_melody_line_lead"):
            assert sign * (moved[name] - base[name]) > 5.0, name
        assert sign * (moved["ex_melody_loudest_frac"] - base["ex_melody_loudest_frac"]) >= 0
        assert moved["ex_bar_tempo_range"] == base["ex_bar_tempo_range"]  # timing untouched


def test_pedal_changed_at_every_harmony_change_covers_them_all(dataset, group):
    score, perf, pairs, bars = _inputs(dataset, group["Score"])
    t_change = np.interp(_harmony_changes(score), score.quarters, score.notes[:, 0])
    assert len(t_change) >= 3
    cc = np.concatenate([np.stack([t_change + 0.05, np.zeros_like(t_change)], 1),
                         np.stack([t_change + 0.12, np.full_like(t_change, 100.0)], 1)])
    cc = np.concatenate([[[0.0, 100.0]], cc[np.argsort(cc[:, 0])]])
    changed = _named(expressive_features(score, replace(perf, controls={64: cc}), pairs, bars))
    assert changed["ex_pedal_change_coverage"] == 1.0 and changed["ex_pedal_release_on_change"] == 1.0
    assert changed["ex_pedal_blur_frac"] == 0.0 and changed["ex_pedal_release_lag"] == pytest.approx(0.05, abs=1e-3)
    held = _named(expressive_features(score, replace(perf, controls={64: np.array([[0.0, 100.0]])}), pairs, bars))
    assert held["ex_pedal_change_coverage"] == 0.0  # pressed once, never released
    dry = _named(expressive_features(score, replace(perf, controls={}), pairs, bars))
    assert dry["ex_pedal_blur_frac"] == 0.0 and dry["ex_pedal_change_coverage"] == 0.0


def test_bars_follow_the_score_time_signature(dataset):
    path = score_midi_path(dataset.root, GROUP)  # 3/4
    starts = bar_starts(path, 24.0)
    assert np.allclose(np.diff(starts), 3.0) and starts[0] == 0.0 and len(starts) == 8


def test_missing_score_fails_like_the_other_score_aware_kinds(group, tmp_path):
    it = group["Score"]
    with pytest.raises(PianolabError, match="score MIDI not found"):
        score_expressive_features(it.midi_path, tmp_path / "none.mid", read_notes(it.midi_path))


def test_explanations_read_the_expressive_features_in_musical_words():
    from pianolab.features.expressive import EXPRESSIVE_DOCS
    from pianolab.serve.words import describe

    assert describe("symbolic_expressive:ex_bar_tempo_range") == EXPRESSIVE_DOCS["ex_bar_tempo_range"]
