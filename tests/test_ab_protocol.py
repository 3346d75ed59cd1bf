"""The A/B protocol end to end on real data with fast ridge models: early stopping under a
lower-is-better metric, stale cells, the recorded environment, and --jobs workers dying with their runner."""

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
from pianolab.ab.cells import RunOptions
from pianolab.ab.collect import collect, environment_differences
from pianolab.ab.runner import plan, run_experiment
from pianolab.ab.spec import load_experiment
from pianolab.data.percepiano import MEAN_LABELS
from pianolab.errors import PianolabError

RIDGE = {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge"}, "track": {"tracker": "none"}}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(*args: str, root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIANOLAB_RUNS": str(root)}
    return subprocess.run([sys.executable, "-m", "pianolab", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_early_stop_under_mse_stops_the_worse_variant_and_everything_still_reports(tmp_path):
    # under mse (lower is better) ridge alpha 1e8 predicts ~the training mean: mse ~0.016 against ~0.009
    exp_path = write(tmp_path, {
        "name": "stop_mse", "hypothesis": "Less shrinkage fits better.",
        "baseline": {**RIDGE, "model": {"name": "ridge", "params": {"alpha": 1000.0}}},
        "variants": {"awful": {"model.params.alpha": 1.0e8}, "close": {"model.params.alpha": 1.0}},
        "seeds": 3, "split": {"name": "excerpt", "folds": 2}, "primary_metric": "mse", "rope": 0.002,
        "early_stop": {"min_seeds": 2}})
    root = tmp_path / "runs"
    run = cli("ab", "run", str(exp_path), "--tracker", "none", "--no-report", "--threads", "1", root=root)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "early stop: awful after 2 seeds" in run.stdout and "early stop: close" not in run.stdout
    assert run.stdout.count(": ran") == 2 * 3 * 2 + 2 * 2  # awful's third seed never ran
    exp = load_experiment(exp_path)
    res = collect(exp, root)
    assert res.variants == ["baseline", "close"] and set(res.stopped) == {"awful"} and res.scores.shape == (2, 3, 2)
    stopped = res.stopped["awful"]
    assert stopped.seeds == 2 and stopped.scores.shape == (2, 2) and (stopped.diffs < -0.002).all()
    assert stopped.decision.stop and stopped.decision.upper_bound < -0.002
    assert {track.read_meta(f)["threads"] for f in res.folders.values()} == {1}  # --threads pinned
    power = cli("ab", "power", str(exp_path), "--json", root=root)
    assert power.returncode == 0, power.stderr
    assert [r["variant"] for r in json.loads(power.stdout)] == ["close"]  # a stopped variant needs no plan
    report = cli("ab", "report", str(exp_path), root=root)
    assert report.returncode == 0 and "run not finished" not in report.stderr, report.stderr
    assert "stopped early" in report.stdout
    # the rule is replayed from the cells: a rerun runs nothing and stops the same variant
    again = cli("ab", "run", str(exp_path), "--tracker", "none", "--no-report", root=root)
    assert again.returncode == 0 and ": ran" not in again.stdout and "early stop: awful" in again.stdout


@pytest.fixture
def own_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("PIANOLAB_SPLITS", str(tmp_path / "splits"))
    return tmp_path / "splits"


def test_stale_cells_are_rerun_and_never_mixed_into_a_verdict(tmp_path, data_copy, own_splits, capsys):
    exp = load_experiment(write(tmp_path, {
        "name": "stale", "hypothesis": "Weaker shrinkage fits better.",
        "baseline": {**RIDGE, "data": {"root": str(data_copy)}}, "variants": {"small": {"model.params.alpha": 0.1}},
        "seeds": 1, "split": {"name": "excerpt", "folds": 3}}))
    root, lines = tmp_path / "runs", []
    run_experiment(exp, root=root, tracker="none", echo=lines.append)
    old = collect(exp, root)
    old_version = track.read_meta(next(iter(old.folders.values())))["data_version"]
    # a corrected label: the data version changes (the user remakes the split file for the new data)
    labels = json.loads((data_copy / MEAN_LABELS).read_text())
    first = sorted(labels)[0]
    labels[first][0] = round(labels[first][0] * 0.9, 6)
    (data_copy / MEAN_LABELS).write_text(json.dumps(labels))
    for f in own_splits.glob("*.json"):
        f.unlink()
    with pytest.raises(PianolabError, match="stale cell .*data version .* != current"):
        collect(exp, root)
    assert plan(exp, root)["done"] == 0  # --dry-run counts stale cells as left
    lines.clear()
    capsys.readouterr()
    run_experiment(exp, root=root, tracker="none", echo=lines.append)
    stale = [x for x in capsys.readouterr().out.splitlines() if x.startswith("stale: ")]  # the cell's process prints it
    assert len(stale) == 6 and all(f"data version {old_version} != current" in x for x in stale)
    assert sum(": ran" in x for x in lines) == 6
    new = collect(exp, root)
    versions = {track.read_meta(f)["data_version"] for f in new.folders.values()}
    assert len(versions) == 1 and old_version not in versions
    # a feature kind whose version moved makes its cells stale too, and only those
    folder = new.folders[("small", 0, 1)]
    meta = track.read_meta(folder)
    track.write_json(folder / "meta.json", {**meta, "feature_versions": {"symbolic": 0}})
    lines.clear()
    run_experiment(exp, root=root, tracker="none", echo=lines.append)
    assert [x for x in capsys.readouterr().out.splitlines() if x.startswith("stale: ")] == [
        f"stale: {folder}: feature versions {{'symbolic': 0}} != current {meta['feature_versions']}; rerunning"]
    assert sum(": ran" in x for x in lines) == 1 and sum(": skipped" in x for x in lines) == 5


def test_threads_are_pinned_recorded_and_a_mix_is_flagged(tmp_path, own_splits):
    exp = load_experiment(write(tmp_path, {
        "name": "threads", "hypothesis": "Weaker shrinkage fits better.", "baseline": RIDGE,
        "variants": {"small": {"model.params.alpha": 0.1}}, "seeds": 1, "split": {"name": "excerpt", "folds": 2}}))
    root = tmp_path / "runs"
    run_experiment(exp, root=root, tracker="none", echo=lambda s: None)  # default: all cores for one job
    res = collect(exp, root)
    metas = [track.read_meta(f) for f in res.folders.values()]
    cores = len(os.sched_getaffinity(0))
    assert {m["threads"] for m in metas} == {cores} == {RunOptions(jobs=1).cell_threads} and res.environment == []
    assert RunOptions(jobs=2).cell_threads == max(1, cores // 2)
    folder = res.folders[("small", 0, 0)]
    track.write_json(folder / "meta.json", {**metas[-1], "threads": cores + 1, "gpu": "NVIDIA H200"})
    assert collect(exp, root).environment == ["gpu: none (3 cells), NVIDIA H200 (1 cells)",
                                              f"threads: {cores} (3 cells), {cores + 1} (1 cells)"]
    assert environment_differences([{"packages": {"torch": "2.13.0"}}, {"packages": {"torch": "2.12.0"}}]) == [
        "torch: 2.13.0 (1 cells), 2.12.0 (1 cells)"]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and "spawn_main" in (stat.parent / "cmdline").read_bytes().decode(errors="replace"):
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_jobs_workers_exit_when_their_runner_is_killed(tmp_path):
    exp_path = write(tmp_path, {
        "name": "orphans", "hypothesis": "A long training keeps the workers busy.",
        "baseline": {"features": {"vector": ["symbolic"]}, "model": {"name": "symbolic_mlp"},
                     "train": {"epochs": 100000, "device": "cpu"}, "track": {"tracker": "none"}},
        "variants": {"wide": {"model.params.hidden": 64}}, "seeds": 1, "split": {"name": "excerpt", "folds": 2}})
    env = {**os.environ, "PIANOLAB_RUNS": str(tmp_path / "runs")}
    runner = subprocess.Popen([sys.executable, "-m", "pianolab", "ab", "run", str(exp_path), "--jobs", "2",
                               "--tracker", "none", "--no-report"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            workers = _children(runner.pid)
            busy = list((tmp_path / "runs").rglob("meta.json"))  # a cell has started training
            if len(workers) == 2 and busy:
                break
            time.sleep(0.5)
        assert len(workers) == 2 and busy
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        deadline = time.time() + 5
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "orphaned workers still running"
    finally:
        runner.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
