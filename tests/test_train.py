"""Training runs: determinism, resume after an interruption, run folder contents, predict."""

import json
import time

import numpy as np
import pandas as pd
import pytest
import torch

from pianolab import track
from pianolab.config import config_from_dict, replace
from pianolab.errors import PianolabError
from pianolab.train import trainer as trainer_mod
from pianolab.train.run import execute

MLP = {"features": {"vector": ["symbolic"]}, "model": {"name": "symbolic_mlp"},
       "train": {"epochs": 6, "batch_size": 64, "checkpoint_every": 2}, "track": {"tracker": "none"}}


def _preds(folder):
    return pd.read_parquet(folder / "predictions.parquet")


def test_run_folder_and_determinism(tmp_path):
    cfg = config_from_dict(MLP)
    a, b = tmp_path / "a", tmp_path / "b"
    summary = execute(cfg, a)
    execute(cfg, b)
    pd.testing.assert_frame_equal(_preds(a), _preds(b))  # same seed, same CPU result bit for bit
    assert summary["pearson"] > 0.3
    for name in ("config.yaml", "meta.json", "metrics.jsonl", "predictions.parquet", "checkpoint.pt"):
        assert (a / name).is_file(), name
    meta = json.loads((a / "meta.json").read_text())
    assert meta["status"] == "done" and meta["split"] == "excerpt-k4-r1-s0" and len(meta["data_version"]) == 16
    records = track.read_metrics(a)
    assert [r["epoch"] for r in records] == list(range(1, 7)) and "val_pearson" in records[-1]
    assert len(records[-1]["grad_norms"]) > 2 and all(v > 0 for v in records[-1]["grad_norms"].values())
    roles = _preds(a)["role"].value_counts()
    assert roles["test"] == meta["n_test"] and roles["val"] == meta["n_val"] > 0
    ckpt = torch.load(a / "checkpoint.pt", weights_only=True)  # no pickled code
    assert ckpt["model_name"] == "symbolic_mlp" and "y_mean" in ckpt["norm"]
    other = tmp_path / "c"
    execute(replace(cfg, train={"seed": 1}), other)
    assert not _preds(other)[["pred_timing_stable_unstable"]].equals(_preds(a)[["pred_timing_stable_unstable"]])


def test_resume_after_interruption_gives_same_weights(tmp_path, monkeypatch):
    cfg = config_from_dict(MLP)
    clean = tmp_path / "clean"
    execute(cfg, clean)
    folder = tmp_path / "interrupted"
    original = trainer_mod.Trainer.train_epoch

    def crash_at_five(self, train):
        if self.epoch == 4:
            raise KeyboardInterrupt("simulated kill")
        return original(self, train)

    monkeypatch.setattr(trainer_mod.Trainer, "train_epoch", crash_at_five)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, folder)
    assert (folder / "state.pt").is_file() and not track.is_done(folder)
    monkeypatch.setattr(trainer_mod.Trainer, "train_epoch", original)
    execute(cfg, folder)
    w_clean = torch.load(clean / "checkpoint.pt", weights_only=True)["model"]
    w_resumed = torch.load(folder / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(w_clean[k], w_resumed[k]) for k in w_clean)
    records = track.read_metrics(folder)
    assert [r["epoch"] for r in records] == list(range(1, 7))
    finished = [r["finished_at"] for r in records]  # Unix times: the resumed epochs came later
    assert finished == sorted(finished) and finished[-1] <= time.time()
    assert not (folder / "state.pt").exists()


def test_classic_estimator_run(tmp_path):
    cfg = config_from_dict({**MLP, "model": {"name": "random_forest", "params": {"n_estimators": 50}},
                            "features": {"vector": ["symbolic"], "top_k": 20}})
    summary = execute(cfg, tmp_path / "rf")
    assert summary["pearson"] > 0.5 and (tmp_path / "rf" / "model.skops").is_file()


def test_trainer_learns_synthetic_spectrogram_task():
    """ast_ultra_tiny on random spectrograms whose target is the mean of one frequency band."""
    from pianolab.models import create_model
    from pianolab.train.trainer import Tensors, Trainer

    gen = torch.Generator().manual_seed(0)
    spec = torch.randn(64, 1, 32, 48, generator=gen)
    target = spec[:, 0, :8].mean((1, 2), keepdim=False).unsqueeze(1).repeat(1, 19) * 4
    cfg = config_from_dict({"model": {"name": "ast_ultra_tiny"}, "train": {"epochs": 15, "batch_size": 16},
                            "optim": {"lr": 1e-3, "weight_decay": 0.0}})
    torch.manual_seed(0)
    model = create_model("ast_ultra_tiny", n_freq=32, patch=16, stride=16)
    tr = Trainer(cfg, model, torch.device("cpu"), steps_per_epoch=4)
    data = Tensors({"spec": spec}, target)
    losses = [tr.train_epoch(data)["train_loss"] for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0]


def test_unknown_model_and_missing_features(tmp_path):
    with pytest.raises(PianolabError, match="unknown model 'nope'"):
        execute(config_from_dict({**MLP, "model": {"name": "nope"}}), tmp_path / "x")
    with pytest.raises(PianolabError, match="features"):
        execute(config_from_dict({**MLP, "features": {}}), tmp_path / "y")


