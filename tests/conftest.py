"""Shared fixtures: the real bundled dataset, loaded once; outputs kept out of the repo."""

import os
from pathlib import Path

import pytest

from pianolab.data.percepiano import load_dataset

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = REPO / "data" / "percepiano"


def pytest_configure(config):
    # Features are content-addressed, so tests share the project cache (the README's main job fills
    # it); splits and runs go to a per-session temporary folder.
    os.environ.setdefault("PIANOLAB_CACHE", str(REPO / "cache"))
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"pianolab-tests-{os.getpid()}"
    os.environ["PIANOLAB_SPLITS"] = str(tmp / "splits")
    os.environ["PIANOLAB_RUNS"] = str(tmp / "runs")
    os.environ["MPLBACKEND"] = "Agg"


@pytest.fixture(scope="session")
def dataset():
    return load_dataset(DATA_ROOT)


@pytest.fixture
def data_copy(tmp_path):
    """A writable copy of the labels and a handful of MIDI files, for bad-input tests."""
    import shutil

    root = tmp_path / "percepiano"
    shutil.copytree(DATA_ROOT / "labels", root / "labels")
    (root / "midi").mkdir()
    for p in sorted((DATA_ROOT / "midi").glob("*.mid")):
        shutil.copy(p, root / "midi" / p.name)
    return root
