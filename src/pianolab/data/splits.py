"""Named, versioned, leak-checked fold assignments.

A split is data: `make_split` builds it once from a registered strategy and writes
`<splits dir>/<name>-k<K>-r<R>-s<seed>.json`; `get_split` reads that file when it exists (checking
the data version and leaks on every load) and builds it otherwise. Each repeat r uses seed+r, so
repeated K-fold gives a different partition per repeat, identical for every variant.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pianolab.atomic import atomic_path
from pianolab.data.music import music_groups
from pianolab.data.percepiano import Dataset
from pianolab.errors import PianolabError, fail
from pianolab.registry import Registry

FORMAT_VERSION = 1
SPLITS_ENV = "PIANOLAB_SPLITS"


@dataclass(frozen=True)
class Fold:
    """Train and test stems of one fold; `inner` holds tuning folds inside `train` (nested CV)."""

    train: tuple[str, ...]
    test: tuple[str, ...]
    inner: tuple[Fold, ...] = ()

    def to_json(self) -> dict:
        out = {"train": list(self.train), "test": list(self.test)}
        if self.inner:
            out["inner"] = [f.to_json() for f in self.inner]
        return out

    @classmethod
    def from_json(cls, d: dict) -> Fold:
        inner = tuple(cls.from_json(x) for x in d.get("inner", ()))
        return cls(tuple(d["train"]), tuple(d["test"]), inner)


@dataclass(frozen=True)
class Split:
    """Fold assignments: `repeats[r][k]` is fold k of repeat r (seed `seed + r`)."""

    name: str
    folds: int
    n_repeats: int
    seed: int
    description: str
    guards: tuple[str, ...]
    data_version: str
    repeats: tuple[tuple[Fold, ...], ...]
    params: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.name}-k{self.folds}-r{self.n_repeats}-s{self.seed}"

    @property
    def digest(self) -> str:
        """Content hash of the assignments (part of every run's identity)."""
        return hashlib.sha256(json.dumps(self.to_json()["repeats"]).encode()).hexdigest()[:12]

    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "folds": self.folds,
            "n_repeats": self.n_repeats,
            "seed": self.seed,
            "description": self.description,
            "guards": list(self.guards),
            "data_version": self.data_version,
            "params": self.params,
            "repeats": [[f.to_json() for f in rep] for rep in self.repeats],
        }

    @classmethod
    def from_json(cls, d: dict) -> Split:
        return cls(
            name=d["name"],
            folds=d["folds"],
            n_repeats=d["n_repeats"],
            seed=d["seed"],
            description=d["description"],
            guards=tuple(d["guards"]),
            data_version=d["data_version"],
            params=d.get("params", {}),
            repeats=tuple(tuple(Fold.from_json(f) for f in rep) for rep in d["repeats"]),
        )


@dataclass(frozen=True)
class Strategy:
    """How to partition: `make(dataset, folds, rng) -> list[Fold]` for one repeat."""

    make: Callable[[Dataset, int, np.random.Generator], list[Fold]]
    description: str
    guards: tuple[str, ...]
    default_folds: int = 4


STRATEGIES: Registry[Strategy] = Registry("split")


def _attribute(dataset: Dataset, name: str) -> dict[str, str]:
    """stem -> value of a guard attribute ('music_group' is derived from the score MIDI)."""
    if name == "music_group":
        mg = music_groups(dataset)
        return {it.stem: mg[it.group] for it in dataset.items}
    return {it.stem: str(getattr(it, name)) for it in dataset.items}


def _units(dataset: Dataset, attr: str, stems: list[str] | None = None) -> dict[str, list[str]]:
    values = _attribute(dataset, attr)
    units = defaultdict(list)
    for s in stems if stems is not None else dataset.stems:
        units[values[s]].append(s)
    return dict(units)


def _assign(units: dict[str, list[str]], order: list[str], k: int) -> list[list[str]]:
    """Greedy balanced assignment of units (in the given order) to the fold with fewest items."""
    buckets: list[list[str]] = [[] for _ in range(k)]
    for u in order:
        buckets[int(np.argmin([len(b) for b in buckets]))].extend(units[u])
    return buckets


