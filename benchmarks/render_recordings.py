"""Render performances to audio with a SoundFont other than the training one, as stand-in recordings.

`soundfont` FILE OUT.sf2 [--bank B --preset P]: one preset of a SoundFont (e.g. Debian's FluidR3_GM.sf2,
141 MB) as a small SF2: the preset/instrument tables are kept whole, the sample data only of the samples
that preset plays (the others point to a short silence). Small enough to travel to the GPU machine.

`render` MIDI_DIR OUT_DIR --soundfont SF2 [--chain room] [--workers N]: every .mid rendered by midirenderer
with that SoundFont (48 kHz stereo -> mono 44.1 kHz, fixed gain, as the project's renderer does), through
an optional recording chain (`room`: a synthetic room reverb, RT60 0.5 s, 25 % wet; a 6 kHz low-pass; white
noise 40 dB below the signal's RMS; seeded by the file name), written as 16-bit FLAC.

    python benchmarks/render_recordings.py soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2 piano.sf2
    python benchmarks/render_recordings.py render data/percepiano/midi renders --soundfont piano.sf2
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

RATE = 44100


def _chunks(buf: bytes, start: int, end: int):
    while start < end:
        cid, size = buf[start:start + 4], struct.unpack("<I", buf[start + 4:start + 8])[0]
        yield cid, start + 8, size
        start += 8 + size + (size & 1)


def _records(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def _chunk(cid: bytes, body: bytes) -> bytes:
    return cid + struct.pack("<I", len(body)) + body + (b"\0" if len(body) & 1 else b"")


def one_preset(sf2: bytes, bank: int = 0, preset: int = 0) -> bytes:
    """A copy of `sf2` whose sample data holds only what preset (bank, preset) plays."""
    lists = {}
    for cid, off, size in _chunks(sf2, 12, len(sf2)):
        assert cid == b"LIST"
        lists[sf2[off:off + 4]] = {c: sf2[o:o + s] for c, o, s in _chunks(sf2, off + 4, off + size)}
    info, pdta, smpl = lists[b"INFO"], lists[b"pdta"], lists[b"sdta"][b"smpl"]
    phdr, pbag, pgen = _records(pdta[b"phdr"], 38), _records(pdta[b"pbag"], 4), _records(pdta[b"pgen"], 4)
    inst, ibag, igen = _records(pdta[b"inst"], 22), _records(pdta[b"ibag"], 4), _records(pdta[b"igen"], 4)
    shdr = _records(pdta[b"shdr"], 46)

    def gens(bags, gen_table, first, last, oper):
        out = []
        for b in range(first, last):
            g0, g1 = struct.unpack("<H", bags[b][:2])[0], struct.unpack("<H", bags[b + 1][:2])[0]
            out += [struct.unpack("<H", gen_table[g][2:])[0] for g in range(g0, g1)
                    if struct.unpack("<H", gen_table[g][:2])[0] == oper]
        return out

    idx = next(i for i, r in enumerate(phdr[:-1]) if struct.unpack("<HH", r[20:24]) == (preset, bank))
    instruments = gens(pbag, pgen, struct.unpack("<H", phdr[idx][24:26])[0],
                       struct.unpack("<H", phdr[idx + 1][24:26])[0], 41)
    samples = set()
    for i in instruments:
        samples |= set(gens(ibag, igen, struct.unpack("<H", inst[i][20:22])[0],
                            struct.unpack("<H", inst[i + 1][20:22])[0], 53))
    samples |= {struct.unpack("<H", shdr[s][40:42])[0] for s in samples}  # stereo partners
    new_smpl, new_shdr = bytearray(b"\0" * 2 * 96), []  # points 0..95: the silence unused samples point to
    for s, rec in enumerate(shdr[:-1]):
        start, end, loop0, loop1 = struct.unpack("<IIII", rec[20:36])
        if s in samples:
            base = len(new_smpl) // 2
            new_smpl += smpl[2 * start:2 * end] + b"\0" * 2 * 46
            offsets = (base, base + end - start, base + loop0 - start, base + loop1 - start)
        else:
            offsets = (0, 48, 8, 40)
        new_shdr.append(rec[:20] + struct.pack("<IIII", *offsets) + rec[36:])
    new_shdr.append(shdr[-1])
    pdta_body = b"pdta" + b"".join(_chunk(c, b"".join(new_shdr) if c == b"shdr" else body) for c, body in pdta.items())
    body = (b"sfbk" + _chunk(b"LIST", b"INFO" + b"".join(_chunk(c, v) for c, v in info.items()))
            + _chunk(b"LIST", b"sdta" + _chunk(b"smpl", bytes(new_smpl))) + _chunk(b"LIST", pdta_body))
    return b"RIFF" + struct.pack("<I", len(body)) + body


def room_chain(x: np.ndarray, rate: int, seed: int) -> np.ndarray:
    """Synthetic room reverb (exponentially decaying noise, RT60 0.5 s, 25 % wet), 6 kHz low-pass, and
    white noise 40 dB below the signal's RMS."""
    from scipy.signal import butter, fftconvolve, sosfilt

    rng = np.random.default_rng(seed)
    t = np.arange(int(0.6 * rate)) / rate
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / 0.5)
    ir /= np.sqrt((ir ** 2).sum())
    wet = fftconvolve(x, ir)[: len(x)]
    y = 0.75 * x + 0.25 * wet
    y = sosfilt(butter(4, 6000, fs=rate, output="sos"), y)
    rms = np.sqrt(np.mean(y ** 2)) + 1e-12
    return (y + rng.standard_normal(len(y)) * rms * 10 ** (-40 / 20)).astype(np.float32)


def render_one(args) -> str:
    midi, out, sf2_path, chain = args
    import midirenderer
    import soundfile

    from pianolab.render.audio import decode_wav, finish

    sf2 = Path(sf2_path).read_bytes()
    audio, rate = decode_wav(bytes(midirenderer.render_wave_from(sf2, Path(midi).read_bytes())))
    wave = finish(audio, rate, RATE, 1.0)
    if chain == "room":
        wave = room_chain(wave, RATE, int(hashlib.sha256(Path(midi).name.encode()).hexdigest()[:8], 16))
    soundfile.write(out, np.clip(wave, -1, 1), RATE, subtype="PCM_16", format="FLAC")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("soundfont")
    s.add_argument("sf2", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--bank", type=int, default=0)
    s.add_argument("--preset", type=int, default=0)
    r = sub.add_parser("render")
    r.add_argument("midi_dir", type=Path)
    r.add_argument("out_dir", type=Path)
    r.add_argument("--soundfont", type=Path, required=True)
    r.add_argument("--chain", choices=["none", "room"], default="none")
    r.add_argument("--workers", type=int, default=4)
    a = ap.parse_args(argv)
    if a.cmd == "soundfont":
        a.out.write_bytes(one_preset(a.sf2.read_bytes(), a.bank, a.preset))
        print(f"{a.out}: {a.out.stat().st_size / 2**20:.1f} MiB")
        return
    a.out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(str(m), str(a.out_dir / f"{m.stem}.flac"), str(a.soundfont), a.chain)
            for m in sorted(a.midi_dir.glob("*.mid"))]
    with ProcessPoolExecutor(a.workers) as pool:
        done = list(pool.map(render_one, jobs, chunksize=4))
    print(f"{len(done)} renders in {a.out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
