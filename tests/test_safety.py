"""No code from a model folder: scikit-learn models are skops files of trusted types; pickles and
untrusted types are refused with one line, and their payload never runs."""

import os
import pickle
import shutil
import subprocess
import sys

import pytest
import skops.io as sio

from pianolab.config import config_from_dict
from pianolab.errors import PianolabError
from pianolab.models.persist import MODEL_FILE, load_model
from pianolab.train.run import execute

RIDGE = {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge"}, "data": {"split": "holdout"},
         "track": {"tracker": "none"}}
MIDI = "data/percepiano/midi/Schubert_D960_mv3_8bars_3_12.mid"


class Payload:
    """Pickled, it runs `touch marker` when loaded (what a hostile model file would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Hostile:
    """Loaded by skops with its type trusted, it would write the marker (`__setstate__` runs)."""

    def __init__(self, marker=""):
        self.marker = marker

    def __getstate__(self):
        return {"marker": self.marker}

    def __setstate__(self, state):
        open(state["marker"], "w").close()


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("safety") / "ridge"
    execute(config_from_dict(RIDGE), folder)
    return folder


def predict_cli(model, tmp_path):
    return subprocess.run([sys.executable, "-c", "from pianolab.cli import main; main()", "predict", MIDI,
                           "--model", str(model), "--out", str(tmp_path / "p.csv")], capture_output=True, text=True)


def test_runs_save_skops_files_and_predict_from_them(run_folder, tmp_path):
    assert (run_folder / MODEL_FILE).is_file() and not list(run_folder.glob("*.joblib"))
    out = predict_cli(run_folder, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "1 performance(s) predicted" in out.stdout


def test_a_pickled_model_is_refused_and_its_payload_never_runs(run_folder, tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "probe.pkl").write_bytes(pickle.dumps(Payload(marker)))
    pickle.loads((tmp_path / "probe.pkl").read_bytes())  # the payload is live: unpickling runs it
    assert marker.exists()
    marker.unlink()
    for name in ("model.joblib", MODEL_FILE):  # an old-style pickle, and a pickle under the new name
        folder = tmp_path / name
        shutil.copytree(run_folder, folder)
        (folder / MODEL_FILE).unlink()
        (folder / name).write_bytes(pickle.dumps(Payload(marker)))
        out = predict_cli(folder, tmp_path)
        assert out.returncode == 2 and not marker.exists(), (name, out.stderr)
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ") and name in out.stderr
        assert "Traceback" not in out.stderr


def test_a_skops_file_with_an_untrusted_type_is_refused_before_anything_is_created(run_folder, tmp_path):
    marker = tmp_path / "ran"
    folder = tmp_path / "hostile"
    shutil.copytree(run_folder, folder)
    saved = load_model(folder / MODEL_FILE)
    sio.dump({**saved, "estimator": Hostile(str(marker))}, folder / MODEL_FILE)
    sio.load(folder / MODEL_FILE, trusted=sio.get_untrusted_types(file=folder / MODEL_FILE))  # live when trusted
    assert marker.exists()
    marker.unlink()
    with pytest.raises(PianolabError, match="does not trust.*Hostile"):
        load_model(folder / MODEL_FILE)
    out = predict_cli(folder, tmp_path)
    assert out.returncode == 2 and not marker.exists() and "does not trust" in out.stderr
    assert out.stderr.count("\n") == 1


def test_a_pickled_stack_beside_the_model_is_refused(run_folder, tmp_path):
    marker = tmp_path / "ran"
    folder = tmp_path / "stacked"
    shutil.copytree(run_folder, folder)
    (folder / "stack.joblib").write_bytes(pickle.dumps(Payload(marker)))
    out = predict_cli(folder, tmp_path)
    assert out.returncode == 2 and not marker.exists() and "stack.joblib" in out.stderr
    assert "never loaded" in out.stderr and out.stderr.count("\n") == 1
