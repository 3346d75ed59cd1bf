"""Which score goes with a performance: the user's own (`predict --score`, a manifest's `score`
column) or, for a PercePiano file, its excerpt's score MIDI.

Given scores are registered for the duration of a call (`given_scores`), keyed by the performance's
real path (symlinks resolved), so a link and its target find the same score. A PercePiano name is
looked up beside its own data tree (`<midi>/../../score_midi/`) and then in the default data root.
MusicXML scores are converted to MIDI once with partitura (kept in the temporary folder by content hash).
The feature cache key of a score-aware kind includes the score's content hash (`input_key`), so a
changed score never serves stale features. Registrations live in this process (predict builds
features inline); parallel training builds use the PercePiano lookup only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pianolab.errors import PianolabError, fail

MIDI_SUFFIXES = {".mid", ".midi"}
XML_SUFFIXES = {".musicxml", ".xml", ".mxl"}
_GIVEN: dict[str, Path] = {}


def real(path: Path | str) -> str:
    return os.path.realpath(path)


@contextmanager
def given_scores(mapping: dict[Path, Path]) -> Iterator[None]:
    """Register `mapping` (performance -> score file) while the block runs."""
    added = {real(p): Path(s) for p, s in mapping.items()}
    before = {k: _GIVEN[k] for k in added if k in _GIVEN}
    _GIVEN.update(added)
    try:
        yield
    finally:
        for k in added:
            _GIVEN.pop(k, None)
        _GIVEN.update(before)


def percepiano_score(perf: Path | str) -> Path | None:
    """The score MIDI of a PercePiano-named performance (by its real name), or None."""
    from pianolab.data.music import score_midi_path
    from pianolab.data.percepiano import default_data_root, parse_stem

    target = Path(real(perf))
    try:
        group = parse_stem(target.stem).group
    except PianolabError:
        return None
    for root in (target.parent.parent, default_data_root()):
        path = score_midi_path(root, group)
        if path.is_file():
            return path
    return None


def find_score(perf: Path | str) -> Path | None:
    """The score given for `perf`, else its PercePiano score, else None."""
    return _GIVEN.get(real(perf)) or percepiano_score(perf)


def score_for(perf: Path | str) -> Path:
    """The score file of `perf`; a one-line error naming the performance when there is none."""
    score = find_score(perf)
    if score is None:
        raise fail(perf, f"no score given or found for {Path(perf).name} (pass --score FILE or a manifest "
                         "with a score column)")
    if not Path(score).is_file():
        raise fail(score, f"score file of {Path(perf).name} not found")
    return Path(score)


def score_midi(score: Path | str) -> Path:
    """A MIDI file of `score`: the file itself, or MusicXML converted by partitura (cached)."""
    score = Path(score)
    suffix = score.suffix.lower()
    if suffix in MIDI_SUFFIXES:
        return score
    if suffix not in XML_SUFFIXES:
        raise fail(score, "not a score file (MIDI .mid/.midi or MusicXML .musicxml/.xml/.mxl)")
    import tempfile

    out = Path(tempfile.gettempdir()) / "pianolab-scores" / f"{file_sha(score)}.mid"  # keyed by content
    if not out.is_file():
        import warnings

        import partitura

        from pianolab.atomic import atomic_path

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # partitura warns about every direction it skips
                parsed = partitura.load_score(str(score))
        except Exception as e:  # noqa: BLE001 - any parser failure is this file's problem
            raise fail(score, f"unreadable MusicXML score ({e.__class__.__name__}: {e})") from None
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            partitura.save_score_midi(parsed, str(tmp))
    return out


def file_sha(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def input_key(perf_sha: str, perf: Path | str, uses_score: bool) -> str:
    """The feature store's input key: the performance's hash, combined with its score's for a kind
    that reads the score ('none' when it has none: that entry is never written, the kind fails)."""
    if not uses_score:
        return perf_sha
    score = find_score(perf)
    score_sha = file_sha(score) if score is not None and Path(score).is_file() else "none"
    return hashlib.sha256(f"{perf_sha}|score:{score_sha}".encode()).hexdigest()
