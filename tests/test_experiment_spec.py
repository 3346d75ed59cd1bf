"""Experiment files: one factor whatever the spelling, the no-op rules, names that are not paths, and
every shipped experiment and config loading cleanly."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pianolab.ab.spec import load_experiment
from pianolab.config import config_from_dict, load_config
from pianolab.errors import PianolabError
from pianolab.presets import PRESETS
from pianolab.render.augment import draw_params
from pianolab.train.validate import NO_OPS, check_config, no_effect

ROOT = Path(__file__).resolve().parents[1]
BASELINE = {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge"}, "track": {"tracker": "none"}}
EXP = {"name": "spec", "hypothesis": "h", "baseline": BASELINE, "seeds": 2, "split": {"name": "excerpt", "folds": 3}}


def _load(tmp_path: Path, **change):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**EXP, **change}))
    return load_experiment(path)


@pytest.mark.parametrize("variant", [
    {"model": {"name": "random_forest", "params": {"n_estimators": 50}}},
    {"model.name": "random_forest", "model.params.n_estimators": 50},
    {"model": {"name": "random_forest"}, "model.params": {"n_estimators": 50}},
])
def test_one_factor_is_counted_on_the_resolved_config_whatever_the_spelling(tmp_path, variant):
    with pytest.raises(PianolabError, match=r"changes 2 factors \(model.name, model.params.n_estimators\)"):
        _load(tmp_path, variants={"rf": variant})
    exp = _load(tmp_path, variants={"rf": {**variant, "multi_factor": True, "reason": "a smaller forest"}})
    cfg = exp.config("rf", seed=1, fold=2)
    assert (cfg.model.name, cfg.model.params, cfg.features.vector) == ("random_forest", {"n_estimators": 50},
                                                                       ("symbolic",))


def test_nested_mapping_merges_into_the_baseline(tmp_path):
    """`{model: {params: ...}}` changes the params only: the baseline's model name stays (it used to
    replace the whole section, silently training the default model)."""
    exp = _load(tmp_path, baseline={**BASELINE, "model": {"name": "ridge", "params": {"alpha": 3.0}}},
                variants={"weak": {"model": {"params": {"alpha": 0.1}}}})
    cfg = exp.config("weak")
    assert cfg.model.name == "ridge" and cfg.model.params == {"alpha": 0.1}
    with pytest.raises(PianolabError, match="variant 'same' changes nothing"):
        _load(tmp_path, variants={"same": {"model": {"name": "ridge"}}})


def test_a_variant_with_another_model_does_not_inherit_the_baselines_params(tmp_path):
    """The baseline's `model.params` belong to its estimator (they used to be merged into the variant's
    model, which refused them or trained something else)."""
    exp = _load(tmp_path, baseline={**BASELINE, "model": {"name": "ridge", "params": {"alpha": 3.0}}},
                variants={"rf": {"model.name": "random_forest", "model.params.n_estimators": 50,
                                 "multi_factor": True, "reason": "another learner"},
                          "rf_defaults": {"model.name": "random_forest"}})
    assert exp.config("rf").model.params == {"n_estimators": 50}
    assert exp.config("rf_defaults").model.params == {}
    assert exp.config("baseline").model.params == {"alpha": 3.0}


def test_baseline_key_must_act_somewhere(tmp_path):
    """A baseline key that acts only in one variant is fine (a shared setting); one that acts nowhere
    is refused."""
    base = {**BASELINE, "train": {"epochs": 7}}
    exp = _load(tmp_path, baseline=base, variants={"mlp": {"model.name": "symbolic_mlp"}})
    assert exp.config("mlp").train.epochs == 7
    with pytest.raises(PianolabError, match="train.epochs: has no effect in the baseline nor in any variant"):
        _load(tmp_path, baseline=base, variants={"rf": {"model.name": "random_forest"}})


AST = {"features": {"spectrogram": "log_mel"}, "model": {"name": "ast_ultra_tiny"}}
MLP = {"features": {"vector": ["symbolic"]}, "model": {"name": "symbolic_mlp"}}
RIDGE = {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge"}}
# (config, key, has no effect): each rule of NO_OPS both ways
RULES = [
    ({**RIDGE, "optim": {"lr": 0.01}}, "optim.lr", True), ({**MLP, "optim": {"lr": 0.01}}, "optim.lr", False),
    ({**MLP, "optim": {"schedule": "step_decay"}, "train": {"epochs": 30}}, "optim.schedule", True),
    ({**MLP, "optim": {"schedule": "step_decay", "schedule_params": {"milestones": [10, 20]}},
      "train": {"epochs": 30}}, "optim.schedule", False),
    ({**MLP, "optim": {"schedule": "step_decay", "schedule_params": {"milestones": [40]}},
      "train": {"epochs": 30}}, "optim.schedule", True),
    ({**RIDGE, "regularize": {"val_fraction": 0.0}}, "regularize.val_fraction", True),
    ({**MLP, "regularize": {"val_fraction": 0.0}}, "regularize.val_fraction", False),
    ({**MLP, "augment": {"preset": "light"}, "features": {"vector": ["symbolic"], "augment_factor": 2}},
     "augment.preset", False),  # its ranges draw the copies' MIDI, its mixup mixes the vectors
    ({**RIDGE, "augment": {"preset": "spec_light"}}, "augment.preset", True),
    ({**AST, "augment": {"preset": "light"}}, "augment.preset", True),
    ({"model": {"name": "ast_ultra_tiny"}, "features": {"spectrogram": "log_mel", "augment_factor": 2},
      "augment": {"preset": "light"}}, "augment.preset", False),
    ({**AST, "augment": {"preset": "spec_light"}}, "augment.preset", False),
    ({"model": {"name": "ast_ultra_tiny"}, "features": {"spectrogram": "log_mel", "augment_factor": 2},
      "augment": {"preset": "spec_light"}}, "features.augment_factor", True),
    ({"model": {"name": "ast_ultra_tiny"}, "features": {"spectrogram": "log_mel", "augment_factor": 2},
      "augment": {"preset": "heavy"}}, "features.augment_factor", False),
    ({**MLP, "regularize": {"cutmix_prob": 0.5}}, "regularize.cutmix_prob", True),
    ({**AST, "regularize": {"cutmix_prob": 0.5}}, "regularize.cutmix_prob", False),
    ({**AST, "regularize": {"mixup_alpha": 0.2}}, "regularize.mixup_alpha", True),
    ({**AST, "regularize": {"mixup_alpha": 0.2, "mixup_prob": 0.5}}, "regularize.mixup_alpha", False),
    ({**AST, "regularize": {"early_stopping": 5, "val_fraction": 0.0}}, "regularize.early_stopping", True),
    ({**AST, "regularize": {"early_stopping": 5}}, "regularize.early_stopping", False),
    ({**RIDGE, "features": {"vector": ["symbolic"], "spectrogram": "log_mel"}}, "features.spectrogram", True),
    ({"model": {"name": "hybrid_concat"}, "features": {"vector": ["symbolic"], "spectrogram": "log_mel"}},
     "features.spectrogram", False),
    ({**AST, "features": {"spectrogram": "log_mel", "vector": ["symbolic"]}}, "features.vector", True),
    ({**AST, "features": {"spectrogram": "log_mel", "top_k": 10}}, "features.top_k", True),
    ({**RIDGE, "features": {"vector": ["symbolic"], "top_k": 10}}, "features.top_k", False),
    ({**AST, "features": {"spectrogram": "log_mel", "stack": "ridge"}}, "features.stack", True),
    ({**MLP, "features": {"vector": ["symbolic"], "stack": "ridge"}}, "features.stack", False),
    ({"model": {"name": "ridge"}, "features": {"peer_centred": True}}, "features.peer_centred", True),
    ({**RIDGE, "features": {"vector": ["symbolic"], "peer_centred": True}}, "features.peer_centred", False),
    ({**RIDGE, "features": {"vector": ["symbolic"], "seconds": 5.0}}, "features.seconds", True),
    ({**AST, "features": {"spectrogram": "log_mel", "seconds": 5.0}}, "features.seconds", False),
    ({**RIDGE, "features": {"vector": ["symbolic"], "length_policy": "pad"}}, "features.length_policy", True),
    ({**RIDGE, "features": {"vector": ["symbolic"], "renderer": "fluidsynth"}}, "features.renderer", True),
    ({**RIDGE, "features": {"vector": ["all_traditional"], "renderer": "fluidsynth"}}, "features.renderer", False),
    ({**RIDGE, "tuning": {"space": {"model.params.alpha": {"low": 0.1, "high": 10}}}}, "tuning.space", True),
    ({**RIDGE, "continual": {"strategy": "naive"}}, "continual.strategy", True),
    ({**MLP, "continual": {"strategy": "naive"}}, "continual.strategy", False),
    ({**MLP, "continual": {"first": ["timing"]}}, "continual.first", True),
    ({**MLP, "continual": {"strategy": "naive", "first": ["timing"]}}, "continual.first", False),
    *(x for option, owner in (("replay_fraction", "replay"), ("ewc_lambda", "ewc"), ("lwf_weight", "lwf"))
      for x in (({**MLP, "continual": {"strategy": "naive", option: 0.5}}, f"continual.{option}", True),
                ({**MLP, "continual": {"strategy": owner, option: 0.5}}, f"continual.{option}", False))),
    ({**MLP, "pretrain": {"epochs": 10}}, "pretrain.epochs", True),
    ({**MLP, "pretrain": {"method": "masked_feature", "epochs": 10}}, "pretrain.epochs", False),
    ({**RIDGE, "ensemble": {"snapshots": 2}}, "ensemble.snapshots", True),
    ({**MLP, "ensemble": {"snapshots": 2}}, "ensemble.snapshots", False),
    ({**RIDGE, "ensemble": {"tta_preset": "heavy"}}, "ensemble.tta_preset", True),
    ({**RIDGE, "ensemble": {"tta": 2, "tta_preset": "heavy"}}, "ensemble.tta_preset", False),
    ({**RIDGE, "ensemble": {"tta": 2, "tta_preset": "spec_light"}}, "ensemble.tta", True),
    ({**RIDGE, "ensemble": {"tta": 2}}, "ensemble.tta", False),
    ({**RIDGE, "adapt": {"tasks": "performer"}}, "adapt.tasks", True),
    ({**RIDGE, "adapt": {"k": 3, "tasks": "performer"}}, "adapt.tasks", False),
    ({**RIDGE, "adapt": {"k": 3, "strategy": "offset", "shrinkage": 2.0}}, "adapt.shrinkage", True),
    ({**RIDGE, "adapt": {"k": 3, "strategy": "shrinkage", "shrinkage": 2.0}}, "adapt.shrinkage", False),
    *(x for option, value in (("steps", 3), ("lr", 0.1))
      for x in (({**RIDGE, "adapt": {"k": 3, "strategy": "offset", option: value}}, f"adapt.{option}", True),
                ({**MLP, "adapt": {"k": 3, "strategy": "finetune_head", option: value}}, f"adapt.{option}", False))),
    *(x for option, value in (("meta_steps", 10), ("meta_batch", 4), ("meta_lr", 0.01))
      for x in (({**MLP, "adapt": {"k": 3, "strategy": "finetune_head", option: value}}, f"adapt.{option}", True),
                ({**MLP, "adapt": {"k": 3, "strategy": "maml", option: value}}, f"adapt.{option}", False))),
]


@pytest.mark.parametrize("data, key, none", RULES, ids=[f"{k}-{n}-{i}" for i, (_, k, n) in enumerate(RULES)])
def test_no_op_rules(data, key, none):
    cfg = config_from_dict(data)
    assert bool(no_effect(cfg, key)) == none
    if none:
        with pytest.raises(PianolabError, match=rf"^<run>: {key}: has no effect: "):
            check_config(cfg, "<run>")


def test_every_rule_is_exercised():
    sections = ("optim", "regularize", "tuning", "continual", "pretrain")
    exercised = {k for _, k, _ in RULES} | {k.split(".")[0] for _, k, _ in RULES if k.split(".")[0] in sections}
    assert {r.key for r in NO_OPS} <= exercised | {
        "objective.name", "objective.params", "train.epochs", "train.batch_size", "train.amp", "train.compile",
        "train.checkpoint_every", "train.eval_every", "train.max_seconds", "regularize.cutmix_prob",
        "regularize.mixup_alpha", "regularize.early_stopping"}


def test_a1_applies_each_preset_whole(tmp_path):
    """A1's variants render MIDI-augmented copies drawn from their own preset's ranges, and keep the
    preset's SpecAugment and mixup (the AST reads spectrograms)."""
    exp = load_experiment(ROOT / "experiments" / "a1_spec_augment.yaml")
    assert exp.config("baseline").augment.preset == "none" and exp.config("baseline").features.augment_factor == 1
    stem = "Schubert_D960_mv3_8bars_1_01"
    seen = set()
    for name in ("light", "medium", "heavy"):
        cfg = exp.config(name)
        assert cfg.augment.preset == name and cfg.features.augment_factor == 3 and no_effect(cfg, "augment.preset") \
            is None
        preset = PRESETS.get(name)
        assert preset.spec_augment_prob > 0 and preset.mixup_prob > 0
        copies = [draw_params(cfg.augment.preset, stem, c) for c in range(cfg.features.augment_factor)]
        assert copies[0].identity and not any(p.identity for p in copies[1:])
        lo, hi = preset.time_stretch_range
        assert all(lo <= p.stretch <= hi for p in copies[1:])
        seen.add(tuple((p.stretch, p.shift) for p in copies))
    assert len(seen) == 3


