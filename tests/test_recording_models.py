"""Models for recordings (issue 21): `data.midi` trains on another folder of the same performances (their
transcriptions), and `predict` sends a transcribed recording to the shipped models trained that way."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pianolab.config import config_from_dict
from pianolab.data.percepiano import DIMENSIONS, load_dataset
from pianolab.errors import PianolabError
from pianolab.train.validate import check_config

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "percepiano"
TRANSCRIBED = DATA / "transcribed" / "fluidr3_clean"


def test_data_midi_reads_the_performances_from_another_folder(dataset):
    other = load_dataset(DATA, midi=TRANSCRIBED)
    assert other.stems == dataset.stems and other.items[0].labels == dataset.items[0].labels
    assert all(it.midi_path.parent == TRANSCRIBED for it in other.items)
    assert other.version == dataset.version  # the same items and labels: the same splits


def test_a_missing_data_midi_folder_is_refused_in_one_line(tmp_path):
    cfg = config_from_dict({"data": {"midi": str(tmp_path / "nowhere")}, "features": {"vector": ["symbolic"]},
                            "model": {"name": "ridge"}})
    with pytest.raises(PianolabError, match="data.midi: folder .*nowhere does not exist") as e:
        check_config(cfg, "x.yaml")
    assert "\n" not in str(e.value)


def test_the_recording_config_trains_on_transcriptions_and_rates_excerpts_it_never_saw(tmp_path, dataset):
    """`train --all` on configs/recording_model.yaml without a quarter of the excerpt groups: the model
    read the transcriptions (its features differ from the MIDI model's) and rates the held-out groups'
    transcriptions far better than the MIDI-trained recipe does."""
    from pianolab.evaluate.metrics import nanmean, pearson_cols
    from pianolab.predict import predict_files

    groups = sorted(set(dataset.column("group")))
    held_out = groups[::4]
    args = [a for g in held_out for a in ("--exclude-group", g)]
    items = [it for it in dataset.items if it.group in held_out]
    truth = np.array([it.labels for it in items])
    r = {}
    for name in ("recording", "default"):
        out = subprocess.run([sys.executable, "-m", "pianolab", "train", str(REPO / "configs" / f"{name}_model.yaml"),
                              "--all", "--out", str(tmp_path / name), *args], capture_output=True, text=True, cwd=REPO)
        assert out.returncode == 0, out.stderr
        df, errors = predict_files([TRANSCRIBED / it.midi_path.name for it in items], tmp_path / name)
        assert errors == [] and len(df) == len(items)
        r[name] = nanmean(pearson_cols(truth, df[list(DIMENSIONS)].to_numpy()))
    card = json.loads((tmp_path / "recording" / "model_card.json").read_text())
    assert card["training_data"]["inputs"] == "data/percepiano/transcribed/fluidr3_clean"
    assert "recording" in card["predicts"]
    assert r["recording"] > 0.5 and r["recording"] > r["default"] + 0.05, r


def test_predict_sends_a_recording_to_the_recording_models(tmp_path, monkeypatch):
    """A recording (its transcription already cached) goes to `recording`, or to `recording-with-score`
    when its PercePiano name finds the excerpt's score; its MIDI goes to `default` / `with-score`."""
    from pianolab.predict import predict_table
    from pianolab.transcribe import make_transcriber
    from pianolab.transcribe.cache import entry_path

    monkeypatch.setenv("PIANOLAB_CACHE", str(tmp_path / "cache"))
    stem = "Schubert_D960_mv3_8bars_3_15"
    take = tmp_path / "take.flac"
    named = tmp_path / f"{stem}.flac"
    tr = make_transcriber("transkun", device="cpu")
    for i, audio in enumerate((take, named)):
        audio.write_bytes(b"fLaC not decoded: the transcription is cached" + bytes([i]))
        target = entry_path(audio, tr)
        target.parent.mkdir(parents=True)
        shutil.copy(TRANSCRIBED / f"{stem}.mid", target)
    midi = tmp_path / "take.mid"
    shutil.copy(DATA / "midi" / f"{stem}.mid", midi)
    df, errors = predict_table([take, named, midi])
    assert errors == []
    assert dict(zip(df["path"], df["model"], strict=True)) == {
        str(take): "recording", str(named): "recording-with-score", str(midi): "default"}
