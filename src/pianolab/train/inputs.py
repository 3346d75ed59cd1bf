"""Model inputs for one run: features from the feature store, as fixed-shape arrays.

`load_inputs` asks the feature store for every kind a config names (the same store `predict`
uses) and returns `Inputs`: `spec` (N, C, F, T) with T fixed by `seconds` (crop, or pad with the
array's minimum, i.e. silence on a log scale) and `vector` (N, D) with the named features of every
vector kind concatenated. NaN/inf in vectors become NaN here and are imputed by `VectorScaler`.
`load_wav_inputs` gives a config whose kinds all read audio (`hears_audio`) the same inputs from a recording;
`load_file_inputs` takes a mix of MIDI files and recordings, one row per file in order.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pianolab.config import FeatureConfig
from pianolab.errors import PianolabError


@dataclass
class Inputs:
    spec: np.ndarray | None  # (N, C, F, T) float32
    vector: np.ndarray | None  # (N, D) float32
    vector_names: list[str]
    ok: np.ndarray  # (N,) bool: False where a feature could not be computed

    def subset(self, idx: np.ndarray) -> Inputs:
        return Inputs(None if self.spec is None else self.spec[idx],
                      None if self.vector is None else self.vector[idx], self.vector_names, self.ok[idx])


def with_peer_columns(inputs: Inputs, groups: np.ndarray) -> Inputs:
    """`inputs` with every vector feature again minus its mean over the rows of the same group
    (`peer:` names): how a performance departs from the other performances of its excerpt."""
    x = inputs.vector.astype(np.float64)
    centred = np.empty_like(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a feature missing in a whole group stays NaN
        for g in np.unique(groups):
            rows = groups == g
            centred[rows] = x[rows] - np.nanmean(x[rows], axis=0)
    return Inputs(inputs.spec, np.hstack([x, centred]).astype(np.float32),
                  [*inputs.vector_names, *(f"peer:{n}" for n in inputs.vector_names)], inputs.ok)


def feature_spec(cfg: FeatureConfig, kind: str, copy: int = 0, augment: str | None = None):
    from pianolab.features.store import FeatureSpec

    return FeatureSpec.from_dict({"kind": kind, "renderer": cfg.renderer, "seconds": cfg.seconds,
                                  "length_policy": cfg.length_policy, "augment": augment, "copy": copy})


def frames_for(cfg: FeatureConfig) -> int:
    return int(round(cfg.seconds * feature_spec(cfg, cfg.spectrogram).frame_rate))


def _fit_frames(arr: np.ndarray, frames: int) -> np.ndarray:
    if arr.shape[-1] >= frames:
        return arr[..., :frames]
    pad = np.full(arr.shape[:-1] + (frames - arr.shape[-1],), arr.min(), dtype=arr.dtype)
    return np.concatenate([arr, pad], axis=-1)


def _joined(blocks: list[np.ndarray]) -> np.ndarray | None:
    """The vector kinds' blocks side by side, NaN where a feature is not finite (None without blocks)."""
    if not blocks:
        return None
    vector = np.concatenate(blocks, axis=1)
    vector[~np.isfinite(vector)] = np.nan
    return vector


def load_inputs(cfg: FeatureConfig, midi_paths: list[Path], device: str | None = None,
                on_error: str = "skip", progress: bool = False, copy: int = 0,
                augment: str | None = None, workers: int = 0) -> Inputs:
    """Features of every configured kind for `midi_paths` (one row per path)."""
    from pianolab.features.build import load_features

    if not cfg.spectrogram and not cfg.vector:
        raise PianolabError("features: name a spectrogram kind and/or vector kinds")
    n = len(midi_paths)
    ok = np.ones(n, dtype=bool)
    spec = None
    if cfg.spectrogram:
        table = load_features(midi_paths, feature_spec(cfg, cfg.spectrogram, copy, augment),
                              device=device, on_error=on_error, progress=progress, workers=workers)
        frames = frames_for(cfg)
        shape = next((a.shape for a in table.arrays if a is not None), None)
        if shape is None:  # every input failed: say why, once, rather than build nothing
            why = table.skipped[0][1] if table.skipped else "no input given"
            raise PianolabError(f"{cfg.spectrogram}: no input could be computed ({n} failed), e.g. {why}")
        spec = np.zeros((n, shape[0], shape[1], frames), dtype=np.float32)
        for i, a in enumerate(table.arrays):
            ok[i] &= a is not None
            if a is not None:
                spec[i] = _fit_frames(a.astype(np.float32), frames)
    blocks, names = [], []
    for kind in cfg.vector:
        table = load_features(midi_paths, feature_spec(cfg, kind, copy, augment), device=device,
                              on_error=on_error, progress=progress, workers=workers)
        width = len(table.names)
        block = np.full((n, width), np.nan, dtype=np.float32)
        for i, a in enumerate(table.arrays):
            ok[i] &= a is not None
            if a is not None:
                block[i] = a
        blocks.append(block)
        names += [f"{kind}:{x}" for x in table.names]
    return Inputs(spec, _joined(blocks), names, ok)


