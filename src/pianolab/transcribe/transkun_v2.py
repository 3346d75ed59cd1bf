"""Transkun 2 (`transkun` on PyPI, MIT; weights inside its wheel): piano notes, velocities and the
sustain (CC64) and soft (CC67) pedals from 44.1 kHz audio.

torchaudio, which transkun imports, has no build for this project's torch. Transkun uses it only in
`MelSpectrum.__init__` to fill the `freq2mels` buffer, which the checkpoint then overwrites. While the
model is built, a one-function module stands in for it in `sys.modules` (the HTK mel filterbank from
librosa, the same triangle filters); it is removed afterwards, and the checkpoint is loaded strictly, so
the buffer the model uses is the checkpoint's own (tests/test_transcribe.py checks it bit for bit).

Inference follows `TransKun.transcribe` (16 s windows every 8 s; each window's decoding starts where
the previous one left each pitch), with several recordings in one batch, window by window.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import sys
import types
import warnings
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from functools import cache
from pathlib import Path

import numpy as np

from pianolab.errors import PianolabError
from pianolab.transcribe.base import TRANSCRIBERS, pick_device

INSTALL = "pip install --no-deps transkun==2.0.1 (its other needs: pip install 'pianolab[transcribe]')"


def melscale_fbanks(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int,
                    norm=None, mel_scale: str = "htk"):
    """torchaudio.functional.melscale_fbanks's (n_freqs, n_mels) matrix, from librosa."""
    import librosa
    import torch

    if norm is not None or mel_scale != "htk":
        raise NotImplementedError("only the HTK mel scale without norm (what transkun asks for)")
    fb = librosa.filters.mel(sr=sample_rate, n_fft=2 * (n_freqs - 1), n_mels=n_mels, fmin=f_min, fmax=f_max,
                             htk=True, norm=None, dtype=np.float32)
    return torch.from_numpy(fb.T.copy())


@contextmanager
def torchaudio_shim():
    """`import torchaudio` yields a module with `functional.melscale_fbanks` only, inside the block."""
    saved = sys.modules.get("torchaudio")
    shim = types.ModuleType("torchaudio")
    shim.functional = types.SimpleNamespace(melscale_fbanks=melscale_fbanks)
    sys.modules["torchaudio"] = shim
    try:
        yield
    finally:
        if saved is None:
            sys.modules.pop("torchaudio", None)
        else:
            sys.modules["torchaudio"] = saved


def package_files() -> tuple[Path, Path]:
    """(weights, conf) inside the installed transkun package."""
    import importlib.util

    spec = importlib.util.find_spec("transkun")
    if spec is None or spec.origin is None:
        raise PianolabError(f"transcriber 'transkun' is not installed: {INSTALL}")
    folder = Path(spec.origin).parent / "pretrained"
    return folder / "2.0.pt", folder / "2.0.conf"


@cache
def load_model(device: str):
    """The Transkun 2 model from the wheel's checkpoint (strict: every tensor, the mel buffer too)."""
    import torch

    weights, conf_path = package_files()
    try:
        with torchaudio_shim():
            from transkun.ModelTransformer import TransKun
    except ImportError as e:
        raise PianolabError(f"transcriber 'transkun' cannot be imported ({e}): {INSTALL}") from None
    conf = TransKun.Config()
    conf.__dict__.update(json.loads(conf_path.read_text())["Model"]["config"])
    with torchaudio_shim():
        model = TransKun(conf=conf)
    state = torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


