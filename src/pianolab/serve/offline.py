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
    from pianolab.serve.gradients import explanations_for
    from pianolab.serve.page import render_page

    table = pd.read_csv(csv) if csv.is_file() and csv.stat().st_size else pd.DataFrame(columns=["path", "model"])
    pages = csv.parent / f"{csv.stem}_pages"
    pages.mkdir(parents=True, exist_ok=True)
    scores = {Path(k).resolve(): v for k, v in (scores or {}).items()}
    results, errors = {}, []
    for name, rows in table.groupby("model", sort=False):
        try:
            served = ServedModel(str(name), resolve_model(name))
            explainer = explanations_for(served)
        except PianolabError as e:
            errors += [f"{p}: no explanation ({e})" for p in rows["path"]]
            continue
        for path in map(Path, rows["path"]):
            try:
                kind = sniff(path.read_bytes()[:16])
                score = scores.get(path.resolve())
                pred = served.predict(path, kind, score)
                if pred.vector is None:
                    raise PianolabError("explanations need a MIDI performance")
                reasons = explainer.reasons(pred.vector, pred.features, **served.explain_context(path, kind, score))
            except PianolabError as e:
                errors.append(f"{path}: no explanation ({e})")
                continue
            results[str(path)] = {"model": str(name), "method": explainer.method, "reasons": reasons}
            page = render_page(path.stem, str(name), pred.values, reasons, served.labels)
            (pages / f"{path.stem}.html").write_text(page)
    target = csv.with_suffix(".explain.json")
    target.write_text(json.dumps(results, indent=1) + "\n")
    return target, errors
