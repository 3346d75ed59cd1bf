"""Bad experiment and run-config input as a user meets it: `pianolab ab run --dry-run` and `pianolab
train` as subprocesses on small YAML files. Every case prints exactly one `error:` line naming the file
and the key, exits with code 2, prints no traceback and writes nothing."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BASELINE = {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge"}, "track": {"tracker": "none"}}
AST = {"features": {"spectrogram": "log_mel"}, "model": {"name": "ast_ultra_tiny"}, "track": {"tracker": "none"}}
MLP = {"features": {"vector": ["symbolic"]}, "model": {"name": "symbolic_mlp"}, "track": {"tracker": "none"}}
EXP = {"name": "bad", "hypothesis": "h", "baseline": BASELINE, "variants": {"rf": {"model.name": "random_forest"}},
       "seeds": 2, "split": {"name": "excerpt", "folds": 3}}
MODELS = ("ast_ultra_tiny", "hybrid_concat", "symbolic_mlp", "ridge", "random_forest", "gradient_boosting",
          "extra_trees", "ensemble_rf_gb")

EXPERIMENTS = [
    ({"seeds": "three"}, "seeds: must be an integer, got 'three'"),
    ({"seeds": 0}, "seeds: must be >= 1"),
    ({"seeds": -2}, "seeds: must be >= 1"),
    ({"rope": "small"}, "rope: must be a number, got 'small'"),
    ({"rope": -0.01}, "rope: must be >= 0"),
    ({"alpha": 7}, "alpha: must be > 0 and < 1, got 7"),
    ({"split": {"name": "excerpt", "folds": 1}}, "split.folds: must be >= 2, got 1"),
    ({"budget": {"epochs": -5}}, "budget.epochs: must be >= 1, got -5"),
    ({"early_stop": {"min_seeds": 3}}, "early_stop.min_seeds: must be >= 1 and <= 2, got 3"),
    ({"baseline": "missing.yaml"}, "baseline: cannot read"),
    ({"baseline": {**MLP, "train": {"epochs": -5}}}, "train.epochs: must be >= 1, got -5"),
    ({"variants": {"weak": {"model.params.alpha": -1}}}, "model.params: The 'alpha' parameter of Ridge"),
    ({"variants": {"v": {"model.name": "resnet"}}}, "model.name: unknown name 'resnet'; valid: "),
    ({"variants": {"v": {"features.vector": ["chroma"]}}}, "features.vector: unknown name 'chroma'; valid: "),
    ({"split": {"name": "by_moon"}}, "split.name: unknown split 'by_moon'; valid: "),
    ({"name": "../x"}, "experiment name '../x': a name may use only"),
    ({"variants": {"../../evil": {"model.name": "random_forest"}}}, "variant '../../evil': a name may use only"),
    ({"variants": {"two": {"model": {"name": "random_forest", "params": {"n_estimators": 10}}}}},
     "changes 2 factors (model.name, model.params.n_estimators)"),
    ({"variants": {"same": {"model": {"name": "ridge"}}}}, "variant 'same' changes nothing"),
    ({"variants": {"v": {"optim.lr": 0.1}}}, "optim.lr: has no effect: model 'ridge' is a scikit-learn"),
    ({"variants": {"v": {"features.spectrogram": "log_mel"}}}, "features.spectrogram: has no effect"),
    ({"baseline": MLP, "variants": {"v": {"regularize.cutmix_prob": 0.5}}}, "regularize.cutmix_prob: has no effect"),
    ({"baseline": AST, "variants": {"v": {"augment.preset": "light"}}},
     "augment.preset: has no effect: its time_stretch_range/pitch_shift_range"),
    ({"variants": ["rf"]}, "variants: must map names to overrides"),
]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIANOLAB_RUNS": str(cwd / "runs"), "PIANOLAB_CACHE": str(cwd / "cache")}
    code = "from pianolab.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _one_error(proc: subprocess.CompletedProcess, path: Path, message: str) -> None:
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    assert len(errors) == 1, out
    assert errors[0].startswith(f"error: {path}") and message in errors[0], errors[0]


@pytest.mark.parametrize("change, message", EXPERIMENTS, ids=[m.split(":")[0][:30] for _, m in EXPERIMENTS])
def test_experiment_bad_input_is_one_line(tmp_path, change, message):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**EXP, **change}))
    proc = _cli("ab", "run", str(path), "--dry-run", "--runs", str(tmp_path / "runs"), cwd=tmp_path)
    _one_error(proc, path, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]  # nothing written, no runs folder


def test_unknown_model_lists_every_valid_name(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**EXP, "variants": {"v": {"model.name": "resnet"}}}))
    proc = _cli("ab", "run", str(path), "--dry-run", cwd=tmp_path)
    _one_error(proc, path, "(variant v): model.name: unknown name 'resnet'")
    valid = proc.stderr.split("valid: ")[1].strip().split(", ")
    assert set(MODELS) <= set(valid)


def test_yaml_syntax_error_is_one_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: [unclosed\n")
    _one_error(_cli("ab", "run", str(path), "--dry-run", cwd=tmp_path), path, "cannot read experiment")


TRAIN = [
    ({"train": {"epochs": -5}}, (), "train.epochs: must be >= 1, got -5"),
    ({"data": {"folds": 1}}, (), "data.folds: must be >= 2, got 1"),
    ({}, ("--seed", "-1"), "train.seed: must be >= 0, got -1"),
    ({"model": {"name": "ridge", "params": {"alpha": -1}}}, (), "model.params: The 'alpha' parameter of Ridge"),
    ({"model": {"name": "ridge"}, "optim": {"lr": 0.01}}, (), "optim.lr: has no effect"),
    ({"model": {"name": "symbolic_mlp"}, "augment": {"preset": "heavy"}}, (), "augment.preset: has no effect"),
    ({"model": {"name": "forest"}}, (), "model.name: unknown name 'forest'; valid: "),
    ({"regularize": {"mixup_prob": 1.5}}, (), "regularize.mixup_prob: must be >= 0 and <= 1, got 1.5"),
]


@pytest.mark.parametrize("change, args, message", TRAIN, ids=[m.split(":")[0] for _, _, m in TRAIN])
def test_train_bad_config_is_one_line(tmp_path, change, args, message):
    path = tmp_path / "run.yaml"
    cfg = {"features": {"vector": ["symbolic"]}, "model": {"name": "random_forest"}, "track": {"tracker": "none"}}
    path.write_text(yaml.safe_dump({**cfg, **change}))
    proc = _cli("train", str(path), "--out", str(tmp_path / "out"), *args, cwd=tmp_path)
    _one_error(proc, path, message)
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