@TRANSCRIBERS.register("transkun")
class Transkun:
    """Transkun 2; `device` 'auto' (cuda if available), `precision` 'fp32' or 'bf16' (autocast on
    CUDA), `batch_size` recordings per forward pass."""

    name = "transkun"
    sample_rate = 44100

    def __init__(self, device: str = "auto", precision: str = "fp32", batch_size: int = 8):
        if precision not in ("fp32", "bf16"):
            raise PianolabError(f"transkun: precision {precision!r}; valid: bf16, fp32")
        self.device = pick_device(device)
        self.precision = precision if self.device.startswith("cuda") else "fp32"
        self.batch_size = max(1, int(batch_size))

    @property
    def version(self) -> str:
        try:
            return f"transkun-{importlib.metadata.version('transkun')}-2.0.pt-{self.precision}"
        except importlib.metadata.PackageNotFoundError:
            raise PianolabError(f"transcriber 'transkun' is not installed: {INSTALL}") from None

    def transcribe(self, waves: list[np.ndarray]) -> list:
        """pretty_midi.PrettyMIDI for each mono wave at 44.1 kHz; batches of similar length."""
        from transkun.Data import writeMidi

        order = np.argsort([len(w) for w in waves])
        out = [None] * len(waves)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            for i, notes in zip(idx, self._batch([waves[i] for i in idx]), strict=True):
                out[i] = writeMidi(notes)
        return out

    def _batch(self, waves: list[np.ndarray]) -> list[list]:
        import torch

        model = load_model(self.device)
        amp = (torch.autocast("cuda", dtype=torch.bfloat16) if self.precision == "bf16" else nullcontext())
        with torch.inference_mode(), amp, warnings.catch_warnings():
            # transkun wraps its layers in torch.utils.checkpoint, which warns when no gradient is needed
            warnings.filterwarnings("ignore", message=".*(use_reentrant|requires_grad).*")
            return transcribe_batch(model, [torch.from_numpy(np.ascontiguousarray(w, np.float32)) for w in waves])


def transcribe_batch(model, waves: list) -> list[list]:
    """`TransKun.transcribe` for several mono 1-D tensors at once: window i of every recording that
    is that long goes into one forward pass. Returns each recording's notes (transkun `Note`s)."""
    import torch
    import torch.nn.functional as F
    from transkun.Data import resolveOverlapping
    from transkun.Util import makeFrame

    fs, hop, device = model.fs, model.hopSize, next(model.parameters()).device
    pad_s = model.segmentSizeInSecond - model.segmentHopSizeInSecond
    step = math.ceil(model.segmentHopSizeInSecond * fs / hop) * hop
    size = math.ceil(model.segmentSizeInSecond * fs)
    n_sym = len(model.targetMIDIPitch)
    padded = [F.pad(w.to(device)[None], (math.ceil(pad_s * fs), math.ceil(pad_s * fs))) for w in waves]
    start_pos = [[math.floor(pad_s * fs / hop)] * n_sym for _ in waves]
    by_pitch = [defaultdict(list) for _ in waves]
    for i in range(0, max(p.shape[-1] for p in padded), step):
        active = [b for b, p in enumerate(padded) if i < p.shape[-1]]
        frames = torch.stack([makeFrame(F.pad(padded[b][:, i:i + size], (0, max(0, size - padded[b][:, i:i + size]
                                                                              .shape[-1]))), hop, model.windowSize)
                              for b in active])
        events, last = model.transcribeFrames(frames, forcedStartPos=sum((start_pos[b] for b in active), []),
                                              velocityCriteron="hamming", onsetBound=None,
                                              lastFrameIdx=round(size / hop))
        begin = i / fs - pad_s
        for k, b in enumerate(active):
            start_pos[b] = [max(p - step // hop, 0) for p in last[k * n_sym:(k + 1) * n_sym]]
            for e in events[k]:
                e.start = max(e.start + begin, 0)
                e.end = max(e.end + begin, e.start)
                _merge(by_pitch[b], e)
    out = []
    for events in by_pitch:
        for pitch_events in events.values():
            if pitch_events:
                pitch_events[-1].hasOffset = True
        out.append(resolveOverlapping([e for es in events.values() for e in es if e.hasOffset]))
    return out


def _merge(events: dict, e) -> None:
    """Transkun's rule for a note that overlaps the previous window's last note of its pitch."""
    same = events[e.pitch]
    if same and e.start < same[-1].end:
        if e.hasOnset:
            same[-1] = e
        else:
            same[-1].hasOffset = e.hasOffset
            same[-1].end = max(e.end, same[-1].end)
    elif e.hasOnset:
        same.append(e)
