"""predict's bad-input corpus (issue 19 §3): every bad file one line naming the real problem, exit
code 2, the good files still predicted; --out into a missing, unwritable or wrong place; data check."""

import shutil
import subprocess
import sys
from pathlib import Path

import mido
import pandas as pd
import pytest

GOOD = ["data/percepiano/midi/Schubert_D960_mv3_8bars_3_12.mid",
        "data/percepiano/midi/Beethoven_WoO80_thema_8bars_11_1.mid"]


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-c", "from pianolab.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def midi_file(path: Path, channel: int = 0, notes: bool = True, kind: int = 1) -> Path:
    mid = mido.MidiFile(type=kind)
    for _ in range(2 if kind == 2 else 1):
        track = mido.MidiTrack()
        if notes:
            for k in range(8):
                track.append(mido.Message("note_on", note=60 + k, velocity=70, channel=channel, time=240 * (k > 0)))
                track.append(mido.Message("note_off", note=60 + k, velocity=0, channel=channel, time=200))
        else:
            track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
        mid.tracks.append(track)
    mid.save(path)
    return path


@pytest.fixture
def corpus(tmp_path):
    """{file: the words its error line must contain}."""
    real = Path(GOOD[0]).read_bytes()
    files = {tmp_path / "missing.mid": "no such file",
             tmp_path / "empty.mid": "empty file",
             tmp_path / "text.mid": "not a MIDI file",
             tmp_path / "truncated.mid": "truncated",
             midi_file(tmp_path / "silent.mid", notes=False): "no notes",
             midi_file(tmp_path / "drums.mid", channel=9): "drum-channel",
             midi_file(tmp_path / "sequences.mid", kind=2): "type-2 MIDI",
             tmp_path / "notes.txt": "not a MIDI"}
    (tmp_path / "empty.mid").write_bytes(b"")
    (tmp_path / "text.mid").write_text("hello, not music")
    (tmp_path / "truncated.mid").write_bytes(real[: len(real) // 2])
    (tmp_path / "notes.txt").write_text("hello")
    return files


def test_every_bad_file_is_one_line_and_the_good_ones_are_still_predicted(tmp_path, corpus):
    out = tmp_path / "new" / "folder" / "p.csv"  # a missing folder is created
    res = run("predict", GOOD[0], *corpus, GOOD[1], "--model", "default", "--out", out)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == len(corpus) and "Traceback" not in res.stderr
    for path, words in corpus.items():
        (line,) = [x for x in lines if x.startswith(f"error: {path}:")]
        assert words in line, line
    df = pd.read_csv(out)
    assert list(df["stem"]) == [Path(p).stem for p in GOOD] and set(df["model"]) == {"default"}
    assert df[df.columns[3:]].apply(lambda c: c.between(0, 1)).all().all()
    assert f"{len(GOOD)} performance(s) predicted, {len(corpus)} failed" in res.stdout


def test_one_bad_file_alone_fails_with_exit_2(tmp_path, corpus):
    bad = next(p for p, w in corpus.items() if w == "drum-channel")
    res = run("predict", bad, "--out", tmp_path / "p.csv")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "drum-channel" in res.stderr


def test_unwritable_out_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("x")
    for out in (tmp_path / "a_file" / "p.csv", tmp_path, Path("/sys/pianolab-predictions.csv")):
        res = run("predict", GOOD[0], "--out", out)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, (out, res.stderr)
        assert res.stderr.startswith(f"error: {out}: cannot write the predictions"), res.stderr


def test_data_check_reports_corrupt_and_empty_midi(data_copy):
    (data_copy / "midi" / "Schubert_D960_mv3_8bars_3_12.mid").write_bytes(b"")
    broken = data_copy / "midi" / "Beethoven_WoO80_thema_8bars_11_1.mid"
    broken.write_bytes(broken.read_bytes()[:100])
    res = run("data", "check", "--data-root", data_copy)
    assert res.returncode == 2, res.stderr
    errors = res.stderr.strip().splitlines()
    assert len(errors) == 2 and "empty file" in errors[1] and "truncated" in errors[0]
    assert "MIDI files: 1009 of 1011 readable with notes" in res.stdout


def test_rerun_skips_finished_files_and_overwrite_starts_afresh(tmp_path):
    out = tmp_path / "p.csv"
    first = run("predict", GOOD[0], "--model", "default", "--out", out)
    assert first.returncode == 0, first.stderr
    again = run("predict", GOOD[0], GOOD[1], "--model", "default", "--out", out)
    assert again.returncode == 0 and "1 already in p.csv (skipped)" in again.stdout
    assert list(pd.read_csv(out)["stem"]) == [Path(p).stem for p in GOOD]
    fresh = run("predict", GOOD[1], "--model", "default", "--out", out, "--overwrite")
    assert fresh.returncode == 0 and list(pd.read_csv(out)["stem"]) == [Path(GOOD[1]).stem]
    shutil.copy(GOOD[0], tmp_path / "x.csv")  # an --out that predict did not write is not appended to
    res = run("predict", GOOD[0], "--out", tmp_path / "x.csv")
    assert res.returncode == 2 and "pass --overwrite" in res.stderr


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_batches_in_parallel_give_the_same_rows_and_errors(tmp_path, corpus, backend):
    """--jobs 2 (worker processes, or Ray tasks) predicts each file as one process does, bad files
    included; rows come as batches finish."""
    if backend == "ray":
        pytest.importorskip("ray")
    files = [*GOOD, tmp_path / "text.mid", tmp_path / "empty.mid"]
    one = run("predict", *files, "--model", "default", "--out", tmp_path / "one.csv", "--batch", "1")
    two = run("predict", *files, "--model", "default", "--out", tmp_path / "two.csv", "--batch", "1",
              "--jobs", "2", "--backend", backend)
    assert one.returncode == two.returncode == 2, two.stderr[-2000:]
    errors = lambda r: sorted(line for line in r.stderr.splitlines() if line.startswith("error:"))
    assert errors(one) == errors(two) and len(errors(two)) == 2
    a, b = (pd.read_csv(tmp_path / f).sort_values("stem").reset_index(drop=True) for f in ("one.csv", "two.csv"))
    pd.testing.assert_frame_equal(a, b)


def test_ray_options_without_ray_backend_are_refused(tmp_path):
    res = run("predict", GOOD[0], "--model", "default", "--out", tmp_path / "p.csv", "--address", "auto")
    assert res.returncode == 2 and "Ray options" in res.stderr and len(res.stderr.strip().splitlines()) == 1
