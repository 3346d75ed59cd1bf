"""Model cards of final models: `model_card.md` for people, `model_card.json` for programs.

A card says what the model predicts, what 0 and 1 mean on each dimension (the poles of PercePiano's
questionnaire, from the data README), the value range, the expected accuracy with its confidence
interval from the experiment that chose the model, the training data and its limits. The accuracy
comes from the card sidecar (`<config stem>.card.yaml` beside the config: name, summary, `evidence`:
the report folder and variant of the experiment, `also`: replications of it, notes) and that
experiment's committed report: mean ± sd over its cells of overall and within-excerpt Pearson r, a
95% interval corrected for the overlap of the training folds (Nadeau & Bengio: var x (1/J +
n_test/n_train), t with J - 1 df), and the pooled human-performances-only r where the experiment's
evaluation recorded it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from pianolab.config import RunConfig, to_dict
from pianolab.data.percepiano import DIMENSIONS, default_data_root
from pianolab.errors import fail

LIMITS = (
    "Trained on PercePiano only: short excerpts (4-16 bars) of four classical works (Beethoven WoO 80, "
    "Schubert D935 no.3, D960 mv2 and mv3), 22 performers plus deadpan score renditions, about 14 expert "
    "raters per excerpt. Other repertoire, instruments or styles are outside what it has seen.",
    "Ratings are relative to the other performances of the same excerpt; absolute values for unrelated "
    "music are less reliable than rankings of performances of one piece (see within-excerpt r).",
    "The raters listened to audio rendered from the MIDI; the model reads MIDI. A recording must first be "
    "transcribed, and transcription errors (missed notes, pedal, velocities) lower the accuracy.",
    "Label reliability (split-half, Spearman-Brown) is about 0.78 on average: no model can expect a "
    "Pearson r with the mean ratings much above about 0.88.",
)


def card_sidecar(config: Path) -> Path:
    return Path(config).with_name(Path(config).stem + ".card.yaml")


def dimension_poles(root: Path | None = None) -> list[dict]:
    """[{name, question, low, high}] per dimension from the data README's list of the 19 dimensions."""
    readme = Path(root or default_data_root()) / "README.md"
    rows = re.findall(r"^(\d+) ([^:\n]+): (.+?) - (.+)$", readme.read_text(), flags=re.M) if readme.is_file() else []
    if len(rows) != len(DIMENSIONS):
        raise fail(readme, f"expected the {len(DIMENSIONS)} dimensions with their poles, found {len(rows)}")
    return [{"name": name, "question": q.strip(), "low": lo.strip(), "high": hi.strip()}
            for name, (_, q, lo, hi) in zip(DIMENSIONS, rows, strict=True)]


def report_accuracy(report_dir: Path, variant: str) -> dict:
    """Overall and within-excerpt r of `variant` in an experiment's report.md (mean, sd, corrected
    95% CI over its cells) and the human-only r of its evaluation, where recorded."""
    from scipy import stats

    report_dir = Path(report_dir)
    text = (report_dir / "report.md").read_text()
    design = re.search(r"K = (\d+) folds x R = (\d+) seeds", text)
    sizes = re.search(r"mean fold sizes: train (\d+), test (\d+)", text)
    row = re.search(rf"^\| {re.escape(variant)} \| ([\d.]+) ± ([\d.]+) \| [^|]+ \| ([\d.]+) ± ([\d.]+) \|$",
                    text, flags=re.M)
    if not (design and sizes and row):
        raise fail(report_dir / "report.md", f"no design or secondary-metrics row for variant {variant!r}")
    cells = int(design[1]) * int(design[2])
    half = stats.t.ppf(0.975, cells - 1) * (1 / cells + int(sizes[2]) / int(sizes[1])) ** 0.5
    out = {"experiment": report_dir.name, "variant": variant, "report": report_dir.as_posix(), "cells": cells,
           "design": f"excerpt-group CV, {design[1]} folds x {design[2]} seeds"}
    for key, mean, sd in (("pearson", row[1], row[2]), ("within_excerpt_pearson", row[3], row[4])):
        m, s = float(mean), float(sd)
        out[key] = {"mean": m, "sd": s, "ci95": [round(m - half * s, 4), round(m + half * s, 4)]}
    evaluation = report_dir / "evaluation" / "evaluation.json"
    if evaluation.is_file():
        metrics = json.loads(evaluation.read_text())["metrics"].get(variant, {})
        out["human_only"] = {k: metrics[k]["human"] for k in ("pearson", "within_excerpt_pearson")
                             if k in metrics and metrics[k].get("human") is not None}
    return out


