"""The A/B engine on real data with fast classic models: spec validation, skip, resume, locks, report."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pianolab import track
from pianolab.ab.collect import collect
from pianolab.ab.report import write_report
from pianolab.ab.runner import run_experiment
from pianolab.ab.spec import load_experiment
from pianolab.errors import PianolabError

TINY = {
    "name": "tiny",
    "hypothesis": "Weaker ridge regularisation fits the symbolic features better.",
    "baseline": {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge"},
                 "track": {"tracker": "none"}},
    "variants": {"alpha_small": {"model.params.alpha": 0.1}},
    "seeds": 2,
    "split": {"name": "excerpt", "folds": 3},
}


def write(tmp_path: Path, data: dict, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("change, message", [
    ({"hypothesis": None}, "missing required key 'hypothesis'"),
    ({"seedz": 3}, "unknown key 'seedz'"),
    ({"variants": {"two": {"model.name": "random_forest", "optim.lr": 0.1}}}, "changes 2 factors"),
    ({"variants": {"v": {"model.nmae": "x"}}}, "unknown key 'model.nmae'"),
    ({"variants": {"v": {"train.seed": 3}}}, "sets train.seed"),
    ({"primary_metric": "accuracy"}, "unknown metric 'accuracy'"),
    ({"split": {"name": "excerpt", "k": 3}}, "unknown key split.'k'"),
])
def test_spec_validation(tmp_path, change, message):
    data = {**TINY, **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(PianolabError, match=message):
        load_experiment(write(tmp_path, data))


def test_multi_factor_needs_flag_and_reason(tmp_path):
    data = {**TINY, "variants": {"two": {"model.name": "random_forest", "features.top_k": 20,
                                         "multi_factor": True, "reason": "RF needs fewer features"}}}
    exp = load_experiment(write(tmp_path, data))
    cfg = exp.config("two", seed=1, fold=2)
    assert (cfg.model.name, cfg.features.top_k, cfg.train.seed, cfg.data.fold, cfg.data.repeats) == \
        ("random_forest", 20, 1, 2, 2)


def test_run_skip_report_reproducible_and_mlflow(tmp_path):
    data = {**TINY, "baseline": {**TINY["baseline"], "track": {"tracker": "mlflow"}}}
    exp = load_experiment(write(tmp_path, data))
    root = tmp_path / "runs"
    lines = []
    run_experiment(exp, root=root, tracker="mlflow", echo=lines.append)
    assert sum(": ran" in x for x in lines) == 12
    first = write_report(exp, root, echo=lambda s: None)
    md1 = first["markdown"].read_text()
    lines.clear()
    run_experiment(exp, root=root, tracker="mlflow", echo=lines.append)
    assert all(": skipped" in x for x in lines) and len(lines) == 12
    assert write_report(exp, root, echo=lambda s: None)["markdown"].read_text() == md1
    assert "Verdicts" in md1 and "alpha_small" in md1 and first["html"].read_text().count("<img") >= 3
    res = collect(exp, root)
    assert res.scores.shape == (2, 2, 3) and (res.scores > 0.4).all()

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{(root / 'mlflow.db').resolve()}")
    found = mlflow.search_runs(experiment_names=["tiny"])
    assert len(found) == 12 and set(found["tags.variant"]) == {"baseline", "alpha_small"}


def test_refuses_cells_with_different_split(tmp_path):
    exp = load_experiment(write(tmp_path, TINY))
    root = tmp_path / "runs"
    run_experiment(exp, root=root, tracker="none", echo=lambda s: None)
    folder = track.run_dir(exp.config("alpha_small", 0, 0), exp.name, "alpha_small", root)
    meta = json.loads((folder / "meta.json").read_text())
    meta["split_digest"] = "something-else"
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(PianolabError, match=r"stale cell \(split digest something-else != current"):
        collect(exp, root)


def _runner(exp_path: Path, root: Path) -> subprocess.Popen:
    env = {**os.environ, "PIANOLAB_RUNS": str(root)}
    code = "from pianolab.cli import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, "ab", "run", str(exp_path), "--tracker", "none",
                             "--no-report"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _predictions(exp, root):
    res = collect(exp, root)
    return res.scores


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    exp_path = write(tmp_path, TINY)
    exp = load_experiment(exp_path)
    killed = tmp_path / "killed"
    proc = _runner(exp_path, killed)
    deadline = time.time() + 120
    while time.time() < deadline:
        done = [c for c in exp.cells() if track.is_done(track.run_dir(c.config, exp.name, c.variant, killed))]
        if len(done) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = [c for c in exp.cells() if track.is_done(track.run_dir(c.config, exp.name, c.variant, killed))]
    assert 3 <= len(kept) < 12
    out = _runner(exp_path, killed).communicate()[0]
    assert out.count(": skipped") >= len(kept) and out.count(": ran") == 12 - out.count(": skipped")
    clean = tmp_path / "clean"
    run_experiment(exp, root=clean, tracker="none", echo=lambda s: None)
    assert (_predictions(exp, killed) == _predictions(exp, clean)).all()


def test_two_runners_never_duplicate_a_cell(tmp_path):
    exp_path = write(tmp_path, TINY)
    root = tmp_path / "runs"
    a, b = _runner(exp_path, root), _runner(exp_path, root)
    out_a, out_b = a.communicate()[0], b.communicate()[0]
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    assert out_a.count(": ran") + out_b.count(": ran") == 12
    assert collect(load_experiment(exp_path), root).scores.shape == (2, 2, 3)


def test_wall_time_budget_is_imposed(tmp_path):
    exp = load_experiment(write(tmp_path, {**TINY, "budget": {"epochs": 7, "wall_time_s": 30}}))
    cfg = exp.config("alpha_small", seed=1, fold=0)
    assert (cfg.train.epochs, cfg.train.max_seconds) == (7, 30.0)


def test_unknown_backend_fails_before_any_work(tmp_path):
    exp = load_experiment(write(tmp_path, TINY))
    with pytest.raises(PianolabError, match="unknown backend 'nope'; valid: local, packed, ray"):
        run_experiment(exp, root=tmp_path / "runs", tracker="none", echo=lambda s: None, backend="nope")
    assert not (tmp_path / "runs").exists()


def _thread_settings() -> tuple[str | None, str | None]:
    return os.environ.get("OMP_NUM_THREADS"), os.environ.get("MKL_NUM_THREADS")


def test_concurrent_cells_share_the_cores_between_their_thread_pools(monkeypatch):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from pianolab.ab.backends import worker_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # set by the user: kept
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))
    with worker_threads(2), ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        assert pool.submit(_thread_settings).result() == (share, "3")
    assert _thread_settings() == (None, "3")
