"""Where a packed variant's time goes (issue 8): per-epoch training and validation wall times, and a
torch.profiler table of one steady-state epoch (the busiest CUDA kernels, the host-side phases).

    python benchmarks/packed_profile.py [--experiment experiments/ab_wall_time.yaml] [--variant baseline]
                                        [--epochs 6] [--profile-epoch 4] [--seeds S]

Runs one variant's cells (every seed and fold) as one pack from a warm feature cache, into a temporary
runs root. Epoch 1 includes compilation.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from pianolab import track
from pianolab.ab.runner import prebuild_features
from pianolab.ab.spec import BASELINE, load_experiment
from pianolab.train import packed, run

TIMES: dict[str, list[float]] = {"train": [], "validate": []}
SETUP = ("load_all_items", "prepare_cell", "neural_parts", "save_neural", "finish_cell")  # of train.run


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(kind: str, fn):
    """`fn` wrapped: its wall time (GPU work included) appended to TIMES[kind]."""
    def wrapper(*args, **kwargs):
        _sync()
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        _sync()
        TIMES[kind].append(time.perf_counter() - t0)
        return out
    return wrapper


def _labelled(name: str, fn):
    def wrapper(*args, **kwargs):
        with record_function(name):
            return fn(*args, **kwargs)
    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", type=Path, default=Path("experiments/ab_wall_time.yaml"))
    ap.add_argument("--variant", default=BASELINE)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--profile-epoch", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=None, help="override the number of seeds")
    args = ap.parse_args()
    exp = load_experiment(args.experiment)
    exp = replace(exp, epochs=args.epochs, seeds=args.seeds or exp.seeds)
    prebuild_features(exp)
    cells = exp.cells([args.variant])
    root = Path(tempfile.mkdtemp(prefix="packed-profile-"))
    folders = [track.run_dir(c.config, exp.name, c.variant, root) for c in cells]
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)

    for name in SETUP:
        TIMES[name] = []
        setattr(run, name, _timed(name, getattr(run, name)))
    trainer = packed.PackedTrainer
    train_epoch = _timed("train", trainer.train_epoch)
    trainer.predict = _timed("validate", _labelled("validate", trainer.predict))
    trainer._step = _labelled("step (forward, backward, AdamW)", trainer._step)
    trainer._clipped_adamw = _labelled("AdamW", trainer._clipped_adamw)
    packed.StackedRows.take = _labelled("gather batch", packed.StackedRows.take)
    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * torch.cuda.is_available()
    prof = profile(activities=activities, record_shapes=True)

    def epoch(self, *rest):  # the profile covers one epoch's training and validation
        if len(TIMES["train"]) + 1 == args.profile_epoch:
            prof.start()
        elif len(TIMES["train"]) == args.profile_epoch:
            prof.stop()
        return train_epoch(self, *rest)

    trainer.train_epoch = epoch
    t0 = time.perf_counter()
    packed.execute_pack([c.config for c in cells], folders, exp.name, args.variant)
    wall = time.perf_counter() - t0
    train, val = TIMES["train"], TIMES["validate"]
    print(f"{exp.name}/{args.variant}: {len(cells)} members, {args.epochs} epochs, wall {wall:.1f} s")
    print("train per epoch (s): " + " ".join(f"{t:.3f}" for t in train))
    print("validate per epoch (s): " + " ".join(f"{t:.3f}" for t in val))
    steady = sorted(train[1:])[len(train[1:]) // 2] if len(train) > 1 else float("nan")
    print(f"epoch 1 minus a steady epoch (compilation and warm-up): {train[0] - steady:.1f} s; "
          f"steady epoch {steady:.3f} s; rest of the wall (loading, saving): {wall - sum(train) - sum(val):.1f} s")
    print("of which (s): " + ", ".join(f"{name} {sum(TIMES[name]):.1f}" for name in SETUP))
    if len(TIMES["train"]) >= args.profile_epoch:
        if len(TIMES["train"]) == args.profile_epoch:
            prof.stop()
        events = prof.key_averages()
        spent = TIMES["train"][args.profile_epoch - 1] + TIMES["validate"][args.profile_epoch - 1]
        print(f"profiled epoch {args.profile_epoch} (training and validation): {spent:.3f} s of wall; the "
              "kernels' sum is the table's 'Self CUDA time total' (the labelled phases repeat their kernels)")
        print(events.table(sort_by="self_device_time_total", row_limit=40))
        print(events.table(sort_by="cpu_time_total", row_limit=25))
        _copies(prof.events())


COPYING = {"aten::copy_", "aten::to", "aten::_to_copy", "aten::clone", "aten::contiguous", "aten::reshape",
           "aten::_reshape_alias", "aten::empty_like"}


def _copies(events) -> None:
    """The copies' GPU time by the operation that asked for them and the shapes copied (the busiest 15)."""
    spent: dict[tuple[str, str], list[float]] = {}
    for e in events:
        if e.name != "aten::copy_" or not e.self_device_time_total:
            continue
        parent = e.cpu_parent
        while parent is not None and parent.name in COPYING:
            parent = parent.cpu_parent
        key = (parent.name if parent is not None else "-", str(e.input_shapes[:2]))
        spent.setdefault(key, [0.0, 0])
        spent[key][0] += e.self_device_time_total / 1e3
        spent[key][1] += 1
    print("copies by caller and shapes (ms of GPU time in the profiled epoch, calls):")
    for (caller, shapes), (ms, n) in sorted(spent.items(), key=lambda kv: -kv[1][0])[:15]:
        print(f"  {ms:8.1f} ms {n:5d}  {caller[:60]:<60} {shapes[:90]}")


if __name__ == "__main__":
    main()
