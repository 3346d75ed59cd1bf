"""`pianolab predict --explain`: the served explanations and pages, for the files `predict` rated."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pianolab.errors import PianolabError
from pianolab.serve.model import ServedModel
from pianolab.serve.sniff import sniff


def explain_predictions(csv: Path, scores: dict[Path, Path] | None = None) -> tuple[Path, list[str]]:
    """For every row of `predict`'s CSV, with the model that rated it: write `<csv>.explain.json` (per
    performance: its ratings' reasons) and one HTML page per performance in `<csv stem>_pages/`.
    Returns the JSON path and one error line per performance that could not be explained."""
    from pianolab.predict import resolve_model
    from pianolab.serve.explain import Explanations
    from pianolab.serve.page import render_page

    table = pd.read_csv(csv) if csv.is_file() and csv.stat().st_size else pd.DataFrame(columns=["path", "model"])
    pages = csv.parent / f"{csv.stem}_pages"
    pages.mkdir(parents=True, exist_ok=True)
    scores = {Path(k).resolve(): v for k, v in (scores or {}).items()}
    results, errors = {}, []
    for name, rows in table.groupby("model", sort=False):
        try:
            served = ServedModel(str(name), resolve_model(name))
            explainer = Explanations(served.saved) if served.is_estimator else None
        except PianolabError as e:
            errors += [f"{p}: no explanation ({e})" for p in rows["path"]]
            continue
        for path in map(Path, rows["path"]):
            try:
                if explainer is None:
                    raise PianolabError(f"{name} is a neural model; explanations cover tree and ridge models")
                kind = sniff(path.read_bytes()[:16])
                pred = served.predict(path, kind, scores.get(path.resolve()))
                if pred.vector is None:
                    raise PianolabError("explanations need a MIDI performance")
                reasons = explainer.reasons(pred.vector, pred.features)
            except PianolabError as e:
                errors.append(f"{path}: no explanation ({e})")
                continue
            results[str(path)] = {"model": str(name), "reasons": reasons}
            page = render_page(path.stem, str(name), pred.values, reasons, served.labels)
            (pages / f"{path.stem}.html").write_text(page)
    target = csv.with_suffix(".explain.json")
    target.write_text(json.dumps(results, indent=1) + "\n")
    return target, errors
