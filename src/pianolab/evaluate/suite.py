"""`pianolab evaluate`: run the chosen sections on a run folder or an experiment and write
`evaluation.md`, a self-contained `evaluation.html` (template `report_templates/evaluation.html`, plots
inlined), `evaluation.json` (every number) and the PNGs."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from pianolab import html_report, track
from pianolab.errors import PianolabError
from pianolab.evaluate.context import Context, CrossRuns, Run, experiment_runs

GROUPS = {
    "diagnostics": ("learning_curves", "gradient_analysis", "loss_landscape", "attention_rollout",
                    "feature_importance", "error_analysis"),
    "robustness": ("noise_robustness", "tempo_robustness", "cross_recording_quality", "adversarial_examples",
                   "cross_composer", "cross_performer"),
    "attention_analysis": ("attention_rollout",),
}


def registry():
    """SECTIONS with every section module imported (registration happens on import)."""
    from pianolab.evaluate import sections_model, sections_robust  # noqa: F401
    from pianolab.evaluate.sections import SECTIONS

    return SECTIONS


def section_names(only: Sequence[str] | None = None) -> list[str]:
    """Sections to run in report order (all by default); group names expand; unknown names are a
    one-line error listing the valid ones."""
    sections = registry()
    if not only:
        return sections_in_order(sections.names())
    chosen = []
    for name in only:
        if name not in sections and name not in GROUPS:
            valid = ", ".join(sections_in_order(sections.names()) + sorted(GROUPS))
            raise PianolabError(f"unknown evaluation section {name!r}; valid: {valid}")
        chosen += GROUPS.get(name, (name,))
    return sections_in_order(set(chosen))


ORDER = ("metrics", "advanced", "error_analysis", "learning_curves", "gradient_analysis", "feature_importance",
         "loss_landscape", "attention_rollout", *GROUPS["robustness"])


def sections_in_order(names) -> list[str]:
    names = set(names)
    return [n for n in ORDER if n in names] + sorted(names - set(ORDER))


def context_for(target: Path, out: Path | None, runs_root: Path | None, max_runs: int,
                probe_items: int, jobs: int = 1, backend: str = "local",
                echo: Callable[[str], None] = print) -> tuple[Context, str]:
    """Context and title for a run folder or an experiment YAML (whose cross-split runs, if the
    sections need them, are trained with `jobs` cells at once on `backend`)."""
    from pianolab.ab.runner import RunOptions
    from pianolab.data.percepiano import load_dataset

    target = Path(target)
    if target.is_file() and target.suffix in (".yaml", ".yml"):
        from pianolab.ab.spec import BASELINE, load_experiment

        exp = load_experiment(target)
        runs = experiment_runs(exp, runs_root)
        data = exp.config(BASELINE).data
        dataset = load_dataset(data.root, midi=data.midi)
        out = out or (runs_root or track.runs_root()) / exp.name / "evaluation"
        cross = CrossRuns(exp, RunOptions(backend=backend, jobs=jobs, root=runs_root, tracker="none"), echo)
        return Context(runs, dataset, Path(out), max_runs, probe_items, baseline=BASELINE, cross=cross), exp.name
    run = Run.load(target)
    out = out or run.folder / "evaluation"
    dataset = load_dataset(run.cfg.data.root, midi=run.cfg.data.midi)
    return Context({"run": [run]}, dataset, Path(out), max_runs, probe_items), str(target)


def evaluate(ctx: Context, title: str, names: Sequence[str], echo: Callable[[str], None] = print) -> dict:
    """Run the sections and write the report files into ctx.out; returns their paths."""
    sections = registry()
    ctx.out.mkdir(parents=True, exist_ok=True)
    n = sum(len(r) for r in ctx.runs.values())
    lines = [f"# Evaluation: {title}", "",
             f"{n} finished run(s) in {len(ctx.runs)} variant(s): "
             + ", ".join(f"{v} ({len(r)})" for v, r in ctx.runs.items())
             + f". Sections: {', '.join(names)}. Everything is recomputed from the run folders."]
    numbers = {}
    for name in names:
        echo(f"evaluate: {name}")
        res = sections.get(name)(ctx)
        lines += ["", f"## {name}", ""] + res.lines
        numbers[name] = res.numbers
    md = "\n".join(lines) + "\n"
    paths = {"markdown": ctx.out / "evaluation.md", "html": ctx.out / "evaluation.html",
             "json": ctx.out / "evaluation.json"}
    paths["markdown"].write_text(md)
    paths["html"].write_text(html_report.render("evaluation.html", title=f"Evaluation: {title}",
                                                body=html_report.markdown_html(md, ctx.out)))
    paths["json"].write_text(json.dumps(numbers, indent=1, default=_jsonable))
    return paths


def _jsonable(x):
    import numpy as np

    return x.tolist() if isinstance(x, np.ndarray) else float(x) if isinstance(x, np.generic) else str(x)


def evaluate_target(target: Path, only: Sequence[str] | None = None, out: Path | None = None,
                    runs_root: Path | None = None, max_runs: int = 2, probe_items: int = 32,
                    echo: Callable[[str], None] = print, jobs: int = 1, backend: str = "local") -> dict:
    """`pianolab evaluate TARGET`: the whole pipeline; returns the written paths."""
    names = section_names(only)
    ctx, title = context_for(target, out, runs_root, max_runs, probe_items, jobs, backend, echo)
    return evaluate(ctx, title, names, echo)


def evaluate_experiment(exp, runs_root: Path | None, only: Sequence[str], echo=print) -> dict:
    """The experiment file's `evaluation:` sections, into `<runs>/<experiment>/evaluation/`."""
    return evaluate_target(Path(exp.source), only, None, runs_root, echo=echo)
