"""Tuning at equal budget on real data with fast classic models: spec validation, run identity,
trial budget per cell, inner folds inside the training fold, resume after a kill, pruning, records."""

import json
import sqlite3

import pytest
import yaml

from pianolab import track
from pianolab.ab.runner import cell_dir, run_experiment
from pianolab.ab.spec import load_experiment
from pianolab.config import config_from_dict, config_hash, replace
from pianolab.errors import PianolabError
from pianolab.models.persist import load_model
from pianolab.train import run
from pianolab.train.run import execute

SPACE = {"model.params.alpha": {"low": 0.001, "high": 10000, "log": True}}
EXP = {
    "name": "tuned",
    "hypothesis": "A tuned random forest beats a tuned ridge at the same number of trials.",
    "baseline": {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge"}, "track": {"tracker": "none"}},
    "variants": {"forest": {"model.name": "random_forest", "model.params": {"n_estimators": 8},
                            "tuning.space": {"model.params.max_depth": {"low": 1, "high": 12, "int": True}},
                            "multi_factor": True, "reason": "each model tunes its own main hyperparameter"}},
    "seeds": 1,
    "split": {"name": "excerpt", "folds": 2},
    "budget": {"trials": 4},
    "tuning": {"space": SPACE, "inner_folds": 3, "pruner": "median", "pruner_params": {"n_startup_trials": 1}},
}


def write(tmp_path, data):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _with(**changes):
    return {**EXP, **changes}


@pytest.mark.parametrize("data, message", [
    (_with(budget={}), "tuning needs budget.trials"),
    (_with(budget={"trials": 0}), "budget.trials, a positive integer"),
    ({k: v for k, v in EXP.items() if k != "tuning"}, "budget.trials needs a 'tuning' section"),
    (_with(tuning={"space": SPACE, "folds": 3}), "unknown key tuning.'folds'"),
    (_with(tuning={"inner_folds": 3}), "missing required key 'tuning.space'"),
    (_with(tuning={"space": {"model.params.alpha": {"low": 1}}}),
     "tuning.space.model.params.alpha: missing key 'high'"),
    (_with(tuning={"space": {"model.params.alpha": {"low": 5, "high": 1}}}), "low < high"),
    (_with(tuning={"space": {"model.params.alpha": {"low": 0, "high": 1, "log": True}}}), "must hold for .log=True"),
    (_with(tuning={"space": {"model.params.alpha": {"choices": []}}}), "non-empty list"),
    (_with(tuning={"space": {"model.params.alpha": {"lo": 1, "high": 2}}}), "unknown key 'lo'"),
    (_with(tuning={"space": {"model.paramz.alpha": {"low": 1, "high": 2}}}), "unknown key 'model.paramz'"),
    (_with(tuning={"space": {"model.params.max_depth": {"low": 1, "high": 2, "int": True}}}),
     "tuning.space.model.params.max_depth: estimator 'ridge' does not accept max_depth"),
    (_with(tuning={"space": {"features.seconds": {"low": 5, "high": 20}}}), "features.seconds cannot be tuned"),
    (_with(tuning={"space": {"train.epochs": {"low": 5, "high": 20, "int": True}}}),
     "train.epochs is tuned but the experiment sets train.epochs"),
    (_with(variants={"small": {"model.params.alpha": 0.1}}),
     "tuning.space.model.params.alpha is tuned but variant 'small' sets model.params.alpha"),
    (_with(variants={"more": {"tuning.trials": 9}}), "variant 'more' sets tuning.trials"),
    (_with(tuning={"space": SPACE, "pruner": "hyperband"}), "tuning.pruner: unknown pruner 'hyperband'"),
    (_with(tuning={"space": SPACE, "pruner_params": {"patience": 2}}), "tuning.pruner_params"),
    (_with(tuning={"space": SPACE, "metric": "accuracy"}), "tuning.metric: unknown metric"),
    (_with(baseline={**EXP["baseline"], "tuning": {"trials": 3}}), "baseline sets 'tuning'"),
])
def test_spec_validation(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(PianolabError, match=message) as err:
        load_experiment(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_run_identity_includes_tuning_only_when_tuning():
    assert config_hash(config_from_dict({})) == "92e2b04d7ad2"  # hashes from before tuning existed
    ridge = config_from_dict({"model": {"name": "ridge", "params": {"alpha": 2.0}}})
    assert config_hash(ridge) == "d21532bb43e4"
    assert config_hash(replace(ridge, tuning={"space": SPACE})) == "d21532bb43e4"  # trials 0: tuning off
    tuned = replace(ridge, tuning={"space": SPACE, "trials": 4})
    assert len({config_hash(ridge), config_hash(tuned), config_hash(replace(tuned, tuning={"trials": 5})),
                config_hash(replace(tuned, tuning={"space": {"model.params.alpha": {"low": 1, "high": 2}}}))}) == 4
    assert config_hash(replace(tuned, tuning={"storage": "postgresql://db/optuna"})) == config_hash(tuned)


def _studies(db):
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT s.study_name, t.state FROM trials t JOIN studies s USING (study_id)").fetchall()
    out = {}
    for name, state in rows:
        out.setdefault(name, []).append(state)
    return out


def test_equal_budget_nested_resumed_and_recorded(tmp_path, monkeypatch, dataset):
    exp = load_experiment(write(tmp_path, EXP))
    root = tmp_path / "runs"
    calls, fit = [], run.fit_cell

    def killed_at_fifth_inner_fit(cell, device):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("simulated kill")
        return fit(cell, device)

    monkeypatch.setattr(run, "fit_cell", killed_at_fifth_inner_fit)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, root=root, tracker="none", echo=lambda s: None)
    monkeypatch.setattr(run, "fit_cell", fit)
    run_experiment(exp, root=root, tracker="none", echo=lambda s: None)

    studies = _studies(root / "tuned" / "optuna.db")
    cells = exp.cells()
    assert len(studies) == len(cells) == 4
    for cell in cells:
        folder = cell_dir(exp, cell, root)
        rec = json.loads((folder / "tuning.json").read_text())
        states = studies[rec["study"]]
        interrupted = cell.variant == "baseline" and cell.fold == 0
        # equal budget: every cell ran exactly budget.trials trials, the killed one resumed its study
        assert rec["n_complete"] + rec["n_pruned"] == exp.trials == 4
        assert (rec["n_interrupted"], states.count("FAIL")) == ((1, 1) if interrupted else (0, 0))
        assert states.count("COMPLETE") + states.count("PRUNED") == 4
        pruned = [t for t in rec["trials"] if t["state"] == "pruned"]
        assert len(pruned) == rec["n_pruned"] and all(len(t["reports"]) < 3 for t in pruned)
        # nested: the inner folds partition the cell's training items; no test-fold item in them
        rows, _, _ = track.read_predictions(folder / "predictions.parquet")
        test = set(rows["stem"][rows["role"] == "test"])
        inner = [set(f["test"]) for f in rec["inner_folds"]]
        assert len(inner) == 3 and not set().union(*inner) & test
        assert set().union(*inner) == set(dataset.stems) - test and sum(map(len, inner)) == len(dataset) - len(test)
        # the best params are recorded and trained with
        meta = track.read_meta(folder)
        assert meta["tuning"]["best_params"] == rec["best_params"] and meta["status"] == "done"
        (key, best), = rec["best_params"].items()
        assert rec["best_value"] == max(t["value"] for t in rec["trials"] if t["state"] == "complete")
        trained = yaml.safe_load((folder / "config.yaml").read_text())["model"]["params"]
        assert trained[key.split(".")[-1]] == best
        assert load_model(folder / "model.skops")["estimator"].estimator.get_params()[key.split(".")[-1]] == best
    assert sum(json.loads((cell_dir(exp, c, root) / "tuning.json").read_text())["n_pruned"] for c in cells) > 0
    from pianolab.ab.report import write_report

    report = write_report(exp, root, echo=lambda s: None)["markdown"].read_text()
    assert "budget: per config epochs, 4 Optuna trials per cell (inner 3-fold" in report


def test_single_run_with_tuning_keeps_its_study(tmp_path):
    cfg = config_from_dict({**EXP["baseline"], "tuning": {"space": SPACE, "trials": 2, "inner_folds": 2,
                                                          "pruner": "none", "sampler": "random"}})
    execute(cfg, tmp_path / "run")
    rec = json.loads((tmp_path / "run" / "tuning.json").read_text())
    assert (tmp_path / "run" / "optuna.db").is_file() and rec["n_complete"] == 2 and rec["n_pruned"] == 0