def _folds_from_tests(all_stems: list[str], tests: list[list[str]]) -> list[Fold]:
    folds = []
    for test in tests:
        t = set(test)
        folds.append(Fold(tuple(s for s in all_stems if s not in t), tuple(sorted(test))))
    return folds


def _group_kfold(
    dataset: Dataset, k: int, rng: np.random.Generator, attr: str, stems: list[str] | None = None
) -> list[Fold]:
    stems = sorted(stems if stems is not None else dataset.stems)
    units = _units(dataset, attr, stems)
    names = sorted(units)
    shuffled = [names[i] for i in rng.permutation(len(names))]
    order = sorted(shuffled, key=lambda u: -len(units[u]))  # big units first, ties shuffled
    if len(names) < k:
        raise PianolabError(f"cannot make {k} folds from {len(names)} {attr} units")
    return _folds_from_tests(stems, _assign(units, order, k))


def _register(name: str, description: str, guards: tuple[str, ...], default_folds: int = 4):
    def deco(fn):
        STRATEGIES.add(name, Strategy(fn, description, guards, default_folds))
        return fn

    return deco


@_register(
    "random",
    "K-fold over single performances. LEAKY: performances of one excerpt land on both sides, "
    "so it measures recognising the music, not judging the performance; for comparison only.",
    (),
)
def _random(ds, k, rng):
    return _group_kfold(ds, k, rng, "stem")


@_register("excerpt", "K-fold by excerpt (segment) group, as in the PercePiano piece split.", ("group",))
def _excerpt(ds, k, rng):
    return _group_kfold(ds, k, rng, "group")


@_register(
    "music",
    "K-fold by music group: excerpt groups whose scores overlap (D960 8- vs 16-bar cuts, detected "
    "by shared pitch 6-grams of the score MIDI) stay on one side.",
    ("music_group", "group"),
)
def _music(ds, k, rng):
    return _group_kfold(ds, k, rng, "music_group")


@_register(
    "performer",
    "K-fold by performer: no performer on both sides; the deadpan Score/Score2 renditions count "
    "as one pseudo-performer. Excerpt groups are necessarily shared (new players, known music).",
    ("performer",),
)
def _performer(ds, k, rng):
    return _group_kfold(ds, k, rng, "performer")


@_register(
    "leave_one_performer_out",
    "One fold per human performer (test: that performer); deadpan renditions always train.",
    ("performer",),
    default_folds=0,
)
def _lopo(ds, k, rng):
    units = _units(ds, "performer")
    humans = sorted((p for p in units if p != "deadpan"), key=lambda p: (len(p), p))
    return _folds_from_tests(sorted(ds.stems), [units[p] for p in humans])


@_register("composer", "Train on one composer, test on the other (Beethoven vs Schubert).",
           ("composer", "group"), default_folds=2)
def _composer(ds, k, rng):
    units = _units(ds, "composer")
    return _folds_from_tests(sorted(ds.stems), [units[c] for c in sorted(units)])


@_register("piece", "Leave one of the 4 pieces out (WoO 80, D935 no.3, D960 mv2, D960 mv3).",
           ("piece", "group"), default_folds=4)
def _piece(ds, k, rng):
    units = _units(ds, "piece")
    return _folds_from_tests(sorted(ds.stems), [units[p] for p in sorted(units)])


def _group_order_by_data_id(ds: Dataset) -> list[str]:
    from pianolab.data.ratings import load_ratings

    table = load_ratings(ds.root).table
    group_of = {it.stem: it.group for it in ds.items}
    table = table.assign(group=table["stem"].map(group_of)).dropna(subset=["group"])
    return list(table.groupby("group")["data_id"].median().sort_values(kind="stable").index)


@_register(
    "temporal",
    "PROXY for a temporal split: PercePiano has no recording dates, so excerpt groups are ordered "
    "by the median survey dataID of their ratings (the order items entered the survey) and cut "
    "into K contiguous blocks.",
    ("group",),
)
def _temporal(ds, k, rng):
    order = _group_order_by_data_id(ds)
    units = _units(ds, "group")
    blocks = np.array_split(np.arange(len(order)), k)
    return _folds_from_tests(sorted(ds.stems), [[s for i in b for s in units[order[i]]] for b in blocks])


