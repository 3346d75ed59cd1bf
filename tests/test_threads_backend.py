"""The threads backend (cells as threads of one process, each on its own CUDA stream) gives every
cell its one-at-a-time result."""

import numpy as np
import pytest
import yaml
from test_packed import AST_EXP, EXP, _cells

from pianolab.ab.runner import run_experiment
from pianolab.ab.spec import load_experiment
from pianolab.errors import PianolabError

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop")


def _load(tmp_path, spec):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_experiment(path)


@pytest.mark.parametrize("spec", [EXP, AST_EXP], ids=["mlp_and_batchnorm", "ast_on_renders"])
def test_threads_agree_with_local_on_every_cell(tmp_path, spec):
    """Four cells at a time: seeded initialisation, keyed dropout, SpecAugment and early stopping
    must not leak between the threads."""
    exp = _load(tmp_path, spec)
    run_experiment(exp, root=tmp_path / "local", tracker="none", echo=lambda s: None)
    lines = []
    run_experiment(exp, root=tmp_path / "threads", tracker="none", echo=lines.append, backend="threads", jobs=4)
    assert sum(": ran" in x for x in lines) == len(exp.cells())
    local, threaded = _cells(exp, tmp_path / "local"), _cells(exp, tmp_path / "threads")
    for key, frame in local.items():
        pred_cols = [c for c in frame.columns if c.startswith("pred_")]
        assert (frame["stem"] == threaded[key]["stem"]).all()
        assert np.abs(frame[pred_cols].to_numpy() - threaded[key][pred_cols].to_numpy()).max() < 1e-5, key
    lines.clear()
    run_experiment(exp, root=tmp_path / "threads", tracker="none", echo=lines.append, backend="threads", jobs=4)
    assert all(": skipped" in x for x in lines if ": " in x and "/" in x)


def test_threads_refuse_process_wide_settings(tmp_path):
    exp = _load(tmp_path, {**EXP, "baseline": {**EXP["baseline"], "train": {"epochs": 2, "compile": True}}})
    with pytest.raises(PianolabError, match="backend 'threads' cannot run 'baseline'"):
        run_experiment(exp, root=tmp_path / "runs", tracker="none", echo=lambda s: None, backend="threads")