def test_d3_has_heavy_dropout_and_cutmix():
    exp = load_experiment(ROOT / "experiments" / "d3_regularisation.yaml")
    assert exp.config("heavy_dropout").model.params == {"dropout": 0.3}
    assert exp.config("cutmix").regularize.cutmix_prob == 0.5


def test_every_shipped_experiment_dry_runs_and_every_config_loads(tmp_path):
    from pianolab.cli import app

    runner = CliRunner()
    files = sorted((ROOT / "experiments").glob("*.yaml"))
    assert len(files) > 20
    for path in files:
        result = runner.invoke(app, ["ab", "run", str(path), "--dry-run", "--runs", str(tmp_path / "runs")])
        assert result.exit_code == 0, f"{path.name}: {result.output} {result.exception!r}"
        assert "runs;" in result.output
    configs = [p for p in sorted((ROOT / "configs").glob("*.yaml")) if not p.name.endswith(".card.yaml")]
    assert configs  # run configs; a `.card.yaml` beside one is its model card
    for path in configs:
        check_config(load_config(path), str(path))


@pytest.mark.parametrize("name", ["a1_spec_augment", "b1.v2", "x-y", "A_1"])
def test_safe_names_pass(tmp_path, name):
    exp = _load(tmp_path, name=name, variants={name: {"model.name": "random_forest"}})
    assert exp.name == name and exp.variant_names == ["baseline", name]


def test_names_are_not_paths(tmp_path):
    """A real run (no --dry-run) of experiments named to climb out of --runs writes nothing anywhere."""
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PIANOLAB_CACHE": str(tmp_path / "cache")}
    changes = [{"name": "../../escaped"}, {"variants": {"../../escaped": {"model.name": "random_forest"}}},
               {"name": "/tmp/escaped"}, {"name": ".hidden"}]
    for i, change in enumerate(changes):
        path = work / f"exp{i}.yaml"
        path.write_text(yaml.safe_dump({**EXP, "variants": {"rf": {"model.name": "random_forest"}}, **change}))
        proc = subprocess.run([sys.executable, "-c", "from pianolab.cli import main; main()", "ab", "run", str(path),
                               "--runs", str(work / "runs"), "--tracker", "none", "--no-report"],
                              cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and "a name may use only" in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["work"] + [f"exp{i}.yaml" for i in range(4)])
