"""Render and featurise all labelled PercePiano performances from the cache up; print time and size.

Default renderer (midirenderer + TimGM6mb), kinds log_mel and cqt (first 10 s), all_traditional and
symbolic_aligned (symbolic + score-aligned). Workers render and compute per-file features; the
spectrograms are batched on the GPU when one is present.

    python benchmarks/featurise_all.py --cache-dir /tmp/cache --workers 16 [--device cuda] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

STARTED = time.monotonic()
KINDS = ("log_mel", "cqt", "all_traditional", "symbolic_aligned")


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
                    "numba's cache, then exit (run once before starting shard processes at once)")
    ap.add_argument("--after-warm-up", type=Path, default=None, metavar="FILE",
                    help="build the kinds that need no warm-up first, then wait for FILE (written when a "
                    "--warm-up process is done) before the others: shards need not wait for the warm-up. "
                    "The renders of the first part are kept in memory for the second (each clip rendered once)")
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
        warm_up(specs)
        print(f"warm-up: {time.monotonic() - STARTED:.1f} s")
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
    if late:
        while not args.after_warm_up.exists():
            time.sleep(0.2)
        phases["waiting for the warm-up"] = time.monotonic() - STARTED - sum(phases.values())
        tables += build(paths, late, args.cache_dir, args.device, "skip", progress=True, workers=args.workers,
                        renders=renders)
        phases["kinds after the warm-up"] = time.monotonic() - STARTED - sum(phases.values())
    wall = time.monotonic() - start
    print("phases: " + ", ".join(f"{name} {secs:.1f} s" for name, secs in phases.items()))
    for t in tables:
        print(f"{t.spec.kind:<18} computed {t.computed:>5}  cached {t.hits:>5}  skipped {len(t.skipped)}")
        for path, why in t.skipped[:2]:
            print(f"  skipped {path.name}: {why}")
    size = Store(args.cache_dir).size_bytes() / 1e6
    print(f"{len(paths)} clips, {len(specs)} kinds, {args.workers} workers: wall {wall:.1f} s, "
          f"{len(paths) / wall:.1f} clips/s, cache {size:.1f} MB")


if __name__ == "__main__":
    main()
