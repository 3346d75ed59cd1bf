"""`pianolab --version`; `--tracker` and `--backend` are fixed choices shown in `--help` and refused otherwise."""

import subprocess
import sys

import pytest

import pianolab


def pianolab_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pianolab", *args], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def test_version():
    ran = pianolab_cli("--version")
    assert ran.returncode == 0 and ran.stdout.strip() == f"pianolab {pianolab.__version__}"


def test_choices_are_the_registries_names():
    from pianolab.ab import backends, ray_backend  # noqa: F401 - they register the backends
    from pianolab.ab.cells import BACKENDS
    from pianolab.commands.ab import Backend, Tracker
    from pianolab.track import SINKS

    assert sorted(t.value for t in Tracker) == SINKS.names()
    assert sorted(b.value for b in Backend) == BACKENDS.names()

    from pianolab.batch import BATCH_BACKENDS
    from pianolab.commands.predict import Backend as PredictBackend

    assert sorted(b.value for b in PredictBackend) == BATCH_BACKENDS.names()


@pytest.mark.parametrize("command", [("ab", "run"), ("ab", "report")])
def test_help_lists_the_tracker_choices(command):
    ran = pianolab_cli(*command, "--help")
    assert ran.returncode == 0 and "<mlflow|wandb|none>" in ran.stdout
    if command == ("ab", "run"):
        assert "<local|packed|threads|ray|ray_packed>" in ran.stdout


@pytest.mark.parametrize("option, value", [("--tracker", "mlfow"), ("--backend", "slurm")])
def test_unknown_choice_is_refused_before_any_work(tmp_path, option, value):
    exp = tmp_path / "missing.yaml"  # never read: the option is refused first
    ran = pianolab_cli("ab", "run", str(exp), option, value, "--runs", str(tmp_path / "runs"))
    assert ran.returncode == 2 and f"Invalid value for '{option}'" in ran.stderr and value in ran.stderr
    assert not (tmp_path / "runs").exists()
