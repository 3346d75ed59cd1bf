"""Registered MIDI -> audio renderers. `render(midi_bytes) -> (samples,) float32` at `sample_rate`.

- `midirenderer` (default, pip only): the `midirenderer` package (Rust, 48 kHz stereo 16-bit WAV) with
  the `TimGM6mb.sf2` SoundFont shipped inside the pretty_midi wheel.
- `fluidsynth`: the FluidSynth program with any SoundFont (Debian `fluid-soundfont-gm` by default),
  reverb and chorus configurable, fixed gain, 32-bit float output (no dither).
Both keep the sustain pedal (the synthesiser interprets CC64), trim trailing silence and apply a fixed
gain (never per-file peak normalisation). `midirenderer` skips synthesising a file's final rest
(`rest.py`; same bits). `settings()` records what identifies the output.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np

from pianolab.errors import PianolabError
from pianolab.registry import Registry
from pianolab.render.audio import decode_wav, finish
from pianolab.render.rest import render_skipping_rest

RENDERERS: Registry[type] = Registry("renderer")
FLUIDSYNTH_HELP = "install it with: apt-get install fluidsynth fluid-soundfont-gm"
DEFAULT_SF2 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


@cache
def _file_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def timgm6mb_path() -> Path:
    """The TimGM6mb SoundFont inside the installed pretty_midi package."""
    import importlib.util

    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or spec.origin is None:
        raise PianolabError("pretty_midi is not installed; it ships TimGM6mb.sf2 (pip install pretty_midi)")
    return Path(spec.origin).parent / "TimGM6mb.sf2"


@RENDERERS.register("midirenderer")
@dataclass(frozen=True)
class MidiRenderer:
    """midirenderer + TimGM6mb.sf2; 48 kHz stereo output downmixed and resampled to `sample_rate`."""

    sample_rate: int = 16000
    gain: float = 1.0

    def settings(self) -> dict:
        return {"renderer": "midirenderer", **asdict(self), "soundfont": "TimGM6mb.sf2",
                "versions": {"midirenderer": _version("midirenderer"), "pretty_midi": _version("pretty_midi"),
                             "soxr": _version("soxr")}}

    def render(self, midi: bytes) -> np.ndarray:
        try:
            import midirenderer
        except ImportError:
            raise PianolabError("renderer 'midirenderer' needs: pip install midirenderer") from None

        def synthesise(data: bytes) -> tuple[np.ndarray, int]:
            try:
                wav = midirenderer.render_wave_from(_file_bytes(str(timgm6mb_path())), data)
            except (ValueError, RuntimeError) as e:
                raise PianolabError(f"midirenderer failed ({e})") from None
            return decode_wav(bytes(wav))

        return render_skipping_rest(synthesise, midi, self.sample_rate, self.gain)


@RENDERERS.register("fluidsynth")
@dataclass(frozen=True)
class FluidSynthRenderer:
    """FluidSynth program: fixed gain, float output at 44.1 kHz, then downmix/resample/trim."""

    sample_rate: int = 16000
    gain: float = 0.5
    soundfont: str = str(DEFAULT_SF2)
    reverb: bool = False
    chorus: bool = False
    synth_rate: int = 44100

    def settings(self) -> dict:
        return {"renderer": "fluidsynth", **asdict(self), "versions": {"fluidsynth": self._program_version()}}

    def _program(self) -> str:
        exe = shutil.which("fluidsynth")
        if exe is None:
            raise PianolabError(f"renderer 'fluidsynth': program missing; {FLUIDSYNTH_HELP}")
        if not Path(self.soundfont).is_file():
            raise PianolabError(f"renderer 'fluidsynth': {self.soundfont} missing; {FLUIDSYNTH_HELP}")
        return exe

    def _program_version(self) -> str:
        exe = shutil.which("fluidsynth")
        if exe is None:
            return "missing"
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
        return out.splitlines()[0] if out else "unknown"

    def render(self, midi: bytes) -> np.ndarray:
        exe = self._program()
        with tempfile.TemporaryDirectory() as tmp:
            mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
            mid.write_bytes(midi)
            cmd = [exe, "-ni", "-q", "-g", str(self.gain), "-r", str(self.synth_rate),
                   "-R", str(int(self.reverb)), "-C", str(int(self.chorus)),
                   "-o", "audio.file.format=s32", "-o", "synth.cpu-cores=1",
                   "-F", str(wav), self.soundfont, str(mid)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0 or not wav.is_file():
                raise PianolabError(f"fluidsynth failed: {done.stderr.strip()[:200]}")
            audio, rate = decode_wav(wav.read_bytes())
        return finish(audio, rate, self.sample_rate, 1.0)


def make_renderer(name: str, sample_rate: int = 16000, **options):
    """Build a registered renderer; unknown names list the valid ones."""
    return RENDERERS.get(name)(sample_rate=sample_rate, **options)
