"""Transcription throughput on one GPU, and a whole folder of recordings transcribed end to end.

1. Model throughput: the first `--n` recordings of AUDIO_DIR (decoded beforehand), transcribed with each
   `--precisions` x `--batch-sizes` (recordings per forward pass; one warm-up pass first): seconds of
   audio per wall-clock second, and the agreement of each precision's notes with fp32 (note onset+pitch F1,
   mir_eval, 50 ms).
2. Processes sharing the GPU (`--workers`, e.g. 1,2,4,8): the first `--n` recordings end to end (hash,
   decode, resample, transcribe, write MIDI into an empty cache) by W spawned processes, each running
   `transcribe_files` on its share, as `pianolab predict --jobs W` does on a GPU machine; wall time
   includes starting the processes and loading the model in each.
3. End to end: every recording of AUDIO_DIR the same way with `--corpus-workers` processes,
   `--corpus-precision` and `--corpus-batch`: recordings per minute and audio seconds per second. The
   transcriptions are packed as OUT/<--tar> (one <stem>.mid each). No new chunk starts after `--deadline-s`.
   With `--cache DIR` the transcriptions persist there, so a second run resumes where a deadline stopped
   the first; its speed figures count only the recordings it transcribed itself.

    python benchmarks/transcribe_throughput.py renders out --n 64 --batch-sizes 16,64 --precisions fp32,bf16 \
        --workers 1,2,4 --corpus-workers 4

Writes OUT/transcribe_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def onset_f1(ref, est) -> float:
    import mir_eval
    import pretty_midi

    def arrays(pm):
        notes = pm.instruments[0].notes if pm.instruments else []
        return (np.array([[n.start, n.end] for n in notes]).reshape(-1, 2),
                np.array([pretty_midi.note_number_to_hz(n.pitch) for n in notes]))

    (ri, rp), (ei, ep) = arrays(ref), arrays(est)
    if not len(rp) or not len(ep):
        return float(len(rp) == len(ep))
    return float(mir_eval.transcription.precision_recall_f1_overlap(ri, rp, ei, ep, offset_ratio=None)[2])


def _share(files: list[Path], cache: Path, precision: str, batch: int, deadline: float, device: str = "cuda"):
    """One process's share: ({audio: midi}, errors), chunk by chunk until `deadline` (epoch seconds)."""
    from pianolab.transcribe import transcribe_files

    done, errors = {}, []
    for start in range(0, len(files), batch):
        if time.time() > deadline:
            break
        got, errs = transcribe_files(files[start:start + batch], cache_dir=cache, device=device,
                                     precision=precision, batch_size=batch)
        done.update(got)
        errors += errs
    return done, errors


def transcribe_shared(files: list[Path], cache: Path, workers: int, precision: str, batch: int,
                      deadline: float = float("inf"), device: str = "cuda") -> tuple[dict, list, float]:
    """`files` transcribed by `workers` spawned processes sharing the GPU: (done, errors, wall seconds)."""
    t = time.perf_counter()
    shares = [files[i::workers] for i in range(workers)]
    done, errors = {}, []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for got, errs in pool.map(_share, shares, [cache] * workers, [precision] * workers, [batch] * workers,
                                  [deadline] * workers, [device] * workers):
            done.update(got)
            errors += errs
    return done, errors, time.perf_counter() - t