def test_predict_real_bad_and_mismatched(tmp_path, dataset):
    from pianolab.predict import predict_files

    cfg = config_from_dict(MLP)
    folder = tmp_path / "run"
    execute(cfg, folder)
    good = [it.midi_path for it in dataset.items[:3]]
    bad = tmp_path / "broken.mid"
    bad.write_bytes(b"MThd garbage")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    df, errors = predict_files(good + [bad, text], folder)
    assert list(df["stem"]) == [p.stem.strip() for p in good] and df.shape[1] == 20
    assert ((df.iloc[:, 1:] > 0) & (df.iloc[:, 1:] < 1)).all().all()
    assert len(errors) == 2 and any("broken.mid" in e for e in errors) and any("notes.txt" in e for e in errors)
    norm_ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
    norm_ckpt["norm"]["scaler"]["mean"] = norm_ckpt["norm"]["scaler"]["mean"][:-3]  # model of another feature set
    torch.save(norm_ckpt, folder / "checkpoint.pt")
    with pytest.raises(PianolabError, match="retrain"):
        predict_files(good, folder)


def test_predict_wav_and_midi_with_a_spectrogram_model(tmp_path, dataset, monkeypatch):
    """A spectrogram-only checkpoint hears recorded WAV files as they are (no transcription) and
    renders MIDI."""
    import wave

    import pianolab.transcribe

    def no_transcription(*args, **kwargs):
        raise AssertionError("a spectrogram-only model must hear the recording, not its transcription")

    monkeypatch.setattr(pianolab.transcribe, "transcribe_files", no_transcription)

    import yaml

    from pianolab.config import to_dict
    from pianolab.models import create_model
    from pianolab.predict import predict_files

    cfg = config_from_dict({"features": {"spectrogram": "log_mel", "seconds": 2.0},
                            "model": {"name": "ast_ultra_tiny"}, "track": {"tracker": "none"}})
    folder = tmp_path / "ast_run"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    kwargs = {"in_channels": 1, "n_freq": 128, "n_frames": 200}
    model = create_model("ast_ultra_tiny", **kwargs)
    torch.save({"model": model.state_dict(), "model_name": "ast_ultra_tiny", "model_kwargs": kwargs,
                "norm": {"y_mean": [0.5] * 19, "y_std": [0.1] * 19, "spec_mean": -40.0, "spec_std": 20.0},
                "config": json.dumps(to_dict(cfg))}, folder / "checkpoint.pt")
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * 22050) / 22050) * 32767).astype("<i2")
    wav = tmp_path / "take.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(22050), w.writeframes(tone.tobytes())
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF0000WAVE")
    df, errors = predict_files([wav, dataset.items[0].midi_path, broken], folder)
    assert list(df["stem"]) == [dataset.items[0].stem, "take"]
    assert np.isfinite(df.iloc[:, 1:].to_numpy()).all()
    assert len(errors) == 1 and "broken.wav" in errors[0]


def test_wall_time_budget_stops_training_after_an_epoch(tmp_path):
    cfg = config_from_dict({**MLP, "train": {**MLP["train"], "epochs": 50, "max_seconds": 0.0}})
    execute(cfg, tmp_path / "r")
    assert [r["epoch"] for r in track.read_metrics(tmp_path / "r")] == [1]


def test_deterministic_kernels_during_training_only(tmp_path, monkeypatch):
    """`train.deterministic` switches PyTorch to deterministic kernels and math attention while the
    model trains, restores the settings after, and changes neither the run's identity nor, on the
    CPU (deterministic anyway), its result."""
    from pianolab.config import config_hash

    seen, original = [], trainer_mod.Trainer.train_epoch

    def record(self, train):
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cuda.flash_sdp_enabled()))
        return original(self, train)

    monkeypatch.setattr(trainer_mod.Trainer, "train_epoch", record)
    cfg = config_from_dict(MLP)
    strict = replace(cfg, train={"deterministic": True})
    assert config_hash(strict) == config_hash(cfg)
    execute(strict, tmp_path / "strict")
    assert seen and all(s == (True, False) for s in seen)
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cuda.flash_sdp_enabled()
    seen.clear()
    execute(cfg, tmp_path / "default")
    assert all(s == (False, True) for s in seen)
    pd.testing.assert_frame_equal(_preds(tmp_path / "strict"), _preds(tmp_path / "default"))


def test_spectrogram_inputs_that_all_fail_are_one_clear_error(tmp_path):
    """Every file unreadable (e.g. a renderer without its SoundFont): one line naming a file and why,
    not a StopIteration from inside the loader."""
    from pianolab.config import config_from_dict
    from pianolab.errors import PianolabError
    from pianolab.train.inputs import load_inputs

    bad = [tmp_path / f"bad{i}.mid" for i in range(2)]
    for p in bad:
        p.write_text("not a MIDI file")
    cfg = config_from_dict({"features": {"spectrogram": "log_mel"}, "model": {"name": "ast_ultra_tiny"}})
    why = r"log_mel: no input could be computed \(2 failed\), e\.g\. .*bad0\.mid"
    with pytest.raises(PianolabError, match=why) as e:
        load_inputs(cfg.features, bad)
    assert "\n" not in str(e.value)
