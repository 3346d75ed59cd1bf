"""The Ray backend on a local Ray instance (CPU): the same cells, numbers and verdicts as the local backend."""

import shutil
import sys

import numpy as np
import pytest
import yaml
from test_ab import TINY as AB_TINY
from test_packed import EXP as PACKED_EXP

from pianolab import track
from pianolab.ab.collect import collect
from pianolab.ab.ray_backend import run_on_ray
from pianolab.ab.report import analyse, terminal_table
from pianolab.ab.runner import RunOptions, cell_dir, run_experiment
from pianolab.ab.spec import load_experiment
from pianolab.errors import PianolabError

TINY = {**AB_TINY, "name": "tiny_ray"}


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def runs(ray, tmp_path_factory):
    """The experiment run by the local backend and by the Ray backend (a local instance, 2 CPUs)."""
    tmp = tmp_path_factory.mktemp("ray")
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump(TINY))
    exp = load_experiment(path)
    lines = []
    run_experiment(exp, root=tmp / "local", tracker="none", echo=lambda s: None)
    run_experiment(exp, root=tmp / "ray", tracker="none", echo=lines.append, backend="ray", jobs=2)
    return exp, tmp / "local", tmp / "ray", lines


def _cells(exp, root):
    """{(variant, seed, fold): (summary, predictions)} read from the run folders."""
    out = {}
    for c in exp.cells():
        folder = cell_dir(exp, c, root)
        _, pred, true = track.read_predictions(folder / "predictions.parquet")
        out[c.variant, c.seed, c.fold] = (track.read_meta(folder)["summary"], pred, true)
    return out


def test_same_cells_numbers_and_verdicts_as_local(runs):
    exp, local, on_ray, lines = runs
    assert sum(": ran" in x for x in lines) == 12
    a, b = _cells(exp, local), _cells(exp, on_ray)
    assert a.keys() == b.keys() and len(a) == 12
    for key, (summary, pred, true) in a.items():
        assert b[key][0] == summary, key
        assert np.array_equal(b[key][1], pred) and np.array_equal(b[key][2], true), key
    ra, rb = collect(exp, local), collect(exp, on_ray)
    assert np.array_equal(ra.scores, rb.scores) and np.array_equal(ra.per_dim, rb.per_dim)
    va, vb = analyse(exp, ra), analyse(exp, rb)
    assert va["variants"]["alpha_small"]["verdict"] == vb["variants"]["alpha_small"]["verdict"]
    assert terminal_table(va) == terminal_table(vb)


def test_resume_skips_finished_and_reruns_missing(runs):
    exp, local, on_ray, _ = runs
    lines = []
    run_experiment(exp, root=on_ray, tracker="none", echo=lines.append, backend="ray", jobs=2)
    assert len(lines) == 12 and all(": skipped" in x for x in lines)
    lost = exp.cells()[5]
    shutil.rmtree(cell_dir(exp, lost, on_ray))
    lines.clear()
    run_experiment(exp, root=on_ray, tracker="none", echo=lines.append, backend="ray", jobs=2)
    assert sum(": ran" in x for x in lines) == 1 and sum(": skipped" in x for x in lines) == 11
    assert np.array_equal(collect(exp, on_ray).scores, collect(exp, local).scores)


@pytest.mark.parametrize("opts, message", [
    (RunOptions(backend="ray", gpus_per_run=1.5), "above 1 it must be a whole number"),
    (RunOptions(backend="ray", cpus_per_run=-1), "must be >= 0"),
])
def test_bad_resource_requests(opts, message):
    with pytest.raises(PianolabError, match=message):
        next(run_on_ray(None, [], opts))


def test_missing_ray_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(PianolabError, match=r"pip install 'pianolab\[ray\]'"):
        next(run_on_ray(None, [], RunOptions(backend="ray")))


def test_ray_packed_gives_the_packed_backends_cells(ray, tmp_path):
    """One Ray task per variant running the packed backend: every cell as `packed` in-process makes it,
    within float tolerance (Ray's workers run one BLAS thread). The BatchNorm variant cannot be packed
    and runs one cell at a time inside its task."""
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**PACKED_EXP, "name": "tiny_ray_packed"}))
    exp = load_experiment(path)
    lines = []
    run_experiment(exp, root=tmp_path / "packed", tracker="none", echo=lambda s: None, backend="packed")
    run_experiment(exp, root=tmp_path / "ray", tracker="none", echo=lines.append, backend="ray_packed", jobs=2)
    assert sum(": ran" in x for x in lines) == len(exp.cells()) == 12
    a, b = _cells(exp, tmp_path / "packed"), _cells(exp, tmp_path / "ray")
    for key, (summary, pred, _) in a.items():
        assert np.abs(b[key][1] - pred).max() < 1e-4, key
        assert b[key][0] == pytest.approx(summary, abs=1e-4), key
    folder = cell_dir(exp, exp.cells()[0], tmp_path / "ray")
    assert track.read_metrics(folder)[-1]["packed"] == 6  # the baseline's 2 seeds x 3 folds as one model
