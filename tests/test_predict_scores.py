"""Scores by the user's hand (issue 21 item 3): --score, --manifest, score lookup through symlinks and
copies, the score's hash in the feature cache key, peer groups, and the model each file goes to."""

import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pianolab.config import config_from_dict
from pianolab.features.scores import find_score, given_scores
from pianolab.train.inputs import load_inputs

DATA = Path("data/percepiano")
PERF = DATA / "midi" / "Schubert_D960_mv3_8bars_3_12.mid"
SCORE = DATA / "score_midi" / "Schubert_D960_mv3_8bars_Score_12.mid"
SCORE_XML = DATA / "score_xml" / "Schubert_D960_mv3_8bars_Score_12.mxl"
OTHER_SCORE = DATA / "score_midi" / "Beethoven_WoO80_thema_8bars_Score_1.mid"


def run(*args):
    return subprocess.run([sys.executable, "-c", "from pianolab.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True)


def relative_features(path):
    return load_inputs(config_from_dict({"features": {"vector": ["symbolic_relative"]}}).features, [path]).vector


def test_symlinks_and_copies_find_the_percepiano_score(tmp_path):
    link = tmp_path / "my take.mid"
    link.symlink_to(PERF.resolve())
    copy = tmp_path / "elsewhere" / PERF.name
    copy.parent.mkdir()
    shutil.copy(PERF, copy)
    assert find_score(link).resolve() == find_score(copy).resolve() == find_score(PERF).resolve() == SCORE.resolve()
    assert find_score(tmp_path / "unrelated.mid") is None


def test_a_changed_score_invalidates_cached_features(tmp_path, monkeypatch):
    monkeypatch.setenv("PIANOLAB_CACHE", str(tmp_path / "cache"))
    take, score = tmp_path / "take.mid", tmp_path / "score.mid"
    shutil.copy(PERF, take)
    shutil.copy(SCORE, score)
    with given_scores({take: score}):
        first = relative_features(take)
        assert np.allclose(first, relative_features(take), equal_nan=True)  # a cache hit: same features
        shutil.copy(OTHER_SCORE, score)  # the same path, another score
        changed = relative_features(take)
    assert not np.allclose(first, changed, equal_nan=True)
    monkeypatch.setenv("PIANOLAB_CACHE", str(tmp_path / "fresh"))
    with given_scores({take: score}):
        assert np.allclose(changed, relative_features(take), equal_nan=True)  # what a fresh cache computes


def test_score_option_musicxml_and_the_model_each_file_goes_to(tmp_path):
    from pianolab.predict import predict_table

    takes = []
    for name in ("take one.mid", "take two.mid"):
        shutil.copy(PERF, tmp_path / name)
        takes.append(tmp_path / name)
    res = run("predict", *takes, "--score", SCORE_XML, "--out", tmp_path / "xml.csv")
    assert res.returncode == 0, res.stderr
    assert "model used: with-score for 2" in res.stdout
    res = run("predict", PERF, takes[0], "--out", tmp_path / "found.csv")  # no --score
    assert res.returncode == 0 and "model used: with-score for 1, default for 1" in res.stdout, res.stdout
    by_xml, found = pd.read_csv(tmp_path / "xml.csv"), pd.read_csv(tmp_path / "found.csv")
    assert list(found["model"]) == ["with-score", "default"]  # PercePiano's score found by name; none for a take
    dims = list(found.columns[3:])
    own = found.iloc[0][dims].to_numpy(float)
    given, errors = predict_table([takes[0]], scores={takes[0]: SCORE})  # the same score, given by hand
    assert errors == [] and np.allclose(given[dims].to_numpy(float), own, atol=1e-5)
    assert np.abs(by_xml[dims].to_numpy(float) - own).max() < 0.05  # MusicXML through partitura: close


def test_a_missing_score_is_named_and_the_others_still_run(tmp_path):
    take = tmp_path / "take.mid"
    shutil.copy(PERF, take)
    res = run("predict", take, PERF, "--model", "with-score", "--out", tmp_path / "p.csv")
    assert res.returncode == 2
    assert res.stderr.strip() == (f"error: {take}: no score given or found for take.mid (model with-score needs "
                                  "one: pass --score FILE or a manifest with a score column)")
    assert list(pd.read_csv(tmp_path / "p.csv")["stem"]) == [PERF.stem]
    res = run("predict", take, "--score", tmp_path / "nope.musicxml", "--out", tmp_path / "p.csv")
    assert res.returncode == 2 and "nope.musicxml: score file not found" in res.stderr


def test_manifest_relative_paths_scores_groups_and_errors(tmp_path):
    (tmp_path / "perfs").mkdir()
    shutil.copy(PERF, tmp_path / "perfs" / "a.mid")
    shutil.copy(PERF, tmp_path / "perfs" / "b.mid")
    with zipfile.ZipFile(SCORE_XML) as mxl:  # the uncompressed MusicXML inside the .mxl
        (tmp_path / "score.musicxml").write_bytes(mxl.read(SCORE_XML.with_suffix(".musicxml").name))
    manifest = tmp_path / "batch.csv"
    manifest.write_text("performance,score,group\nperfs/a.mid,score.musicxml,x\nperfs/b.mid,,x\n"
                        "perfs/gone.mid,score.musicxml,x\n")
    out = tmp_path / "p.csv"
    res = subprocess.run([sys.executable, "-c", "from pianolab.cli import main; main()", "predict", "--manifest",
                          str(manifest), "--out", str(out)], capture_output=True, text=True, cwd="/")
    assert res.returncode == 2 and res.stderr.strip() == f"error: {tmp_path}/perfs/gone.mid: no such file or folder"
    df = pd.read_csv(out)
    assert dict(zip(df["stem"], df["model"], strict=True)) == {"a": "with-score", "b": "default"}
    manifest.write_text("file\nperfs/a.mid\n")
    res = run("predict", "--manifest", manifest, "--out", out, "--overwrite")
    assert res.returncode == 2 and "'performance' column" in res.stderr and res.stderr.count("\n") == 1


def test_peer_groups_come_from_the_manifest_or_percepiano_names_and_warn_on_unknown(tmp_path):
    from pianolab.predict import PredictWarning, peer_groups

    other = DATA / "midi" / "Beethoven_WoO80_thema_8bars_11_1.mid"
    a, b = tmp_path / "a.mid", tmp_path / "b.mid"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        groups = peer_groups([PERF, other, a, b], {a: "mine", b: "mine"})
    assert list(groups) == ["Schubert_D960_mv3_8bars_12", "Beethoven_WoO80_thema_8bars_1", "mine", "mine"]
    with pytest.warns(PredictWarning, match="2 file.s. without an excerpt group"):
        assert list(peer_groups([PERF, a, b], {})) == ["Schubert_D960_mv3_8bars_12", "?", "?"]


def test_predict_files_keeps_its_signature_for_callers():
    from pianolab.predict import DIMENSIONS, predict_files

    df, errors = predict_files([PERF], None, "cpu")
    assert errors == [] and list(df.columns) == ["stem", *DIMENSIONS] and len(df) == 1
