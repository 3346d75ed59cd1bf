"""`pianolab ui`: the MLflow UI over a store made by a real (tiny) experiment, queried through its REST
API on a free loopback port; `ab run` keeps MLflow's INFO lines out; a missing web server is one line."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

TINY = {"name": "tiny_ui", "hypothesis": "Weaker ridge regularisation fits the symbolic features better.",
        "baseline": {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge"}},
        "variants": {"alpha_small": {"model.params.alpha": 0.1}},
        "seeds": 2, "split": {"name": "excerpt", "folds": 2}}
REPORT = {"report.md", "report.html", "forest.png", "dimensions.png", "cells_power.png"}


def pianolab(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pianolab", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port: int, path: str, body: dict | None = None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST" if body is not None else "GET",
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        data = r.read()
        return json.loads(data) if r.headers.get_content_type() == "application/json" else data


def wait_up(proc: subprocess.Popen, port: int, limit: float = 180) -> None:
    t0 = time.time()
    while time.time() - t0 < limit:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if call(port, "/health") is not None:
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"UI not up after {limit:.0f}s")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A runs root made by `pianolab ab run` (tracker mlflow, the default): 8 ridge cells and a report."""
    tmp = tmp_path_factory.mktemp("ui")
    (tmp / "exp.yaml").write_text(yaml.safe_dump(TINY))
    ran = pianolab("ab", "run", tmp / "exp.yaml", "--runs", tmp / "runs")
    assert ran.returncode == 0, ran.stderr[-3000:]
    out = ran.stdout + ran.stderr
    assert "alpha_small" in ran.stdout and "report:" in ran.stdout
    assert "INFO" not in out and "alembic" not in out, out  # MLflow's and Alembic's INFO lines kept out
    (tmp / "ab_run.txt").write_text(ran.stdout)
    return tmp / "runs"


def test_ui_serves_experiment_verdicts_children_and_report(store):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pianolab", "ui", "--port", str(port), "--runs", str(store)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_up(proc, port)
        exps = call(port, "/api/2.0/mlflow/experiments/search", {"max_results": 100})["experiments"]
        exp_id = next(e["experiment_id"] for e in exps if e["name"] == "tiny_ui")
        runs = call(port, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id], "max_results": 1000})["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        parents = [(r, t) for r, t in zip(runs, tags, strict=True) if t.get("kind") == "experiment"]
        assert len(parents) == 1
        parent, ptags = parents[0]
        pid = parent["info"]["run_id"]
        # the verdict, as the terminal table printed it, as a tag; its numbers as metrics
        table = next(x for x in (store.parent / "ab_run.txt").read_text().splitlines() if x.startswith("alpha_small"))
        assert table.endswith(ptags["alpha_small.label"]) and ptags["alpha_small.reason"]
        assert ptags["mlflow.note.content"] == TINY["hypothesis"]
        metrics = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
        assert {"alpha_small.delta", "alpha_small.ci_low", "alpha_small.ci_high", "alpha_small.p_adjusted",
                "baseline.score_mean", "alpha_small.score_mean"} <= set(metrics)
        assert metrics["alpha_small.ci_low"] <= metrics["alpha_small.delta"] <= metrics["alpha_small.ci_high"]
        assert metrics["alpha_small.delta"] == pytest.approx(
            metrics["alpha_small.score_mean"] - metrics["baseline.score_mean"], abs=1e-9)
        # the 8 cells are its children, each FINISHED once
        children = [(r, t) for r, t in zip(runs, tags, strict=True) if t.get("kind") == "cell"]
        assert len(children) == 8 and all(t["mlflow.parentRunId"] == pid for _, t in children)
        assert len({t["run_folder"] for _, t in children}) == 8
        assert all(r["info"]["status"] == "FINISHED" for r, _ in children)
        # the report files and plots as artifacts, downloadable through the UI
        files = call(port, f"/api/2.0/mlflow/artifacts/list?run_id={pid}&path=report")["files"]
        assert {f["path"].split("/")[-1] for f in files} >= REPORT
        html = call(port, f"/get-artifact?path=report/report.html&run_uuid={pid}")
        assert html == (store / "tiny_ui" / "report" / "report.html").read_bytes()
        # load: 200 requests, 32 at a time, all answered in full, and the server still up
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda _: call(port, "/api/2.0/mlflow/runs/search",
                                                   {"experiment_ids": [exp_id]}), range(200)))
        assert all(len(a["runs"]) == 9 for a in answers)
        assert proc.poll() is None and call(port, "/health") is not None
        proc.terminate()  # stopping `pianolab ui` stops the server's workers and job runner too
        proc.wait(timeout=60)
        t0 = time.time()
        while time.time() - t0 < 60 and group_alive(proc.pid):
            time.sleep(0.5)
        assert not group_alive(proc.pid)
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_ab_report_remirrors_and_keeps_one_parent(store):
    """`ab report` again: no duplicate cells, still one parent run (the new one), children re-pointed."""
    from mlflow.tracking import MlflowClient

    tmp = store.parent
    ran = pianolab("ab", "report", tmp / "exp.yaml", "--runs", store)
    assert ran.returncode == 0 and "INFO" not in ran.stdout + ran.stderr, ran.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny_ui").experiment_id])
    parents = [r for r in runs if r.data.tags["kind"] == "experiment"]
    cells = [r for r in runs if r.data.tags["kind"] == "cell"]
    assert len(parents) == 1 and len(cells) == 8
    assert {r.data.tags["mlflow.parentRunId"] for r in cells} == {parents[0].info.run_id}


@pytest.mark.parametrize("hidden, message", [
    ("mlflow", "error: mlflow is not installed: pip install"),
    ("flask", "error: mlflow's web server is not installed (mlflow-skinny has none)"),
])
def test_ui_without_mlflow_is_one_line_exit_2(tmp_path, hidden, message):
    code = (f"import sys; sys.modules[{hidden!r}] = None; from pianolab.cli import main; "
            f"sys.argv = ['pianolab', 'ui', '--port', '{free_port()}', '--runs', {str(tmp_path)!r}]; main()")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 2 and ran.stderr.strip().startswith(message), ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1 and not (tmp_path / "mlflow.db").exists()


def test_ui_port_taken_is_one_line_exit_2(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        ran = pianolab("ui", "--port", s.getsockname()[1], "--runs", tmp_path, timeout=120)
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert "cannot listen there" in ran.stderr
