"""Render and featurise all labelled PercePiano performances from the cache up; print time and size.

Default renderer (midirenderer + TimGM6mb), kinds log_mel and cqt (first 10 s), symbolic_aligned
(symbolic + score-aligned) and all_traditional. Workers render and compute per-file features; the
spectrograms are batched on the GPU when one is present.

    python benchmarks/featurise_all.py --cache-dir /tmp/cache --workers 16 [--device cuda] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

STARTED = time.monotonic()
KINDS = ("log_mel", "cqt", "symbolic_aligned", "all_traditional")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--shard", default="0/1", help="I/N: this process takes every N-th clip from I (run N "
                    "processes at once; the store is safe for concurrent writers)")
    ap.add_argument("--warm-up", action="store_true", help="only compile the kinds' numba kernels into "
                    "numba's cache, kind after kind in --kinds order (with --after-warm-up FILE, writing "
                    "FILE.KIND after each), then exit (run once before starting shard processes at once)")
    ap.add_argument("--after-warm-up", type=Path, default=None, metavar="FILE",
                    help="build the kinds that need no warm-up first, then each other kind once FILE.KIND "
                    "exists (written by a --warm-up process): shards need not wait for the whole warm-up. "
                    "The renders of the first part are kept in memory for the rest (each clip rendered once)")
    args = ap.parse_args()
    index, count = map(int, args.shard.split("/"))
    if count > 1:  # one shard process per core: each keeps to one OpenMP/BLAS thread, set before numpy loads
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ.setdefault(variable, "1")

    from pianolab.data.percepiano import load_dataset
    from pianolab.features.build import build, warm_up
    from pianolab.features.kinds import get_kind
    from pianolab.features.store import FeatureSpec, Store

    paths = [it.midi_path for it in load_dataset(args.data_root).items][: args.limit][index::count]
    specs = [FeatureSpec(kind) for kind in args.kinds.split(",")]
    if args.warm_up:
        for spec in specs:
            warm_up([spec])
            if args.after_warm_up is not None:
                _mark(args.after_warm_up, spec.kind).touch()
            print(f"warm-up of {spec.kind} done at {time.monotonic() - STARTED:.1f} s")
        return
    start = time.monotonic()
    early, late = specs, []
    if args.after_warm_up is not None:
        late = [s for s in specs if get_kind(s.kind).warm_up is not None]
        early = [s for s in specs if s not in late]
    renders = {} if args.workers <= 1 else None
    tables = build(paths, early, args.cache_dir, args.device, "skip", progress=True, workers=args.workers,
                   renders=renders)
    phases = {"imports": start - STARTED, "kinds without warm-up": time.monotonic() - start}
    phases["waiting for the warm-up"] = phases["kinds after the warm-up"] = 0.0
    for spec in late:
        t0 = time.monotonic()
        while not _mark(args.after_warm_up, spec.kind).exists():
            time.sleep(0.2)
        t1 = time.monotonic()
        tables += build(paths, [spec], args.cache_dir, args.device, "skip", progress=True, workers=args.workers,
                        renders=renders)
        phases["waiting for the warm-up"] += t1 - t0
        phases["kinds after the warm-up"] += time.monotonic() - t1
    wall = time.monotonic() - start
    print("phases: " + ", ".join(f"{name} {secs:.1f} s" for name, secs in phases.items()))
    for t in tables:
        print(f"{t.spec.kind:<18} computed {t.computed:>5}  cached {t.hits:>5}  skipped {len(t.skipped)}")
        for path, why in t.skipped[:2]:
            print(f"  skipped {path.name}: {why}")
    size = Store(args.cache_dir).size_bytes() / 1e6
    print(f"{len(paths)} clips, {len(specs)} kinds, {args.workers} workers: wall {wall:.1f} s, "
          f"{len(paths) / wall:.1f} clips/s, cache {size:.1f} MB")


def _mark(prefix: Path, kind: str) -> Path:
    """The file a --warm-up process writes once `kind` is compiled."""
    return prefix.with_name(f"{prefix.name}.{kind}")


if __name__ == "__main__":
    main()