@_register(
    "stratified_difficulty",
    "K-fold by excerpt group with folds balanced in difficulty = the group's mean rater "
    "disagreement (label std over items and dimensions): groups sorted by it are dealt to folds "
    "in shuffled rounds of K.",
    ("group",),
)
def _stratified(ds, k, rng):
    units = _units(ds, "group")
    std = {it.stem: float(np.mean(it.label_std)) for it in ds.items}
    diff = {g: np.mean([std[s] for s in stems]) for g, stems in units.items()}
    order = sorted(units, key=lambda g: diff[g])
    tests: list[list[str]] = [[] for _ in range(k)]
    for start in range(0, len(order), k):
        for fold, g in zip(rng.permutation(k), order[start : start + k], strict=False):
            tests[fold].extend(units[g])
    return _folds_from_tests(sorted(ds.stems), tests)


@_register("holdout", "One fold: 20% of excerpt groups held out for final evaluation.", ("group",),
           default_folds=1)
def _holdout(ds, k, rng):
    units = _units(ds, "group")
    names = sorted(units)
    n_test = max(1, round(0.2 * len(names)))
    test = [s for i in rng.permutation(len(names))[:n_test] for s in units[names[i]]]
    return _folds_from_tests(sorted(ds.stems), [test])


@_register("nested", "Outer K-fold by excerpt group for performance; inner K-fold by excerpt "
           "group inside each outer training set for tuning.", ("group",))
def _nested(ds, k, rng):
    outer = _group_kfold(ds, k, rng, "group")
    return [Fold(f.train, f.test, tuple(_group_kfold(ds, k, rng, "group", list(f.train))))
            for f in outer]


def check_leaks(split: Split, dataset: Dataset, source: str | Path = "<split>") -> None:
    """Raise PianolabError naming `source` if a guard value or stem is on both sides of a fold."""
    known = set(dataset.stems)
    values = {g: _attribute(dataset, g) for g in split.guards}

    def check(fold: Fold, where: str) -> None:
        train, test = set(fold.train), set(fold.test)
        if unknown := (train | test) - known:
            raise fail(source, f"{where}: unknown stem {sorted(unknown)[0]!r}")
        if both := train & test:
            raise fail(source, f"{where}: performance {sorted(both)[0]!r} on both sides")
        for g, val in values.items():
            if both := {val[s] for s in train} & {val[s] for s in test}:
                raise fail(source, f"{where}: {g} {sorted(both)[0]!r} on both sides (leak)")
        for j, inner in enumerate(fold.inner):
            if not set(inner.train) | set(inner.test) <= train:
                raise fail(source, f"{where} inner {j}: uses items outside the outer training set")
            check(inner, f"{where} inner {j}")

    for r, rep in enumerate(split.repeats):
        for k, fold in enumerate(rep):
            check(fold, f"repeat {r} fold {k}")


def splits_dir() -> Path:
    return Path(os.environ.get(SPLITS_ENV, "splits"))


def make_split(dataset: Dataset, name: str, folds: int | None = None, repeats: int = 1,
               seed: int = 0) -> Split:
    """Build a split in memory (no file written) and leak-check it."""
    strategy = STRATEGIES.get(name)
    k = folds if folds is not None else strategy.default_folds
    reps = tuple(tuple(strategy.make(dataset, k, np.random.default_rng(seed + r)))
                 for r in range(repeats))
    split = Split(name=name, folds=len(reps[0]), n_repeats=repeats, seed=seed,
                  description=strategy.description, guards=strategy.guards,
                  data_version=dataset.version, repeats=reps)
    check_leaks(split, dataset)
    return split


def save_split(split: Split, directory: Path | None = None) -> Path:
    directory = directory or splits_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{split.id}.json"
    with atomic_path(path) as tmp:  # cells of one experiment may save the same split at once
        tmp.write_text(json.dumps(split.to_json(), indent=1))
    return path


def load_split(path: Path, dataset: Dataset) -> Split:
    """Read a split file, check its format and data version, and leak-check it."""
    try:
        data = json.loads(Path(path).read_text())
        split = Split.from_json(data)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise fail(path, f"unreadable split file ({e.__class__.__name__}: {e})") from None
    if data.get("format_version") != FORMAT_VERSION:
        raise fail(path, f"split format {data.get('format_version')} != {FORMAT_VERSION}")
    if split.data_version != dataset.version:
        raise fail(path, f"made for data version {split.data_version}, data is {dataset.version}")
    check_leaks(split, dataset, path)
    return split


