import subprocess
import sys


def run(*args, env=None):
    return subprocess.run([sys.executable, "-c", "from pianolab.cli import main; main()", *args],
                          capture_output=True, text=True, env=env)


def test_data_check_prints_counts():
    out = run("data", "check")
    assert out.returncode == 0, out.stderr
    assert "1001 labelled performances in 83 excerpt groups" in out.stdout
    assert "10 MIDI files without labels" in out.stdout
    assert "Schubert_D960_mv3" in out.stdout


def test_bad_data_root_is_one_line(tmp_path):
    out = run("data", "check", "--data-root", str(tmp_path / "missing"))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "data folder not found" in out.stderr


def test_splits_make_check_and_leak_exit_code(tmp_path):
    d = str(tmp_path)
    assert run("splits", "make", "excerpt", "--folds", "4", "--dir", d).returncode == 0
    assert run("splits", "make", "piece", "--dir", d).returncode == 0
    ok = run("splits", "check", "--dir", d)
    assert ok.returncode == 0 and "2/2 splits clean" in ok.stdout
    path = next(tmp_path.glob("excerpt-*.json"))
    text = path.read_text()
    import json

    data = json.loads(text)
    data["repeats"][0][0]["train"].append(data["repeats"][0][0]["test"][0])
    path.write_text(json.dumps(data))
    bad = run("splits", "check", "--dir", d)
    assert bad.returncode == 1 and "LEAK" in bad.stdout


def test_unknown_split_name():
    out = run("splits", "make", "nope", "--dir", "/tmp/unused-splits")
    assert out.returncode == 2 and "unknown split 'nope'" in out.stderr


def test_predict_with_the_shipped_default_model(tmp_path):
    midi = "data/percepiano/midi/Schubert_D960_mv3_8bars_3_12.mid"
    out = run("predict", midi, str(tmp_path / "bad.txt"), "--out", str(tmp_path / "p.csv"))
    assert out.returncode == 2 and "no such file" in out.stderr  # a missing input is named
    (tmp_path / "bad.txt").write_text("x")
    out = run("predict", midi, str(tmp_path / "bad.txt"), "--out", str(tmp_path / "p.csv"), "--overwrite")
    assert out.returncode == 2, out.stderr  # any failed file: exit 2, the others still predicted
    assert "bad.txt: not a MIDI" in out.stderr
    import pandas as pd

    df = pd.read_csv(tmp_path / "p.csv")
    assert list(df["stem"]) == ["Schubert_D960_mv3_8bars_3_12"] and df.shape == (1, 22)
    assert list(df["model"]) == ["with-score"] and df.iloc[0, 3:].between(0, 1).all()


def test_features_warm_up_fills_numbas_cache(tmp_path):
    import os

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    out = run("features", "warm-up", "--kind", "spectral_only", "--kind", "symbolic", env=env)
    assert out.returncode == 0, out.stderr
    assert "warmed up spectral_only in" in out.stdout  # symbolic compiles nothing
    assert any((tmp_path / "numba").rglob("*.nbi"))  # librosa's compiled kernels, for later processes
    bad = run("features", "warm-up", "--kind", "mel_999", env=env)
    assert bad.returncode == 1 and "unknown feature kind 'mel_999'" in bad.stderr
