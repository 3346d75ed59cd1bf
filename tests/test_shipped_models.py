"""The shipped final models (issue 21 item 4): `train --all`, their model cards, their size, and the
shipped default config on excerpts it never saw."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pianolab.config import load_config, to_dict
from pianolab.data.percepiano import DIMENSIONS
from pianolab.predict import SHIPPED_MODELS, predict_files
from pianolab.train.card import report_accuracy

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {name: REPO / "configs" / f"{name.replace('-', '_')}_model.yaml" for name in SHIPPED_MODELS}


@pytest.mark.parametrize("name", list(SHIPPED_MODELS))
def test_shipped_cards_state_the_measured_accuracy_the_poles_and_the_range(name):
    folder = SHIPPED_MODELS[name]
    card = json.loads((folder / "model_card.json").read_text())
    acc = card["expected_accuracy"]
    again = json.loads(json.dumps(report_accuracy(REPO / acc["report"], acc["variant"])))
    assert {**acc, "report": None} == {**again, "report": None}  # the committed report's figures
    for key in ("pearson", "within_excerpt_pearson"):
        lo, hi = acc[key]["ci95"]
        assert 0.4 < lo < acc[key]["mean"] < hi < 0.9
    assert [d["name"] for d in card["dimensions"]] == list(DIMENSIONS)
    assert card["dimensions"][0]["low"] == "stable" and card["dimensions"][0]["high"] == "unstable"
    assert "1/7" in card["value_range"] and card["training_data"]["items"] == 1001
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["n_test"] == 0 and meta["split"] == "all"
    assert "## Expected accuracy" in (folder / "model_card.md").read_text()
    shipped, committed = yaml.safe_load((folder / "config.yaml").read_text()), to_dict(load_config(CONFIGS[name]))
    for section in ("features", "model"):  # the model is built from the committed config
        assert shipped[section] == committed[section], section
    assert shipped["data"].get("midi") == committed["data"]["midi"]  # from the MIDI or the transcriptions
    assert sum(p.stat().st_size for p in folder.iterdir()) < 13e6  # small enough for the package


def test_with_score_card_has_human_only_figures():
    card = json.loads((SHIPPED_MODELS["with-score"] / "model_card.json").read_text())
    human = card["expected_accuracy"]["human_only"]
    assert 0.5 < human["pearson"] < 0.9 and card["model"]["needs_score"]


def test_the_default_config_rates_excerpts_it_never_saw(tmp_path, dataset):
    """The shipped default config fitted without a quarter of the excerpt groups (train --all
    --exclude-group ...) rates their performances with a sane mean per-dimension Pearson r."""
    from pianolab.evaluate.metrics import nanmean, pearson_cols

    groups = sorted(set(dataset.column("group")))
    held_out = groups[::4]
    args = [a for g in held_out for a in ("--exclude-group", g)]
    out = subprocess.run([sys.executable, "-c", "from pianolab.cli import main; main()", "train",
                          str(CONFIGS["default"]), "--all", "--out", str(tmp_path / "m"), *args],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    items = [it for it in dataset.items if it.group in held_out]
    assert meta["n_train"] == len(dataset) - len(items) and meta["excluded_groups"] == held_out
    df, errors = predict_files([it.midi_path for it in items], tmp_path / "m")
    assert errors == [] and len(df) == len(items)
    r = nanmean(pearson_cols(np.array([it.labels for it in items]), df[list(DIMENSIONS)].to_numpy()))
    assert r > 0.6, r


def test_train_all_refuses_what_it_cannot_do(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-c", "from pianolab.cli import main; main()", "train",  # noqa: E731
                                     str(CONFIGS["default"]), *map(str, a)], capture_output=True, text=True)
    for args in (["--exclude-group", "x", "--out", tmp_path], ["--all", "--out", tmp_path, "--exclude-group", "nope"]):
        res = run(*args)
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and res.stderr.startswith("error: "), args