def hears_audio(cfg: FeatureConfig) -> bool:
    """Whether every kind `cfg` names is computed from audio (spectrograms, classic audio descriptors), so
    that a recording is heard as it is (not transcribed)."""
    from pianolab.features.kinds import get_kind

    kinds = [k for k in (cfg.spectrogram, *cfg.vector) if k]
    return bool(kinds) and all(get_kind(k).input == "audio" for k in kinds)


def load_wav_inputs(cfg: FeatureConfig, audio_paths: list[Path], device: str = "cpu") -> Inputs:
    """Inputs from recorded audio (WAV, FLAC, OGG, MP3: `pianolab.audio`) with the settings a MIDI
    input would get: the spectrogram of the recording's first `seconds` and the audio descriptors
    (`vector` kinds such as `all_traditional`) of all of it.

    Only configs whose every kind reads audio qualify (`hears_audio`; symbolic features come from MIDI).
    The recording's own level is kept, as rendered audio keeps its fixed-gain level; a recording far
    louder or quieter than the renders shifts the dynamics dimensions.
    """
    from pianolab.audio import load_audio
    from pianolab.features.kinds import get_kind
    from pianolab.features.spectrogram import LENGTH_POLICIES, compute_spectrograms
    from pianolab.render.audio import trim_trailing_silence

    if not hears_audio(cfg):
        raise PianolabError("this model needs MIDI input (its symbolic features come from MIDI)")
    specs = {kind: feature_spec(cfg, kind) for kind in (cfg.spectrogram, *cfg.vector) if kind}
    rates = {s.sample_rate for s in specs.values()}
    n = len(audio_paths)
    waves: dict[int, list[np.ndarray]] = {rate: [] for rate in rates}
    ok = np.ones(n, dtype=bool)
    for i, path in enumerate(audio_paths):
        for rate in rates:
            try:
                waves[rate].append(trim_trailing_silence(load_audio(path, rate), rate))
            except PianolabError:
                ok[i] = False
                waves[rate].append(np.zeros(rate, dtype=np.float32))
    spec = None
    if cfg.spectrogram:
        s = specs[cfg.spectrogram]
        cuts = [LENGTH_POLICIES.get(s.length_policy)(w, s.sample_rate, s.seconds, s.max_seconds)
                for w in waves[s.sample_rate]]
        arrays = compute_spectrograms(cuts, s.kind, s.sample_rate, s.frame_rate, device)
        spec = np.stack([_fit_frames(a, frames_for(cfg)) for a in arrays])
    blocks, names = [], []
    for kind in cfg.vector:
        k, s = get_kind(kind), specs[kind]
        block = np.full((n, len(k.names)), np.nan, dtype=np.float32)
        for i, wave in enumerate(waves[s.sample_rate]):
            if ok[i]:  # an unreadable recording stays NaN and not ok
                block[i] = k.compute(wave, s, None)
        blocks.append(block)
        names += [f"{kind}:{x}" for x in k.names]
    return Inputs(spec, _joined(blocks), names, ok)


def load_file_inputs(cfg: FeatureConfig, paths: list[Path], device: str | None = None,
                     progress: bool = False) -> Inputs:
    """Inputs of MIDI files (`load_inputs`) and recordings (`load_wav_inputs`, configs that read audio only),
    one row per path in the order of `paths`."""
    from pianolab.audio import is_audio

    heard = np.array([is_audio(p) for p in paths], dtype=bool)
    if not heard.any():
        return load_inputs(cfg, paths, device=device, progress=progress)
    wav = load_wav_inputs(cfg, [p for p, a in zip(paths, heard, strict=True) if a], device or "cpu")
    if heard.all():
        return wav
    midi = load_inputs(cfg, [p for p, a in zip(paths, heard, strict=True) if not a], device=device,
                       progress=progress)
    if midi.spec is not None and midi.spec.shape[1:] != wav.spec.shape[1:]:
        raise PianolabError(f"features: recordings give spectrograms of shape {wav.spec.shape[1:]}, MIDI files "
                            f"{midi.spec.shape[1:]}")
    order = np.argsort(np.concatenate([np.flatnonzero(~heard), np.flatnonzero(heard)]), kind="stable")
    both = Inputs(*(None if a is None else np.concatenate([a, b])
                    for a, b in ((midi.spec, wav.spec), (midi.vector, wav.vector))),
                  midi.vector_names, np.concatenate([midi.ok, wav.ok]))
    return both.subset(order)


@dataclass
class VectorScaler:
    """Median imputation + standardisation fitted on the training fold only."""

    median: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> VectorScaler:
        median = np.nan_to_num(np.nanmedian(x, axis=0))
        filled = np.where(np.isnan(x), median, x)
        std = filled.std(axis=0)
        return cls(median, filled.mean(axis=0), np.where(std > 1e-8, std, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        filled = np.where(np.isnan(x), self.median, x)
        return np.clip((filled - self.mean) / self.std, -10, 10).astype(np.float32)

    def state(self) -> dict:
        return {"median": self.median.tolist(), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_state(cls, d: dict) -> VectorScaler:
        return cls(*(np.asarray(d[k], dtype=np.float64) for k in ("median", "mean", "std")))