def get_split(dataset: Dataset, name: str, folds: int | None = None, repeats: int = 1,
              seed: int = 0, directory: Path | None = None) -> Split:
    """Load the saved split with these settings, or make and save it once."""
    strategy = STRATEGIES.get(name)
    k = folds if folds is not None else strategy.default_folds
    directory = directory or splits_dir()
    path = directory / f"{name}-k{k}-r{repeats}-s{seed}.json"
    if path.is_file():
        return load_split(path, dataset)
    split = make_split(dataset, name, folds, repeats, seed)
    if split.id != path.stem:  # strategies with a fixed fold count
        path = directory / f"{split.id}.json"
        if path.is_file():
            return load_split(path, dataset)
    save_split(split, directory)
    return split


# The PercePiano paper's two protocols, rebuilt from the file names as its code does
# (virtuoso/pyScoreParser/m2pf_dataset_compositionfold.py and m2pf_dataset_performerfold.py in
# github.com/JonghoKimSNU/PercePiano). Each has a fixed test set; fold k trains on the items outside
# the test set and outside validation fold k (the paper's early-stopping set, unused here) and is
# scored on the test set, so the protocol's figure is the mean over the K fold models.
PAPER_SEED = 42
PAPER_BEETHOVEN_PLAYERS = ("1", "2", "3", "4", "7", "11", "14", "18", "19", "22", "24", "26")


def _paper_folds(ds: Dataset, test: set[str], valid: list[set[str]]) -> list[Fold]:
    stems = sorted(ds.stems)
    return [Fold(tuple(s for s in stems if s not in test and s not in v), tuple(sorted(test))) for v in valid]


@_register(
    "percepiano_composition",
    "The PercePiano paper's composition (piece) 4-fold protocol: excerpt groups shuffled with "
    "Python's random(42), groups of more than one performance drawn until 15% of the items form a "
    "fixed test set, the other groups dealt round-robin to 4 validation folds; fold k trains on the "
    "items outside the test set and validation fold k and is scored on the test set.",
    ("group",), default_folds=4,
)
def _paper_composition(ds, k, rng):
    import random

    paper_rng = random.Random(PAPER_SEED)
    stems = sorted(s.strip() for s in ds.stems)
    paper_rng.shuffle(stems)
    by_group: dict[str, list[str]] = defaultdict(list)
    for s in stems:
        parts = s.split("_")
        by_group["_".join(parts[:-2] + parts[-1:])].append(s)
    test: list[str] = []
    while len(test) < 0.15 * len(stems):
        key = paper_rng.choice(list(by_group))
        if len(by_group[key]) > 1:
            test += by_group.pop(key)
    valid: list[set[str]] = [set() for _ in range(k)]
    for i, members in enumerate(by_group.values()):
        valid[i % k].update(members)
    original = {s.strip(): s for s in ds.stems}  # one file name starts with a space
    return _paper_folds(ds, {original[s] for s in test}, [{original[s] for s in v} for v in valid])


def _paper_performer_id(item) -> int:
    """The paper code's performer number: Score 0, Score2 -1 (always trained on), Beethoven's
    players renumbered by their position in its list, Schubert's as written."""
    if item.player in ("Score", "Score2"):
        return 0 if item.player == "Score" else -1
    if item.composer == "Beethoven":
        return PAPER_BEETHOVEN_PLAYERS.index(item.player)
    return int(item.player)


@_register(
    "percepiano_performer",
    "The PercePiano paper's performer 4-fold protocol: test = performer numbers 1 and 2 of its "
    "code, validation fold k = numbers 2k+3 and 2k+4. Not performer-clean: the code renumbers "
    "Beethoven's players, so player 1 trains (Beethoven) and is tested (Schubert).",
    (), default_folds=4,
)
def _paper_performer(ds, k, rng):
    ids = {it.stem: _paper_performer_id(it) for it in ds.items}
    test = {s for s, p in ids.items() if p in (1, 2)}
    valid = [{s for s, p in ids.items() if p in (2 * f + 3, 2 * f + 4)} for f in range(k)]
    return _paper_folds(ds, test, valid)
