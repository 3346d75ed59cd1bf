"""`pianolab predict --explain`: the served explanations and pages, for files on disk."""

from __future__ import annotations

import json
from pathlib import Path

from pianolab.errors import PianolabError
from pianolab.serve.model import ServedModel
from pianolab.serve.sniff import sniff


def explain_files(paths: list[Path], model: Path, out: Path) -> tuple[Path, list[str]]:
    """Write `<out>.explain.json` (per file: ratings and reasons) and one HTML page per file in
    `<out>_pages/`; returns the JSON path and one error line per file that could not be explained."""
    from pianolab.serve.explain import Explanations
    from pianolab.serve.page import render_page

    served = ServedModel(Path(model).name, Path(model))
    if not served.is_estimator:
        raise PianolabError(f"{model}: explanations need an estimator run (tree or ridge model)")
    explainer = Explanations(served.saved)
    pages = out.parent / f"{out.stem}_pages"
    pages.mkdir(parents=True, exist_ok=True)
    results, errors = {}, []
    for path in paths:
        kind = sniff(path.read_bytes()[:16])
        try:
            if kind != "midi":
                raise PianolabError(f"{path}: explanations need a MIDI file")
            pred = served.predict(path, kind)
            reasons = explainer.reasons(pred.vector, pred.features)
        except PianolabError as e:
            errors.append(str(e))
            continue
        results[path.stem] = {"file": str(path), "model": served.name, "reasons": reasons}
        (pages / f"{path.stem}.html").write_text(render_page(path.stem, served.name, pred.values, reasons,
                                                             served.labels))
    target = out.with_suffix(".explain.json")
    target.write_text(json.dumps(results, indent=1) + "\n")
    return target, errors
