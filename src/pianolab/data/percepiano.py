"""PercePiano items: one labelled performance each, with its metadata and 19 labels.

File names follow `[piece]_[N]bars_[player]_[segment]`; the excerpt group is the name without
the player field. Players `Score`/`Score2` are deadpan renditions of the score, not people.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from pianolab.errors import PianolabError, fail

DIMENSIONS: tuple[str, ...] = (
    "timing_stable_unstable",
    "articulation_short_long",
    "articulation_soft_hard",
    "pedal_sparse_saturated",
    "pedal_clean_blurred",
    "timbre_even_colorful",
    "timbre_shallow_rich",
    "timbre_bright_dark",
    "timbre_soft_loud",
    "dynamic_sophisticated_raw",
    "dynamic_little_large_range",
    "music_making_fast_slow",
    "music_making_flat_spacious",
    "music_making_disproportioned_balanced",
    "music_making_pure_dramatic",
    "emotion_optimistic_dark",
    "emotion_low_high_energy",
    "emotion_honest_imaginative",
    "interpretation_unsatisfactory_convincing",
)
N_DIMS = len(DIMENSIONS)
DEADPAN_PLAYERS = frozenset({"Score", "Score2"})
MEAN_LABELS = "labels/label_2round_mean_reg_19_with0_rm_highstd0.json"
STD_LABELS = "labels/label_2round_std_reg_19_with0_rm_highstd0.json"
RATINGS = "labels/total_2rounds.csv"
DATA_ENV = "PIANOLAB_DATA"
_STEM = re.compile(r"^(?P<section>.+)_(?P<bars>\d+)bars_(?P<player>[^_]+)_(?P<segment>[^_]+)$")
_WORKS = ("Beethoven_WoO80", "Schubert_D935_no.3", "Schubert_D960_mv2", "Schubert_D960_mv3")


def default_data_root() -> Path:
    """Data root: $PIANOLAB_DATA, else `data/percepiano` of the working directory or the repo."""
    if env := os.environ.get(DATA_ENV):
        return Path(env)
    local = Path("data/percepiano")
    if local.is_dir():
        return local
    return Path(__file__).resolve().parents[3] / "data" / "percepiano"


@dataclass(frozen=True)
class StemParts:
    """The fields encoded in a performance file name."""

    section: str  # e.g. Beethoven_WoO80_var15 or Schubert_D960_mv3
    bars: int
    player: str
    segment: str

    @property
    def group(self) -> str:
        return f"{self.section}_{self.bars}bars_{self.segment}"

    @property
    def piece(self) -> str:
        """One of the four works (all WoO 80 variations are one piece)."""
        return next((w for w in _WORKS if self.section.startswith(w)), self.section)

    @property
    def composer(self) -> str:
        return self.section.split("_", 1)[0]


def parse_stem(stem: str) -> StemParts:
    """Split a performance stem into its fields; raises PianolabError on a foreign name."""
    m = _STEM.match(stem.strip())
    if not m:
        raise PianolabError(f"{stem!r}: not a PercePiano name [piece]_[N]bars_[player]_[segment]")
    return StemParts(m["section"], int(m["bars"]), m["player"], m["segment"])


@dataclass(frozen=True)
class Item:
    """One labelled performance. `labels` and `label_std` are 19 values on the 0..1 scale."""

    stem: str
    midi_path: Path
    piece: str
    section: str
    composer: str
    bars: int
    player: str
    segment: str
    group: str
    performer_index: int
    labels: tuple[float, ...]
    label_std: tuple[float, ...]

    @property
    def deadpan(self) -> bool:
        return self.player in DEADPAN_PLAYERS

    @property
    def performer(self) -> str:
        """Performer identity for splits: the player, with both deadpan renditions as one."""
        return "deadpan" if self.deadpan else self.player


@dataclass
class Dataset:
    """All labelled items of a data root plus what the check found."""

    root: Path
    items: list[Item]
    unlabelled_midi: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    midi_dir: Path | None = None  # where the performances' MIDI came from (default root/midi)

    def __len__(self) -> int:
        return len(self.items)

    @cached_property
    def stems(self) -> list[str]:
        return [it.stem for it in self.items]

    @cached_property
    def index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.stems)}

    @cached_property
    def labels(self) -> np.ndarray:
        """(items, 19) mean ratings / 7."""
        return np.array([it.labels for it in self.items], dtype=np.float64)

    @cached_property
    def label_std(self) -> np.ndarray:
        """(items, 19) rater standard deviation / 7."""
        return np.array([it.label_std for it in self.items], dtype=np.float64)

    def column(self, name: str) -> np.ndarray:
        """One metadata attribute of every item as an array (e.g. 'group', 'performer')."""
        return np.array([getattr(it, name) for it in self.items])

    @cached_property
    def version(self) -> str:
        """Data-version hash: label file contents plus the sorted MIDI file list."""
        h = hashlib.sha256()
        for rel in (MEAN_LABELS, STD_LABELS):
            h.update((self.root / rel).read_bytes())
        midi_dir = self.midi_dir or self.root / "midi"
        for name in sorted(p.name for p in midi_dir.glob("*.mid")):
            h.update(name.encode())
        return h.hexdigest()[:16]


def _read_label_file(path: Path) -> dict[str, list]:
    if not path.is_file():
        raise fail(path, "label file missing")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise fail(path, f"malformed label file ({e.__class__.__name__}: {e})") from None
    if not isinstance(data, dict):
        raise fail(path, "malformed label file: expected an object {stem: [values]}")
    return data


def _values(path: Path, stem: str, raw, n: int) -> list[float]:
    if not isinstance(raw, list) or len(raw) < n:
        raise fail(path, f"entry {stem!r} must be a list of at least {n} numbers")
    try:
        vals = [float(v) for v in raw[:n]]
    except (TypeError, ValueError):
        raise fail(path, f"entry {stem!r} holds a non-numeric value") from None
    if not all(0.0 <= v <= 1.0 for v in vals):
        raise fail(path, f"entry {stem!r} has a value outside 0..1")
    return vals


def load_dataset(root: Path | str | None = None, strict: bool = False, midi: Path | str | None = None) -> Dataset:
    """Load every labelled performance under `root` (default: `default_data_root()`).

    `midi`: the folder holding the performances as `<stem>.mid` (default `<root>/midi`), e.g. their
    transcriptions from recordings (`data.midi` of a run config). A label without MIDI is an error when
    `strict`, else a counted warning (the item is dropped); a MIDI without label is listed in
    `unlabelled_midi`.
    """
    root = Path(root) if root is not None else default_data_root()
    if not root.is_dir():
        raise fail(root, f"data folder not found (set --data-root or ${DATA_ENV})")
    midi_dir = Path(midi) if midi is not None else root / "midi"
    if not midi_dir.is_dir():
        raise fail(midi_dir, "MIDI folder not found")
    means = _read_label_file(root / MEAN_LABELS)
    stds = _read_label_file(root / STD_LABELS)
    # Keys are stripped: one file name starts with a space while its label key does not.
    midi = {p.stem.strip(): p for p in sorted(midi_dir.glob("*.mid"))}
    items, warnings = [], []
    for stem in sorted(means):
        raw = means[stem]
        if stem not in midi:
            msg = f"{root / MEAN_LABELS}: label key {stem!r} has no MIDI file"
            if strict:
                raise PianolabError(msg)
            warnings.append(msg)
            continue
        if stem not in stds:
            raise fail(root / STD_LABELS, f"no std entry for {stem!r}")
        parts = parse_stem(stem)
        labels = _values(root / MEAN_LABELS, stem, raw, N_DIMS)
        items.append(
            Item(
                stem=stem,
                midi_path=midi[stem],
                piece=parts.piece,
                section=parts.section,
                composer=parts.composer,
                bars=parts.bars,
                player=parts.player,
                segment=parts.segment,
                group=parts.group,
                performer_index=int(raw[N_DIMS]) if len(raw) > N_DIMS else -1,
                labels=tuple(labels),
                label_std=tuple(_values(root / STD_LABELS, stem, stds[stem], N_DIMS)),
            )
        )
    unlabelled = sorted(s for s in midi if s not in means)
    return Dataset(root=root, items=items, unlabelled_midi=unlabelled, warnings=warnings, midi_dir=midi_dir)