def main(argv=None) -> None:
    import soundfile
    import torch

    from pianolab.audio import AUDIO_SUFFIXES, load_audio
    from pianolab.transcribe import make_transcriber
    from pianolab.transcribe.cache import entry_path
    from pianolab.transcribe.transkun_v2 import load_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("audio_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-sizes", default="16,64")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--corpus-precision", default="fp32")
    ap.add_argument("--corpus-batch", type=int, default=64)
    ap.add_argument("--workers", default="", help="comma list of process counts for part 2 (empty: skip it)")
    ap.add_argument("--corpus-workers", type=int, default=1, help="0: the fastest count of --workers")
    ap.add_argument("--tar", default="transcriptions.tar.gz")
    ap.add_argument("--deadline-s", type=float, default=420)
    ap.add_argument("--cache", type=Path, default=None, help="transcription cache kept across runs (resume)")
    ap.add_argument("--skip-throughput", action="store_true")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    a.out.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in a.audio_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    res = {"machine": {"gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
                       "cpu_count": os.cpu_count(), "torch": torch.__version__,
                       "python": platform.python_version()},
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
           "recordings": len(files)}
    t = time.perf_counter()
    load_model(device)
    res["model_load_s"] = round(time.perf_counter() - t, 2)

    if not a.skip_throughput:
        sample = files[: a.n]
        waves = [load_audio(p, 44100) for p in sample]
        seconds = sum(len(w) for w in waves) / 44100
        runs, outputs = [], {}
        for precision in a.precisions.split(","):
            for bs in map(int, a.batch_sizes.split(",")):
                tr = make_transcriber("transkun", device=device, precision=precision, batch_size=bs)
                tr.transcribe(waves[:bs])  # warm-up
                if device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t = time.perf_counter()
                out = tr.transcribe(waves)
                if device == "cuda":
                    torch.cuda.synchronize()
                wall = time.perf_counter() - t
                outputs.setdefault(precision, out)
                runs.append({"precision": precision, "batch_size": bs, "audio_s": round(seconds, 1),
                             "wall_s": round(wall, 2), "x_real_time": round(seconds / wall, 1),
                             "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                             if device == "cuda" else None})
                print(json.dumps(runs[-1]), flush=True)
        res["throughput"] = runs
        if "fp32" in outputs:
            res["agreement_with_fp32_onset_f1"] = {
                p: round(float(np.mean([onset_f1(r, e) for r, e in zip(outputs["fp32"], out, strict=True)])), 4)
                for p, out in outputs.items() if p != "fp32"}
            print(json.dumps(res["agreement_with_fp32_onset_f1"]), flush=True)

    def audio_seconds(paths) -> float:
        return sum(soundfile.info(str(p)).duration for p in paths)

    if a.workers and device == "cuda":
        sample, runs = files[: a.n], []
        seconds = audio_seconds(sample)
        for w in map(int, a.workers.split(",")):
            with tempfile.TemporaryDirectory() as cache:
                done, errors, wall = transcribe_shared(sample, Path(cache), w, a.corpus_precision, a.corpus_batch)
            runs.append({"workers": w, "precision": a.corpus_precision, "batch_size": a.corpus_batch,
                         "recordings": len(done), "errors": len(errors), "audio_s": round(seconds, 1),
                         "wall_s": round(wall, 2), "x_real_time": round(seconds / wall, 1),
                         "recordings_per_min": round(60 * len(done) / wall, 1)})
            print(json.dumps(runs[-1]), flush=True)
        res["processes"] = runs
        if a.corpus_workers == 0:
            a.corpus_workers = max(runs, key=lambda r: r["x_real_time"])["workers"]

    with tempfile.TemporaryDirectory() as tmp:
        cache = a.cache or Path(tmp)
        tr = make_transcriber("transkun", device=device, precision=a.corpus_precision)
        entries = {p: entry_path(p, tr, cache) for p in files}  # each file hashed once
        fresh = [p for p, entry in entries.items() if not entry.is_file()]
        deadline = time.time() + a.deadline_s - (time.perf_counter() - t_start)
        if device == "cuda":
            a.corpus_workers = max(1, a.corpus_workers)
            done, errors, wall = transcribe_shared(fresh, cache, a.corpus_workers, a.corpus_precision,
                                                   a.corpus_batch, deadline)
        else:  # CPU: in this process
            t = time.perf_counter()
            done, errors = _share(fresh, cache, a.corpus_precision, a.corpus_batch, deadline, device)
            wall = time.perf_counter() - t
        audio_s, wall = audio_seconds(done), max(wall, 1e-9)
        res["end_to_end"] = {"workers": a.corpus_workers, "precision": a.corpus_precision,
                             "batch_size": a.corpus_batch, "recordings": len(done), "errors": errors,
                             "already_cached": len(files) - len(fresh),
                             "wall_s": round(wall, 1), "audio_s": round(audio_s, 1),
                             "recordings_per_min": round(60 * len(done) / wall, 1),
                             "x_real_time": round(audio_s / wall, 1)}
        print(json.dumps(res["end_to_end"]), flush=True)
        with tarfile.open(a.out / a.tar, "w:gz") as tar:
            for audio, midi in sorted(entries.items()):
                if midi.is_file():
                    tar.add(midi, arcname=f"{audio.stem}.mid")
    (a.out / "transcribe_throughput.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
