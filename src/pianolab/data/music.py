"""Which excerpt groups share music: D960 mv2/mv3 were cut into 8- and 16-bar excerpts that overlap.

Method: read each group's score MIDI (`score_midi/<section>_<N>bars_Score_<segment>.mid`), take the
onset-ordered pitch sequence, and form its set of pitch 6-grams. Two groups of the same section
overlap when at least `threshold` (default 0.5) of the smaller group's 6-grams occur in the other.
Overlapping groups are joined transitively (union-find) into music groups. A group without a score
MIDI stays on its own.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import mido

from pianolab.data.percepiano import Dataset

NGRAM = 6


def _pitch_sequence(path: Path) -> list[int]:
    notes, t = [], 0.0
    for msg in mido.MidiFile(path):
        t += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            notes.append((round(t, 3), msg.note))
    return [p for _, p in sorted(notes)]


def _ngrams(seq: list[int]) -> set[tuple[int, ...]]:
    return {tuple(seq[i : i + NGRAM]) for i in range(len(seq) - NGRAM + 1)}


def score_midi_path(root: Path, group: str) -> Path:
    """Score MIDI of an excerpt group: insert the player field `Score` before the segment."""
    head, segment = group.rsplit("_", 1)
    return Path(root) / "score_midi" / f"{head}_Score_{segment}.mid"


def music_groups(dataset: Dataset, threshold: float = 0.5) -> dict[str, str]:
    """Map each excerpt group to a music-group id (the sorted first member of its component)."""
    groups = sorted({it.group for it in dataset.items})
    section = {it.group: it.section for it in dataset.items}
    grams = {}
    for g in groups:
        path = score_midi_path(dataset.root, g)
        grams[g] = _ngrams(_pitch_sequence(path)) if path.is_file() else set()
    parent = {g: g for g in groups}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    by_section = defaultdict(list)
    for g in groups:
        by_section[section[g]].append(g)
    for members in by_section.values():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                small = min(len(grams[a]), len(grams[b]))
                if small and len(grams[a] & grams[b]) / small >= threshold:
                    parent[find(a)] = find(b)
    comps = defaultdict(list)
    for g in groups:
        comps[find(g)].append(g)
    return {g: min(members) for members in comps.values() for g in members}
