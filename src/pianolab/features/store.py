"""Content-addressed feature store: the same features in training and in prediction.

An entry's key is sha256(input file bytes) + the spec key (the settings its kind depends on plus the
kind's version). Entries live in `<cache>/<kind>/<key[:2]>/<key>.npy`, written atomically (temp file +
rename), and `<cache>/manifest.jsonl` records how each was made (spec, renderer settings, versions);
appends are serialised with a file lock, so several processes can build into one cache. Default cache
folder: $PIANOLAB_CACHE, else `cache/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from pianolab.atomic import atomic_path
from pianolab.errors import PianolabError
from pianolab.features.kinds import get_kind
from pianolab.features.spectrogram import LENGTH_POLICIES
from pianolab.presets import PRESETS
from pianolab.render.renderers import RENDERERS

CACHE_ENV = "PIANOLAB_CACHE"
MANIFEST = "manifest.jsonl"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, "cache"))


@dataclass(frozen=True)
class FeatureSpec:
    """What to compute from one MIDI file. `copy` 0 is the clean performance; copies >= 1 are
    augmented with preset `augment`. `seconds`/`length_policy`/`max_seconds`: see spectrogram.py."""

    kind: str
    renderer: str = "midirenderer"
    sample_rate: int = 16000
    frame_rate: int = 100
    seconds: float = 10.0
    length_policy: str = "crop"
    max_seconds: float = 60.0
    augment: str | None = None
    copy: int = 0

    def __post_init__(self):
        get_kind(self.kind)
        RENDERERS.get(self.renderer)
        LENGTH_POLICIES.get(self.length_policy)
        if self.augment is not None:
            PRESETS.get(self.augment)
        if self.copy < 0 or (self.copy > 0 and self.augment is None):
            raise PianolabError(f"feature spec: copy={self.copy}: needs >= 0, and a preset when > 0")
        if self.sample_rate % self.frame_rate:
            raise PianolabError(f"feature spec: sample_rate {self.sample_rate} is not a multiple of "
                                f"frame_rate {self.frame_rate}")
        if self.seconds <= 0 or self.max_seconds <= 0:
            raise PianolabError("feature spec: seconds and max_seconds must be positive")

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        """Strict: an unknown key is an error listing the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise PianolabError(f"feature spec: unknown key(s) {', '.join(unknown)}; "
                                f"valid: {', '.join(valid)}")
        if "kind" not in d:
            raise PianolabError("feature spec: 'kind' is required")
        return cls(**d)

    def as_dict(self) -> dict:
        return asdict(self)

    def relevant(self) -> dict:
        """The settings this spec's kind depends on, plus the kind's version."""
        kind = get_kind(self.kind)
        return {**{k: getattr(self, k) for k in kind.uses}, "version": kind.version}

    def key(self) -> str:
        """Content hash of the relevant settings (16 hex digits)."""
        blob = json.dumps(self.relevant(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def render_key(self) -> tuple:
        return (self.renderer, self.sample_rate, self.augment, self.copy)


@dataclass
class FeatureTable:
    """`arrays[i]` belongs to input i (None when skipped): float32 (C, bins, frames) or (n_features,)."""

    spec: FeatureSpec
    arrays: list[np.ndarray | None]
    names: tuple[str, ...] | None
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    hits: int = 0
    computed: int = 0

    def matrix(self) -> np.ndarray:
        """(n_items, n_features) of a vector kind, NaN rows for skipped items."""
        width = len(self.names or ())
        return np.stack([a if a is not None else np.full(width, np.nan, np.float32) for a in self.arrays])


class Store:
    """Read and write entries of one cache folder."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, spec: FeatureSpec, input_sha: str) -> Path:
        entry = hashlib.sha256(f"{input_sha}|{spec.key()}".encode()).hexdigest()[:32]
        return self.root / spec.kind / entry[:2] / f"{entry}.npy"

    def get(self, spec: FeatureSpec, input_sha: str) -> np.ndarray | None:
        p = self.path(spec, input_sha)
        if not p.is_file():
            return None
        try:
            return np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None  # a damaged entry is recomputed and overwritten

    def put(self, spec: FeatureSpec, input_sha: str, array: np.ndarray, record: dict) -> None:
        p = self.path(spec, input_sha)
        p.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(p) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array, dtype=np.float32), allow_pickle=False)
        self.append_manifest({"entry": p.stem, "path": str(p.relative_to(self.root)), "kind": spec.kind,
                              "spec_key": spec.key(), "spec": spec.relevant(), "input_sha256": input_sha,
                              "shape": list(array.shape), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              **record})

    def append_manifest(self, record: dict) -> None:
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f"{MANIFEST}.lock")):
            with open(self.root / MANIFEST, "a") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")

    def manifest(self) -> list[dict]:
        path = self.root / MANIFEST
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*.npy")) if self.root.is_dir() else 0


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
