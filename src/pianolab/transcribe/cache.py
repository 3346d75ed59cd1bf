"""Content-addressed transcriptions: audio file -> performance MIDI, once per file content and
transcriber version.

An entry lives at `<cache>/transcriptions/<key[:2]>/<key>/<audio stem>.mid`, key = sha256 of the audio
file's bytes and the transcriber's name and version; it is written atomically, so concurrent runs can
share a cache. The file keeps the recording's name (its stem names the performance downstream).
`<cache>` is the feature store's folder ($PIANOLAB_CACHE, else `cache/`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pianolab.atomic import atomic_path
from pianolab.audio import load_audio
from pianolab.errors import PianolabError
from pianolab.transcribe.base import make_transcriber

CHUNK = 64


def entry_path(audio: Path, transcriber, cache_dir: Path | None = None) -> Path:
    """Where `transcriber`'s transcription of `audio` lives (keyed by its name and version)."""
    audio_sha = hashlib.sha256(Path(audio).read_bytes()).hexdigest()
    key = hashlib.sha256(f"{audio_sha}|{transcriber.name}|{transcriber.version}".encode()).hexdigest()[:32]
    if cache_dir is None:
        from pianolab.features.store import default_cache_dir

        cache_dir = default_cache_dir()
    root = Path(cache_dir)
    return root / "transcriptions" / key[:2] / key / f"{Path(audio).stem.strip() or 'audio'}.mid"


def transcribe_files(paths: list[Path], transcriber: str = "transkun", cache_dir: Path | None = None,
                     **options) -> tuple[dict[Path, Path], list[str]]:
    """({audio path: transcribed MIDI path}, error lines) for `paths`; cached entries are reused and
    the rest are decoded and transcribed in batches. A file that cannot be decoded gets one line
    (`<file>: <problem>`) and the others still run."""
    tr = make_transcriber(transcriber, **options)
    done, todo, errors = {}, [], []
    for p in map(Path, paths):
        try:
            target = entry_path(p, tr, cache_dir)
        except FileNotFoundError:
            errors.append(f"{p}: no such file")
            continue
        except OSError as e:
            errors.append(f"{p}: cannot read ({e.strerror or type(e).__name__})")
            continue
        if target.is_file():
            done[p] = target
        else:
            todo.append((p, target))
    for start in range(0, len(todo), CHUNK):  # bounded memory: CHUNK decoded recordings at a time
        waves, targets = [], []
        for p, target in todo[start:start + CHUNK]:
            try:
                waves.append(load_audio(p, tr.sample_rate))
                targets.append((p, target))
            except PianolabError as e:
                errors.append(str(e))
        for (p, target), pm in zip(targets, tr.transcribe(waves) if waves else [], strict=True):
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                pm.write(str(tmp))
            done[p] = target
    return {Path(p): done[Path(p)] for p in paths if Path(p) in done}, errors
