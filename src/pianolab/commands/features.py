"""`pianolab features`: build feature caches and list what is cached."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated

import typer

from pianolab.errors import PianolabError

app = typer.Typer(help="Render MIDI and build cached features (the feature store).", no_args_is_help=True)

CacheDir = Annotated[Path | None, typer.Option("--cache-dir", help="cache folder (default: $PIANOLAB_CACHE "
                                               "or cache/)")]


@app.command("build")
def build_cmd(
    kind: Annotated[list[str], typer.Option("--kind", help="feature kind (repeatable)")],
    renderer: Annotated[str, typer.Option(help="registered renderer")] = "midirenderer",
    seconds: Annotated[float, typer.Option(help="window length in seconds")] = 10.0,
    length_policy: Annotated[str, typer.Option(help="crop | pad | windows")] = "crop",
    augment: Annotated[str | None, typer.Option(help="augmentation preset (light, medium, heavy)")] = None,
    copies: Annotated[int, typer.Option(help="augmentation factor N: copies 0..N-1")] = 1,
    limit: Annotated[int | None, typer.Option(help="only the first N labelled performances")] = None,
    device: Annotated[str | None, typer.Option(help="torch device (default: cuda when available)")] = None,
    workers: Annotated[int, typer.Option(help="worker processes")] = 0,
    on_error: Annotated[str, typer.Option("--on-error", help="skip | raise")] = "skip",
    data_root: Annotated[Path | None, typer.Option("--data-root", help="PercePiano folder")] = None,
    cache_dir: CacheDir = None,
) -> None:
    """Render and featurise the labelled performances into the cache."""
    from pianolab.data.percepiano import load_dataset
    from pianolab.features.build import build
    from pianolab.features.store import FeatureSpec, Store

    try:
        ds = load_dataset(data_root)
        paths = [it.midi_path for it in ds.items][:limit]
        specs = [FeatureSpec.from_dict({"kind": k, "renderer": renderer, "seconds": seconds,
                                        "length_policy": length_policy, "augment": augment, "copy": c})
                 for k in kind for c in range(copies if augment else 1)]
        start = time.monotonic()
        tables = build(paths, specs, cache_dir, device, on_error, progress=True, workers=workers)
    except PianolabError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    seconds_taken = time.monotonic() - start
    for t in tables:
        typer.echo(f"{t.spec.kind} copy {t.spec.copy}: {t.hits} cached, {t.computed} computed, "
                   f"{len(t.skipped)} skipped")
        for path, reason in t.skipped:
            typer.echo(f"  skipped {path.name}: {reason}")
    size = Store(cache_dir).size_bytes() / 1e6
    typer.echo(f"{len(paths)} files in {seconds_taken:.1f} s; cache {Store(cache_dir).root} {size:.1f} MB")


@app.command("info")
def info_cmd(cache_dir: CacheDir = None) -> None:
    """List cached feature sets: kind, settings key, entries, size."""
    from pianolab.features.store import Store

    store = Store(cache_dir)
    groups: dict[tuple[str, str], dict] = defaultdict(lambda: {"entries": set(), "spec": {}, "bytes": 0})
    for rec in store.manifest():
        g = groups[(rec["kind"], rec["spec_key"])]
        if rec["entry"] not in g["entries"] and (store.root / rec["path"]).is_file():
            g["entries"].add(rec["entry"])
            g["bytes"] += (store.root / rec["path"]).stat().st_size
        g["spec"] = rec["spec"]
    if not groups:
        typer.echo(f"{store.root}: no cached features")
        return
    typer.echo(f"{store.root}: {store.size_bytes() / 1e6:.1f} MB")
    for (kind, key), g in sorted(groups.items()):
        settings = ", ".join(f"{k}={v}" for k, v in sorted(g["spec"].items()) if k != "kind")
        typer.echo(f"  {kind:<18} {key}  {len(g['entries']):>5} entries  {g['bytes'] / 1e6:8.1f} MB  "
                   f"{settings}")


@app.command("warm-up")
def warm_up_cmd(
    kind: Annotated[list[str] | None, typer.Option("--kind", help="feature kind (repeatable; default: every "
                                                   "kind that compiles kernels)")] = None,
) -> None:
    """Compile the kernels feature kinds JIT-compile (librosa's and parangonar's numba kernels) into numba's
    cache, once per installation: later builds, and several shard processes at once, load them instead of
    compiling."""
    from pianolab.features.build import warm_up
    from pianolab.features.kinds import FEATURE_KINDS, get_kind, register_all
    from pianolab.features.store import FeatureSpec

    register_all()
    try:
        names = kind or [n for n in FEATURE_KINDS.names() if get_kind(n).warm_up is not None]
        specs = [FeatureSpec(n) for n in names]
    except PianolabError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    compiling = [s.kind for s in specs if get_kind(s.kind).warm_up is not None]
    start = time.monotonic()
    warm_up(specs)
    typer.echo(f"warmed up {', '.join(compiling) or 'nothing (these kinds compile no kernels)'} "
               f"in {time.monotonic() - start:.1f} s")
