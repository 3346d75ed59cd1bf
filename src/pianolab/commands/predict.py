"""`pianolab predict`: the 19 ratings of performances, written to a CSV as they are predicted.

Rows are appended batch by batch, so a large folder or manifest can be stopped and rerun: files whose
path is already in `--out` are skipped (`--overwrite` starts afresh). A bad file gets one line
(`error: <file>: <problem>`) and the rest are still predicted; the exit code is 2 when any failed.
"""

from __future__ import annotations

import sys
import warnings
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from pianolab.errors import PianolabError, fail

# The names of pianolab.batch.BATCH_BACKENDS (tests/test_cli_choices.py keeps them equal), listed here so
# that --help does not import the backends.
Backend = Enum("Backend", {n: n for n in ("local", "ray")}, type=str)


def predict(
    inputs: Annotated[list[Path] | None, typer.Argument(help="MIDI files or folders")] = None,
    model: Annotated[str | None, typer.Option(help="run folder, or a shipped model: default, with-score, recording, "
                                              "recording-with-score (default: with-score for performances with a "
                                              "score, else default; the recording- twins for recordings)")] = None,
    score: Annotated[Path | None, typer.Option(help="score (MIDI or MusicXML) of the performances given as "
                                               "arguments: one excerpt, played by each")] = None,
    manifest: Annotated[Path | None, typer.Option(help="CSV with a header row: performance[,score][,group]; "
                                                  "relative paths from its folder")] = None,
    out: Annotated[Path, typer.Option(help="CSV: path, stem, model + the 19 dimensions (0..1)")] = Path(
        "predictions.csv"),
    overwrite: Annotated[bool, typer.Option(help="start --out afresh instead of skipping files already in it")] = False,
    batch: Annotated[int, typer.Option(min=1, help="files per batch (rows are written after each batch)")] = 64,
    device: str = "cpu",
    backend: Annotated[Backend, typer.Option(help="where batches run: local (this machine, --jobs processes) or "
                                             "ray (a local Ray instance or the cluster at --address)")] = Backend.local,
    jobs: Annotated[int, typer.Option(min=1, help="batches at a time (worker processes or Ray CPUs)")] = 1,
    address: Annotated[str | None, typer.Option(help="Ray cluster (auto, HOST:PORT); --backend ray only")] = None,
    gpus_per_task: Annotated[float, typer.Option(min=0, help="GPUs each Ray task asks for (e.g. 0.25: four "
                                                 "transcribe on one GPU); --backend ray only")] = 0.0,
    explain: Annotated[bool, typer.Option(help="also write why (SHAP, tree/ridge models): <out>.explain.json "
                                          "and one HTML page per performance in <out>_pages/")] = False,
) -> None:
    """Predict the 19 ratings of performances; a bad file gets a one-line error, the rest still run."""
    from pianolab.batch import BATCH_BACKENDS, BatchOptions
    from pianolab.predict import COLUMNS, expand_inputs, predict_batch, read_manifest

    run_batches = BATCH_BACKENDS.get(backend.value)
    opts = BatchOptions(jobs, address, gpus_per_task)

    paths = expand_inputs(inputs or [])
    scores, groups = {}, {}
    if score is not None:
        if not score.is_file():
            raise fail(score, "score file not found")
        scores = {p: score for p in paths}
    if manifest is not None:
        listed, listed_scores, groups = read_manifest(manifest)
        paths += listed
        scores.update(listed_scores)
    if not paths:
        raise PianolabError("nothing to predict: give MIDI files, folders or --manifest")
    done = _prepare_out(out, overwrite)
    todo = [p for p in paths if str(p) not in done]
    failed, counts = 0, {}
    bar = _bar(len(todo))
    fn = partial(predict_batch, model=model, device=device, scores=scores, groups=groups)
    for chunk, (df, errors, notes) in run_batches(fn, _chunks(todo, groups, model, batch), opts):
        for note in notes:
            bar.write(f"warning: {note}", file=sys.stderr)
        for e in errors:
            bar.write(f"error: {e}", file=sys.stderr)
        failed += len(errors)
        for name, n in df["model"].value_counts().items():
            counts[name] = counts.get(name, 0) + int(n)
        df[COLUMNS].to_csv(out, mode="a", header=not out.stat().st_size, index=False, float_format="%.5f")
        bar.update(len(chunk))
    bar.close()
    used = ", ".join(f"{name} for {n}" for name, n in counts.items()) or "none"
    typer.echo(f"{out}: {sum(counts.values())} performance(s) predicted, {failed} failed"
               + (f", {len(paths) - len(todo)} already in {out.name} (skipped)" if len(todo) < len(paths) else "")
               + f"; model used: {used}")
    if explain:  # the serve package's explanations (pianolab.serve.offline)
        from pianolab.serve.offline import explain_predictions

        target, problems = explain_predictions(out, scores)
        for e in problems:
            typer.echo(f"error: {e}", err=True)
        typer.echo(f"{target}: reasons for the rated performances; pages in {out.stem}_pages/")
        failed += len(problems)
    if failed:
        raise typer.Exit(2)


def _prepare_out(out: Path, overwrite: bool) -> set[str]:
    """Create `out`'s folder, check it can be written, and return the paths already predicted in it."""
    from pianolab.predict import COLUMNS

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if overwrite or not out.is_file() or not out.stat().st_size:
            out.write_text("")
            return set()
        with out.open("a"):
            pass
    except OSError as e:
        raise fail(out, f"cannot write the predictions ({e.strerror or e.__class__.__name__})") from None
    try:
        done = pd.read_csv(out)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise fail(out, f"not a predictions CSV ({e.__class__.__name__}); pass --overwrite") from None
    if list(done.columns) != COLUMNS:
        raise fail(out, "exists with other columns (not written by this predict); pass --overwrite or another --out")
    return set(done["path"].astype(str))


def _chunks(paths: list[Path], groups: dict, model: str | None, size: int) -> list[list[Path]]:
    """Batches of `size` files; for a peer-centred model, the performances of one excerpt stay together."""
    from pianolab.predict import _load_run, peer_groups, resolve_model

    if model is None or not _load_run(resolve_model(model))[1].features.peer_centred:
        return [paths[i:i + size] for i in range(0, len(paths), size)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warned when the batch is predicted
        keys = peer_groups(paths, groups)
    by_group: dict[str, list[Path]] = {}
    for p, k in zip(paths, keys, strict=True):
        by_group.setdefault(k, []).append(p)
    chunks: list[list[Path]] = [[]]
    for members in by_group.values():
        if chunks[-1] and len(chunks[-1]) + len(members) > size:
            chunks.append([])
        chunks[-1] += members
    return [c for c in chunks if c]


def _bar(total: int):
    """A progress bar with ETA on a terminal (none when stderr is not one)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="file", desc="predict", disable=None)
