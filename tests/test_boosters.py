"""LightGBM, XGBoost and CatBoost as registered estimators: they learn, and a trained run folder
predicts through `pianolab predict` after a skops round trip that runs no code."""

import subprocess
import sys

import pandas as pd
import pytest
import yaml

from pianolab import track
from pianolab.data.percepiano import DIMENSIONS

SMALL = {"lightgbm": {"n_estimators": 40}, "xgboost": {"n_estimators": 40}, "catboost": {"iterations": 40}}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_booster_learns_and_predicts_from_its_run_folder(name, tmp_path, dataset):
    cfg = {"data": {"split": "excerpt", "folds": 4}, "features": {"vector": ["symbolic"]},
           "model": {"name": name, "params": SMALL[name]}, "track": {"tracker": "none"}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    folder = tmp_path / "run"
    trained = subprocess.run([sys.executable, "-m", "pianolab", "train", str(tmp_path / "cfg.yaml"), "--out",
                              str(folder)], capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert track.read_meta(folder)["summary"]["pearson"] > 0.4  # learns (predicting the mean gives 0)
    assert (folder / "model.skops").is_file() and not list(folder.glob("*.joblib"))

    rows, pred, _ = track.read_predictions(folder / "predictions.parquet")
    stem = rows["stem"][rows["role"] == "test"].iloc[0]
    midi = dataset.items[dataset.index[stem]].midi_path
    out = tmp_path / "preds.csv"
    predicted = subprocess.run([sys.executable, "-m", "pianolab", "predict", str(midi), "--model", str(folder),
                                "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    saved = pred[(rows["stem"] == stem).to_numpy()][0]
    assert pd.read_csv(out)[list(DIMENSIONS)].to_numpy()[0] == pytest.approx(saved, abs=1e-4)
