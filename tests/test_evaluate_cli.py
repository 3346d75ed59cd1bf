"""`pianolab evaluate` on real tiny runs (ridge, symbolic MLP) and a synthetic AST checkpoint."""

import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from pianolab import track
from pianolab.cli import app
from pianolab.config import config_from_dict, to_dict
from pianolab.evaluate.context import Context, Probe, Run
from pianolab.evaluate.metrics import compute_metrics
from pianolab.train.run import execute

RIDGE = {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge"}, "track": {"tracker": "none"}}
MLP = {"features": {"vector": ["symbolic"]}, "model": {"name": "symbolic_mlp"},
       "train": {"epochs": 2, "batch_size": 64}, "track": {"tracker": "none"}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_runs")
    out = {}
    for name, cfg in (("ridge", RIDGE), ("mlp", MLP)):
        out[name] = root / name
        execute(config_from_dict(cfg), out[name])
    return out


def test_evaluate_ridge_run_through_cli(runs, dataset):
    folder = runs["ridge"]
    result = CliRunner().invoke(app, ["evaluate", str(folder), "--only",
                                      "metrics,error_analysis,feature_importance,adversarial_examples,robustness",
                                      "--max-runs", "1"])
    assert result.exit_code == 0, result.output
    out = folder / "evaluation"
    for name in ("evaluation.md", "evaluation.html", "evaluation.json", "metrics_per_dimension.png",
                 "run/permutation_importance.png", "run/errors_by_metadata.png"):
        assert (out / name).is_file(), name
    nums = json.loads((out / "evaluation.json").read_text())
    rows, pred, true = track.read_predictions(folder / "predictions.parquet")
    test = (rows["role"] == "test").to_numpy()
    groups = dataset.column("group")[[dataset.index[s] for s in rows["stem"][test]]]
    ref = compute_metrics(["pearson", "within_excerpt_pearson"], true[test], pred[test], groups)
    assert nums["metrics"]["run"]["pearson"]["value"] == pytest.approx(ref["pearson"].value)
    assert nums["metrics"]["run"]["within_excerpt_pearson"]["value"] == pytest.approx(
        ref["within_excerpt_pearson"].value)
    assert len(nums["metrics"]["run"]["pearson"]["per_dim"]) == 19
    assert nums["metrics"]["run"]["pearson"]["human"] < nums["metrics"]["run"]["pearson"]["value"] + 0.2
    assert len(nums["error_analysis"]["run"]["piece"]) == 4
    fams = nums["feature_importance"]["run"]
    assert len(fams) > 3 and all(f.startswith("symbolic:") for f in fams) and max(fams.values()) > 0
    drop = nums["adversarial_examples"]["run"]
    assert next(iter(drop.values()))["mse"] > 0  # the worst case is worse
    md = (out / "evaluation.md").read_text()
    assert "No run here used the composer split, and a single run folder is not re-trained" in md
    assert "tested on one performer it never heard" in md
    assert "Not applicable" in md
    assert "data:image/png;base64" in (out / "evaluation.html").read_text()


def test_evaluate_mlp_sections(runs, tmp_path):
    from pianolab.evaluate.suite import evaluate_target

    paths = evaluate_target(runs["mlp"], ["learning_curves", "gradient_analysis", "loss_landscape",
                                          "attention_rollout", "advanced"], out=tmp_path, echo=lambda s: None)
    nums = json.loads(paths["json"].read_text())
    assert set(nums["learning_curves"]["run"]) >= {"train_loss", "val_pearson"}
    assert nums["gradient_analysis"]["run"]["median"] > 0
    assert np.isfinite(nums["loss_landscape"]["run"]["center_loss"])
    adv = nums["advanced"]["run"]
    assert 0 <= adv["pairwise_ranking_accuracy"] <= 1 and adv["confidence_calibration"] is None
    md = paths["markdown"].read_text()
    assert "per-layer gradient norms" in md.lower() and "Not applicable" in md  # no rollout for an MLP
    assert (tmp_path / "run" / "learning_curves.png").is_file()
    assert (tmp_path / "run" / "loss_landscape_2d.png").is_file()


def test_unknown_section_is_one_line_error(runs):
    result = CliRunner().invoke(app, ["evaluate", str(runs["ridge"]), "--only", "metrics,nope"])
    assert result.exit_code != 0
    msg = str(result.exception)
    assert "unknown evaluation section 'nope'" in msg and "noise_robustness" in msg and "\n" not in msg


def _ast_run(tmp_path, n_freq: int, spectrogram: str, seconds: float):
    from pianolab.models import create_model

    cfg = config_from_dict({"features": {"spectrogram": spectrogram, "seconds": seconds},
                            "model": {"name": "ast_ultra_tiny"}, "track": {"tracker": "none"}})
    kw = {"in_channels": 1, "n_freq": n_freq, "n_frames": int(seconds * 100), "patch": 8, "depth": 2}
    model = create_model("ast_ultra_tiny", **kw)
    folder = tmp_path / f"ast{n_freq}"
    folder.mkdir()
    norm = {"y_mean": [0.5] * 19, "y_std": [0.1] * 19, "spec_mean": -50.0, "spec_std": 20.0}
    torch.save({"model": model.state_dict(), "model_name": "ast_ultra_tiny", "model_kwargs": kw, "norm": norm,
                "config": json.dumps(to_dict(cfg))}, folder / "checkpoint.pt")
    (folder / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    (folder / "meta.json").write_text(json.dumps({"status": "done", "n_train": 600, "n_test": 200}))
    return Run.load(folder), norm


def _probe(run, norm, spec, waves=None, featurise=None):
    from pianolab.evaluate.loading import load_neural

    model, _ = load_neural(run)
    y = np.random.default_rng(0).uniform(0.3, 0.7, (len(spec), 19))
    return Probe(model, {"spec": spec}, y, [f"item{i}" for i in range(len(spec))], np.asarray(norm["y_mean"]),
                 np.asarray(norm["y_std"]), waves, featurise)


def test_ast_landscape_rollout_adversarial(tmp_path, dataset):
    from pianolab.evaluate.sections_model import landscape, rollout
    from pianolab.evaluate.sections_robust import adversarial_report

    run, norm = _ast_run(tmp_path, 32, "mel_128", 0.4)
    spec = torch.randn(6, 1, 32, 40)
    probe = _probe(run, norm, spec)
    lines, nums, paths = landscape(probe, tmp_path / "out", steps_1d=5, steps_2d=3)
    assert nums["center_loss"] == pytest.approx(float(((probe.predict(probe.batch) - probe.y) ** 2 /
                                                       probe.y_std**2).mean()), rel=1e-4)
    assert all(p.is_file() for p in paths)
    lines, nums, paths = rollout(probe, tmp_path / "out")
    assert sum(nums["frequency_share"]) == pytest.approx(1.0) and paths[0].is_file()
    rep = adversarial_report(probe, fractions=(0.05,), pgd_steps=3)
    mse = rep[(rep["metric"] == "mse") & (rep["dim"] == "overall")]
    assert (mse["drop"] > 0).all() and set(mse["condition"]) == {"FGSM eps 0.05σ", "PGD eps 0.05σ"}


def test_audio_robustness_sections_on_synthetic_waves(tmp_path, dataset):
    from pianolab.evaluate.loading import spectrogram_featuriser
    from pianolab.evaluate.sections_robust import noise_section, recording_section, tempo_section

    run, norm = _ast_run(tmp_path, 128, "mel_128", 0.5)
    rng = np.random.default_rng(1)
    t = np.arange(12000) / 16000
    waves = [0.3 * np.sin(2 * np.pi * f * t) * np.exp(-t) + 0.01 * rng.standard_normal(len(t))
             for f in rng.uniform(100, 1000, 6)]
    featurise = spectrogram_featuriser(run, norm, "cpu")
    probe = _probe(run, norm, featurise(waves), waves, featurise)
    assert probe.batch["spec"].shape == (6, 1, 128, 50)
    ctx = Context({"run": [run]}, dataset, tmp_path / "eval", probes={run.folder: probe})
    for section, n in ((noise_section, 3), (tempo_section, 2), (recording_section, 3)):
        res = section(ctx)
        assert len(res.numbers["run"]) == n and res.plots[0].is_file()
        assert all(np.isfinite(v["mse"]) for v in res.numbers["run"].values())
    assert "legitimately" in tempo_section(ctx).lines[0]


def test_experiment_evaluation_via_ab_report(tmp_path):
    from pianolab.ab.report import write_report
    from pianolab.ab.runner import run_experiment
    from pianolab.ab.spec import load_experiment

    data = {"name": "eval_tiny", "hypothesis": "alpha matters", "baseline": RIDGE,
            "variants": {"alpha_small": {"model.params.alpha": 0.1}}, "seeds": 2,
            "split": {"name": "excerpt", "folds": 2}, "evaluation": ["metrics", "advanced"]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    exp, root = load_experiment(path), tmp_path / "runs"
    run_experiment(exp, root=root, tracker="none", echo=lambda s: None)
    report = write_report(exp, root, echo=lambda s: None)["markdown"].read_text()
    assert "## Evaluation" in report and "evaluation.md" in report
    out = root / "eval_tiny" / "evaluation"
    md = (out / "evaluation.md").read_text()
    assert "### baseline" in md and "### alpha_small" in md and "Paired against `baseline`" in md
    nums = json.loads((out / "evaluation.json").read_text())
    cal = nums["advanced"]["alpha_small"]["confidence_calibration"]
    assert cal is not None and 0 <= cal["coverage"]["0.9"] <= 1  # spread over the 2 seeds
    assert (out / "advanced.png").is_file() and "![advanced](advanced.png)" in md


def test_run_copied_without_its_model_says_so(runs, tmp_path):
    """A folder holding predictions only (weights not copied) still gets metrics and learning curves;
    the sections that need the model say the model is missing, not that they do not apply."""
    import shutil

    from pianolab.evaluate.suite import evaluate_target

    copy = tmp_path / "mlp_copy"
    shutil.copytree(runs["mlp"], copy, ignore=shutil.ignore_patterns("checkpoint.pt", "evaluation"))
    paths = evaluate_target(copy, ["metrics", "learning_curves", "loss_landscape", "attention_rollout",
                                   "feature_importance"], out=tmp_path / "eval", echo=lambda s: None)
    nums = json.loads(paths["json"].read_text())
    assert nums["metrics"]["run"]["pearson"]["value"] > 0 and "train_loss" in nums["learning_curves"]["run"]
    md = paths["markdown"].read_text()
    assert md.count("Not run: 1 run folder(s) of this variant hold no trained model") == 2  # landscape, importance
    assert "Not applicable: needs a spectrogram transformer" in md  # an MLP has no rollout either way


def test_experiment_evaluation_trains_cross_split_runs_once(tmp_path, dataset):
    """Evaluating an experiment trains each variant on the composer and leave-one-performer-out splits
    (resumable cells of the same experiment) and compares them with its own split."""
    from pianolab.ab.runner import run_experiment
    from pianolab.ab.spec import load_experiment
    from pianolab.evaluate.suite import evaluate_target

    spec = {"name": "cross", "hypothesis": "Weaker ridge regularisation fits the symbolic features better.",
            "baseline": RIDGE, "variants": {"alpha_small": {"model.params.alpha": 0.1}}, "seeds": 1,
            "split": {"name": "excerpt", "folds": 3}}
    path = tmp_path / "cross.yaml"
    path.write_text(yaml.safe_dump(spec))
    root = tmp_path / "runs"
    run_experiment(load_experiment(path), root=root, tracker="none", echo=lambda s: None)
    paths = evaluate_target(path, ["cross_composer", "cross_performer"], runs_root=root, echo=lambda s: None)
    nums = json.loads(paths["json"].read_text())
    composer = nums["cross_composer"]["alpha_small"]
    assert set(composer["by_test_group"]) == {"Beethoven", "Schubert"}
    assert -1 < composer["mean_pearson"] < composer["own_split_pearson"] < 1  # unseen composer is harder
    performers = nums["cross_performer"]["baseline"]["by_test_group"]
    assert len(performers) == 20 and "deadpan" not in performers
    done = sorted(p.parent for p in (root / "cross").glob("*/*/*/meta.json"))
    assert len(done) == 2 * (3 + 2 + 20)  # 2 variants x (own 3 folds + 2 composers + 20 performers)
    checked = set()
    for folder in done:  # the composer figures, recomputed by hand from the variant's run folders
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        if cfg["data"]["split"] == "composer" and cfg["model"]["params"].get("alpha") == 0.1:
            rows, pred, true = track.read_predictions(folder / "predictions.parquet")
            test = (rows["role"] == "test").to_numpy()
            composers = set(dataset.column("composer")[[dataset.index[s] for s in rows["stem"][test]]])
            (name,) = composers
            ref = compute_metrics(["pearson"], true[test], pred[test])["pearson"].value
            assert composer["by_test_group"][name] == pytest.approx(ref)
            checked.add(name)
    assert checked == {"Beethoven", "Schubert"}
    started = {p: json.loads((p / "meta.json").read_text())["started"] for p in done}
    evaluate_target(path, ["cross_composer"], runs_root=root, echo=lambda s: None)  # nothing re-trained
    assert {p: json.loads((p / "meta.json").read_text())["started"] for p in done} == started
    md = paths["markdown"].read_text()
    assert "on the experiment's own split" in md and (paths["markdown"].parent / "composer.png").is_file()
    assert "Paired against `baseline` (Pearson per fold of the composer split" in md
