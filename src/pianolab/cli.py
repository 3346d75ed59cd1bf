"""Thin command-line layer: parse options, call the library, print results."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pianolab.errors import PianolabError

app = typer.Typer(help="pianolab: A/B experiments on piano-performance perception models.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Inspect and validate the PercePiano data.", no_args_is_help=True)
splits_app = typer.Typer(help="Make, list and leak-check fold assignments.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(splits_app, name="splits")

DataRoot = Annotated[Path | None, typer.Option("--data-root", help="PercePiano folder "
                                               "(default: $PIANOLAB_DATA or data/percepiano)")]
def _version(value: bool) -> None:
    if value:
        from pianolab import __version__

        typer.echo(f"pianolab {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    """pianolab: A/B experiments on piano-performance perception models."""


SplitsDir = Annotated[Path | None, typer.Option("--dir", help="split folder (default: $PIANOLAB_SPLITS "
                                                "or splits/)")]


def _dataset(root: Path | None):
    from pianolab.data.percepiano import load_dataset

    return load_dataset(root)


@data_app.command("check")
def data_check(data_root: DataRoot = None) -> None:
    """Validate the data folder and print counts, unlabelled files and per-piece counts."""
    from pianolab.data.ratings import load_ratings

    ds = _dataset(data_root)
    ratings = load_ratings(ds.root)
    labels = ds.labels
    typer.echo(f"data root: {ds.root}  (data version {ds.version})")
    typer.echo(f"{len(ds)} labelled performances in {len(set(ds.column('group')))} excerpt groups")
    typer.echo(f"{len(ds.unlabelled_midi)} MIDI files without labels: {', '.join(ds.unlabelled_midi)}")
    typer.echo(f"{int(ds.column('deadpan').sum())} deadpan renditions (Score/Score2), "
               f"{len(set(ds.column('performer'))) - 1} human performers")
    typer.echo(f"labels in [{labels.min():.3f}, {labels.max():.3f}] (0..1 scale)")
    typer.echo(f"ratings: {len(ratings.table)} valid rows, {ratings.invalid_rows} invalid rows "
               "(value above 7) dropped")
    for w in ds.warnings:
        typer.echo(f"warning: {w}")
    typer.echo("per piece:")
    for piece, n in sorted(Counter(ds.column("piece")).items()):
        groups = len({it.group for it in ds.items if it.piece == piece})
        typer.echo(f"  {piece:<22} {n:>4} performances  {groups:>3} excerpt groups")
    _check_midi_files(ds.root / "midi")


def _check_midi_files(folder: Path) -> None:
    """One `error:` line per corrupt or empty MIDI file of `folder`; exit code 2 when there is any."""
    from pianolab.features.midicheck import midi_problem

    files = sorted(folder.glob("*.mid"))
    bad = [(p, problem) for p in files if (problem := midi_problem(p))]
    for p, problem in bad:
        typer.echo(f"error: {p}: {problem}", err=True)
    typer.echo(f"MIDI files: {len(files) - len(bad)} of {len(files)} readable with notes")
    if bad:
        raise typer.Exit(2)


@data_app.command("reliability")
def data_reliability(
    data_root: DataRoot = None,
    splits: Annotated[int, typer.Option(help="random split-halves to average")] = 50,
    seed: int = 0,
    humans_only: Annotated[bool, typer.Option(help="leave out the deadpan renditions")] = False,
) -> None:
    """Split-half label reliability per dimension (Spearman-Brown), overall and within groups."""
    from pianolab.data.percepiano import DIMENSIONS
    from pianolab.data.ratings import load_ratings, split_half_reliability

    ds = _dataset(data_root)
    rel = split_half_reliability(ds, load_ratings(ds.root), splits, seed, humans_only)
    typer.echo(f"{rel.n_items} items, {rel.n_splits} random split-halves, seed {seed}"
               + (", human performances only" if humans_only else ""))
    typer.echo(f"{'dimension':<42} {'overall':>8} {'within':>8} {'1-vs-rest':>9} {'r ceiling':>9}")
    for name, o, w, s, c in zip(DIMENSIONS, rel.overall, rel.within_group, rel.one_vs_rest,
                                rel.ceiling, strict=False):
        typer.echo(f"{name:<42} {o:8.3f} {w:8.3f} {s:9.3f} {c:9.3f}")
    typer.echo(f"{'MEAN':<42} {rel.overall.mean():8.3f} {rel.within_group.mean():8.3f} "
               f"{rel.one_vs_rest.mean():9.3f} {rel.ceiling.mean():9.3f}")


@splits_app.command("make")
def splits_make(
    name: str,
    folds: Annotated[int | None, typer.Option(help="K (default: the strategy's)")] = None,
    repeats: Annotated[int, typer.Option(help="repeats R, each with its own partition")] = 1,
    seed: int = 0,
    data_root: DataRoot = None,
    directory: SplitsDir = None,
) -> None:
    """Make a named split, leak-check it and write it as JSON (once)."""
    from pianolab.data.splits import get_split, splits_dir

    split = get_split(_dataset(data_root), name, folds, repeats, seed, directory)
    typer.echo(f"{(directory or splits_dir()) / (split.id + '.json')}: {split.description}")
    typer.echo(summarise(split))


def summarise(split) -> str:
    """One line per fold of the first repeat: train/test sizes."""
    lines = [f"{split.id}: {split.n_repeats} repeat(s) x {split.folds} fold(s), guards "
             f"{', '.join(split.guards) or 'none (leaky)'}"]
    for k, f in enumerate(split.repeats[0]):
        lines.append(f"  fold {k}: train {len(f.train):>4}  test {len(f.test):>4}"
                     + (f"  inner folds {len(f.inner)}" if f.inner else ""))
    return "\n".join(lines)


@splits_app.command("list")
def splits_list(directory: SplitsDir = None) -> None:
    """List the registered strategies and the saved split files."""
    from pianolab.data.splits import STRATEGIES, splits_dir

    for name in STRATEGIES:
        typer.echo(f"{name:<24} {STRATEGIES.get(name).description}")
    saved = sorted((directory or splits_dir()).glob("*.json"))
    typer.echo(f"saved ({len(saved)}): " + ", ".join(p.stem for p in saved))


@splits_app.command("check")
def splits_check(directory: SplitsDir = None, data_root: DataRoot = None) -> None:
    """Leak-check every saved split; exit code 1 on a leak."""
    from pianolab.data.splits import load_split, splits_dir

    ds = _dataset(data_root)
    saved = sorted((directory or splits_dir()).glob("*.json"))
    bad = 0
    for path in saved:
        try:
            load_split(path, ds)
            typer.echo(f"ok    {path}")
        except PianolabError as e:
            bad += 1
            typer.echo(f"LEAK  {e}")
    typer.echo(f"{len(saved) - bad}/{len(saved)} splits clean")
    if bad:
        raise typer.Exit(1)


@splits_app.command("summary")
def splits_summary(
    data_root: DataRoot = None, directory: SplitsDir = None,
    repeats: Annotated[int, typer.Option(help="repeats for the K-fold strategies")] = 1,
) -> None:
    """Make (once) and summarise every registered split strategy with its defaults."""
    from pianolab.data.splits import STRATEGIES, get_split

    ds = _dataset(data_root)
    for name in STRATEGIES:
        split = get_split(ds, name, None, repeats, 0, directory)
        sizes = [len(f.test) for f in split.repeats[0]]
        typer.echo(f"{name:<24} {split.folds:>2} folds  test sizes {min(sizes)}-{max(sizes)}  "
                   f"mean {np.mean(sizes):.0f}  guards: {', '.join(split.guards) or 'none (leaky)'}")


@app.command("train")
def train(
    config: Path,
    fold: Annotated[int | None, typer.Option(help="fold index (overrides data.fold)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed (overrides train.seed)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="dotted override key=value")] = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default: runs/single/...)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="final model: fit on every labelled item (no test "
                                       "fold) and write a model card; needs --out")] = False,
    exclude_group: Annotated[list[str] | None, typer.Option(help="with --all: leave this excerpt group out "
                                                            "(repeatable)")] = None,
) -> None:
    """Train one run (one config, one fold, one seed) and write its run folder."""
    from pianolab import track
    from pianolab.config import load_config, replace
    from pianolab.train.run import execute

    cfg = load_config(config, set_ or [])
    if fold is not None:
        cfg = replace(cfg, data={"fold": fold})
    if seed is not None:
        cfg = replace(cfg, train={"seed": seed})
    from pianolab.train.validate import check_config

    check_config(cfg, str(config))  # names, ranges, options, keys set without effect: before any work
    if all_ or exclude_group:
        from pianolab.train.card import card_sidecar
        from pianolab.train.final import train_all

        if not all_ or out is None or fold is not None:
            raise PianolabError("train --all needs --out FOLDER and takes no --fold; --exclude-group needs --all")
        train_all(cfg, out, card_sidecar(config), tuple(exclude_group or ()), progress=True)
        typer.echo(f"{out}: final model on every labelled item, model card {out / 'model_card.md'}")
        return
    folder = out or track.run_dir(cfg)
    summary = execute(cfg, folder, progress=True)
    track.mirror(folder, cfg.track.tracker, "single", {"fold": cfg.data.fold, "seed": cfg.train.seed})
    typer.echo(f"{folder}: " + "  ".join(f"{k} {v:.3f}" for k, v in summary.items()))


def _mount_subcommands() -> None:
    from pianolab.commands import ab, features, serve, stats
    from pianolab.commands.evaluate import evaluate
    from pianolab.commands.predict import predict
    from pianolab.commands.ui import ui

    app.command("evaluate")(evaluate)
    app.command("ui")(ui)
    app.command("predict")(predict)
    app.add_typer(ab.app, name="ab")
    app.add_typer(stats.app, name="stats")
    app.add_typer(features.app, name="features")
    serve.mount(app, ab.app)  # serve, monitor, promote, registry, ab live


_mount_subcommands()


def main() -> None:
    """Entry point: run the app, turning PianolabError into a one-line message (exit code 2)."""
    try:
        app()
    except PianolabError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