def build_card(folder: Path, cfg: RunConfig, sidecar: Path | None) -> dict:
    """The card's content (see module docstring)."""
    from pianolab.features.kinds import get_kind

    meta = json.loads((Path(folder) / "meta.json").read_text())
    info = yaml.safe_load(sidecar.read_text()) if sidecar and Path(sidecar).is_file() else {}
    if not isinstance(info, dict):
        raise fail(sidecar, "card sidecar must be a mapping (name, summary, evidence, notes)")
    try:
        accuracy, *also = [report_accuracy(Path(e["report"]), e["variant"])
                           for e in [info.get("evidence") or {}, *info.get("also", [])] if e] or [None]
    except KeyError as e:
        raise fail(sidecar, f"evidence needs report and variant (missing {e})") from None
    return {
        "name": info.get("name", Path(folder).name),
        "summary": info.get("summary", ""),
        "predicts": "the mean rating of expert listeners on PercePiano's 19 perceptual dimensions, for one "
                    + ("piano recording, transcribed to MIDI by Transkun 2" if cfg.data.midi
                       else "piano performance given as MIDI"),
        "value_range": "each value is a mean rating on the 1-7 scale divided by 7: 1/7 (0.14) = fully the low "
                       "pole, 4/7 (0.57) = the middle, 1 = fully the high pole; predictions can leave that range "
                       "slightly",
        "dimensions": dimension_poles(),
        "model": {"name": cfg.model.name, "params": cfg.model.params, "features": list(cfg.features.vector),
                  "needs_score": any(get_kind(k).uses_score for k in cfg.features.vector),
                  "config": to_dict(cfg)},
        "training_data": {"dataset": "PercePiano (local copy, data/percepiano)", "data_version": meta["data_version"],
                          "inputs": cfg.data.midi or "the performance MIDI",
                          "items": meta["n_train"], "validation_items": meta["n_val"],
                          "split": meta["split_description"]},
        "expected_accuracy": accuracy,
        "replications": also,
        "notes": [n.strip() for n in info.get("notes", [])],
        "limits": list(LIMITS),
        "environment": {k: meta.get(k) for k in ("git_commit", "packages", "python")},
    }


def write_card(folder: Path, cfg: RunConfig, sidecar: Path | None) -> None:
    """Write model_card.json and model_card.md into the model folder."""
    card = build_card(folder, cfg, sidecar)
    (Path(folder) / "model_card.json").write_text(json.dumps(card, indent=1) + "\n")
    (Path(folder) / "model_card.md").write_text(card_markdown(card))


def _r(acc: dict, key: str) -> str:
    x = acc[key]
    lo, hi = x["ci95"]
    return f"{x['mean']:.3f} (sd {x['sd']:.3f} over {acc['cells']} cells; 95% CI {lo:.3f} to {hi:.3f})"


def card_markdown(card: dict) -> str:
    """The card as Markdown."""
    lines = [f"# Model card: {card['name']}", "", card["summary"], "", "## What it predicts", "",
             card["predicts"] + ".", "", f"Value range: {card['value_range']}.", "",
             "| dimension | question | 0 / low end means | 1 / high end means |", "|---|---|---|---|"]
    lines += [f"| `{d['name']}` | {d['question']} | {d['low']} | {d['high']} |" for d in card["dimensions"]]
    m = card["model"]
    lines += ["", "## Model", "", f"`{m['name']}` on the {', '.join(m['features'])} features"
              + (" (needs the excerpt's score)." if m["needs_score"] else " (needs only the performance)."), ""]
    acc = card["expected_accuracy"]
    lines += ["## Expected accuracy", ""]
    if acc is None:
        lines += ["Not measured: no experiment named in the card sidecar."]
    else:
        lines += [f"From experiment `{acc['experiment']}` (`{acc['report']}`), variant `{acc['variant']}`: "
                  f"{acc['design']}, Pearson r "
                  "between predicted and mean ratings, averaged over the 19 dimensions, on excerpts the model "
                  "never saw.", "",
                  f"- overall r: {_r(acc, 'pearson')}",
                  f"- within-excerpt r (ranking performances of the same music): {_r(acc, 'within_excerpt_pearson')}"]
        human = acc.get("human_only") or {}
        lines.append("- human performances only (deadpan renditions left out; pooled out-of-fold): "
                     + (", ".join(f"{k} {v:.3f}" for k, v in human.items()) if human
                        else "not recorded by that experiment"))
    for rep in card["replications"]:
        lines.append(f"- the same configuration in `{rep['experiment']}` (variant `{rep['variant']}`, "
                     f"{rep['design']}): overall r {_r(rep, 'pearson')}, "
                     f"within-excerpt r {_r(rep, 'within_excerpt_pearson')}")
    lines += [""] + [f"- {n}" for n in card["notes"]] + ([""] if card["notes"] else [])
    t = card["training_data"]
    lines += ["## Training data", "", f"{t['dataset']}, data version {t['data_version']}: {t['items']} labelled "
              f"performances ({t['split']}), {t['validation_items']} for validation; inputs: "
              f"{t.get('inputs', 'the performance MIDI')}.", "", "## Limits", ""]
    lines += [f"- {x}" for x in card["limits"]]
    return "\n".join(lines) + "\n"

