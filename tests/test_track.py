"""The tracker mirrors survive faults: kill -9 during the MLflow store's first set-up and during the
mirror, two runners starting together; W&B (offline) gets scikit-learn metrics, predictions and report."""

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import yaml

from pianolab import track
from pianolab.ab.cells import cell_dir
from pianolab.ab.runner import run_experiment
from pianolab.ab.spec import load_experiment

EXP = {"name": "faults", "hypothesis": "Weaker ridge regularisation fits the symbolic features better.",
       "baseline": {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge"}},
       "variants": {"alpha_small": {"model.params.alpha": 0.1}},
       "seeds": 1, "split": {"name": "excerpt", "folds": 2}}
ENV = {**os.environ, "WANDB_MODE": "offline"}


def pianolab_code(code: str, *args) -> subprocess.Popen:
    """`pianolab ARGS` in a subprocess after `code` (e.g. a fault injected)."""
    main = f"from pianolab.cli import main; sys.argv = ['pianolab', *{list(map(str, args))!r}]; main()"
    return subprocess.Popen([sys.executable, "-c", f"import sys\n{code}\n{main}"], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def store_runs(root: Path, name: str = "faults", all_: bool = False) -> list:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL if all_ else ViewType.ACTIVE_ONLY,
                              max_results=1000)


def assert_mirrored(exp, root: Path) -> None:
    """Every finished cell has exactly one active MLflow run, FINISHED; nothing active is RUNNING or FAILED."""
    runs = store_runs(root, exp.name)
    folders = sorted(str(cell_dir(exp, c, root)) for c in exp.cells())
    assert all(track.is_done(Path(f)) for f in folders)
    assert sorted(r.data.tags["run_folder"] for r in runs) == folders
    assert {r.info.status for r in runs} == {"FINISHED"}


def tiny(tmp_path: Path) -> tuple[Path, object]:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(EXP))
    return path, load_experiment(path)


def test_kill_during_setup_and_mirror_then_rerun_repairs_the_store(tmp_path):
    path, exp = tiny(tmp_path)
    root = tmp_path / "runs"
    run_experiment(exp, root=root, tracker="none", echo=lambda s: None)  # 4 finished cells, no store yet

    # kill -9 during the store's first set-up (tables and migrations)
    setup = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; "
                              "from pianolab import mlflow_store; p = Path(sys.argv[1]); "
                              "mlflow_store.store(f'sqlite:///{p / \"mlflow.db\"}', p / 'mlartifacts').__enter__()",
                              str(root)])
    while not list(root.glob("mlflow.db*.tmp")) and setup.poll() is None:
        time.sleep(0.005)
    setup.send_signal(signal.SIGKILL)
    assert setup.wait() == -signal.SIGKILL and not (root / "mlflow.db").exists()

    # kill -9 a runner in the middle of mirroring: after the 2nd cell's run is logged, before it is FINISHED
    fault = textwrap.dedent("""
        import os, signal
        from mlflow.tracking import MlflowClient
        n, finish = [], MlflowClient.set_terminated
        def die(self, *a, **k):
            n.append(1)
            if len(n) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return finish(self, *a, **k)
        MlflowClient.set_terminated = die""")
    runner = pianolab_code(fault, "ab", "run", path, "--runs", root, "--no-report")
    assert runner.wait(timeout=600) == -signal.SIGKILL, runner.stdout.read()
    assert sorted(r.info.status for r in store_runs(root)) == ["FINISHED", "RUNNING"]  # 2 cells missing

    # the next runner repairs it: the interrupted run marked FAILED (and replaced), the missing cells mirrored
    rerun = subprocess.run([sys.executable, "-m", "pianolab", "ab", "run", str(path), "--runs", str(root),
                            "--no-report"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_mirrored(exp, root)
    gone = [r for r in store_runs(root, all_=True) if r.info.lifecycle_stage == "deleted"]
    assert [r.info.status for r in gone] == ["FAILED"]
    assert not list(root.glob("mlflow.db*.tmp"))


def test_two_runners_starting_together_lose_no_run(tmp_path):
    path, exp = tiny(tmp_path)
    root = tmp_path / "runs"
    runners = [pianolab_code("", "ab", "run", path, "--runs", root, "--no-report") for _ in range(2)]
    outs = [r.communicate(timeout=600)[0] for r in runners]
    assert [r.returncode for r in runners] == [0, 0], outs
    assert sum(o.count(": ran") for o in outs) == 4  # each cell run once, by one of them
    assert not any("INFO" in o for o in outs), outs
    assert_mirrored(exp, root)
    assert len(store_runs(root, all_=True)) == 4


def wandb_records(run_dir: Path):
    """The records of an offline W&B run (its .wandb file: a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    pos, buf, block = 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # a whole record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def test_wandb_offline_gets_sklearn_metrics_predictions_and_report(tmp_path):
    path, exp = tiny(tmp_path)
    root = tmp_path / "runs"
    ran = subprocess.run([sys.executable, "-m", "pianolab", "ab", "run", str(path), "--runs", str(root),
                          "--tracker", "wandb"], capture_output=True, text=True, timeout=600, env=ENV)
    assert ran.returncode == 0, ran.stderr[-3000:]
    runs = {}
    for d in sorted((root / "wandb").glob("offline-run-*")):
        recs = list(wandb_records(d))
        name = next(r.run.display_name for r in recs if r.WhichOneof("record_type") == "run")
        summary = {u.key: float(u.value_json) for r in recs if r.WhichOneof("record_type") == "summary"
                   for u in r.summary.update if u.key and not u.key.startswith("_") and "." not in u.key}
        arts = {(r.artifact.name, r.artifact.type): sorted(m.path for m in r.artifact.manifest.contents)
                for r in recs if r.WhichOneof("record_type") == "artifact"}
        keys = {u.key for r in recs if r.WhichOneof("record_type") == "summary" for u in r.summary.update}
        runs[name] = summary, arts, keys
    assert len(runs) == 5  # 4 cells (ridge: no epochs) and the report
    for c in exp.cells():
        folder = cell_dir(exp, c, root)
        summary, arts, _ = runs[f"{c.variant}/{folder.name}"]
        expected = track.read_meta(folder)["summary"]
        assert {k: summary[k] for k in ("pearson", "r2", "within_excerpt_pearson")} == \
            {k: expected[k] for k in ("pearson", "r2", "within_excerpt_pearson")}
        assert list(arts.values()) == [["predictions.parquet"]]
    _, arts, keys = runs["faults-report"]
    assert {"report.md", "report.html", "forest.png"} <= set(arts[("faults-report", "report")])
    assert {"alpha_small.label", "alpha_small.delta", "alpha_small.p_adjusted"} <= keys
