"""Shared fixtures: the real bundled dataset, loaded once."""

from pathlib import Path

import pytest

from pianolab.data.percepiano import load_dataset

DATA_ROOT = Path(__file__).resolve().parents[1] / "data" / "percepiano"


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
