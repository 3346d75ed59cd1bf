"""Robustness sections: the metric drop, per dimension, when the test audio or inputs are perturbed.

Audio conditions re-render nothing: the run's test items are rendered once (`Probe.waves`), the
transform is applied to the audio, and the spectrogram is recomputed exactly as the feature store
makes it. Cross-composer / cross-performer compare runs on those splits (for an experiment, trained
by the evaluation itself: `cross_split`) with the same variant on the experiment's own split.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from pianolab.data.percepiano import DIMENSIONS
from pianolab.evaluate import plots
from pianolab.evaluate.context import Context, Probe, Run, slug
from pianolab.evaluate.sections import SECTIONS, SectionResult, image, md_table, paired_lines

METRICS_USED = ("pearson", "mse")
Conditions = Callable[[Probe], dict[str, list[np.ndarray]]]


def _scores(y: np.ndarray, pred: np.ndarray) -> dict:
    from pianolab.evaluate.metrics import compute_metrics

    return compute_metrics(METRICS_USED, y, pred)


def audio_report(probe: Probe, conditions: dict[str, list[np.ndarray]]) -> pd.DataFrame:
    """`robustness_report` of the probe's model on perturbed waves vs the clean ones."""
    from pianolab.evaluate.robustness import robustness_report

    clean = _scores(probe.y, probe.predict(probe.batch))
    pert = {c: _scores(probe.y, probe.predict({**probe.batch, "spec": probe.featurise(w)}))
            for c, w in conditions.items()}
    return robustness_report(clean, pert)


def noise_conditions(probe: Probe, snrs=(30, 20, 10)) -> dict[str, list[np.ndarray]]:
    from pianolab.evaluate.robustness import add_noise

    rng = np.random.default_rng(0)
    return {f"white noise SNR {s} dB": [add_noise(w, s, rng) for w in probe.waves] for s in snrs}


def tempo_conditions(probe: Probe, rates=(0.9, 1.1)) -> dict[str, list[np.ndarray]]:
    from pianolab.evaluate.robustness import time_stretch

    return {f"time stretch x{r:g}": [time_stretch(w, r) for w in probe.waves] for r in rates}


def recording_conditions(probe: Probe) -> dict[str, list[np.ndarray]]:
    from pianolab.evaluate.robustness import bit_depth, lowpass, small_room_reverb

    sr = probe.sample_rate
    return {"low-pass 4 kHz": [lowpass(w, sr, 4000.0) for w in probe.waves],
            "8-bit": [bit_depth(w, 8) for w in probe.waves],
            "small room reverb (RT60 0.3 s)": [small_room_reverb(w, sr) for w in probe.waves]}


def adversarial_report(probe: Probe, fractions=(0.01, 0.05), pgd_steps: int = 10) -> pd.DataFrame:
    """FGSM and PGD on the (normalised) spectrogram within eps = fraction × its std (L-inf)."""
    from pianolab.evaluate.adversarial import fgsm, pgd
    from pianolab.evaluate.robustness import robustness_report
    from pianolab.evaluate.sections_model import mse_loss, z_target

    target, std = z_target(probe), float(probe.batch["spec"].std())
    pert = {}
    for f in fractions:
        for name, attack in (("FGSM", fgsm), ("PGD", pgd)):
            kw = {"steps": pgd_steps} if attack is pgd else {}
            adv = attack(probe.model, "spec", probe.batch, target, mse_loss, eps=f * std, **kw)
            pert[f"{name} eps {f:g}σ"] = _scores(probe.y, probe.predict(adv))
    return robustness_report(_scores(probe.y, probe.predict(probe.batch)), pert)


def feature_report(vp, eps: float = 0.05) -> pd.DataFrame:
    """Black-box worst case of vector inputs within eps × the test fold's per-feature range."""
    from pianolab.evaluate.adversarial import feature_worst_case
    from pianolab.evaluate.robustness import robustness_report

    lo, hi = vp.X.min(0), vp.X.max(0)
    att = feature_worst_case(vp.predict, vp.X, vp.y, lo, hi, eps)
    return robustness_report(_scores(vp.y, vp.predict(vp.X)),
                             {f"feature worst case eps {eps:g}·range": _scores(vp.y, vp.predict(att.X_adv))})


def _summarise(ctx: Context, v: str, reports: list[pd.DataFrame], res: SectionResult, name: str) -> None:
    """Mean over runs: an overall table, the 3 most affected dimensions and a drop heatmap."""
    df = pd.concat(reports).groupby(["condition", "metric", "dim"], sort=False, as_index=False).mean()
    overall = df[df["dim"] == "overall"]
    rows = [[c, m, float(a), float(b), float(d)] for c, m, a, b, d in
            overall[["condition", "metric", "clean", "perturbed", "drop"]].itertuples(index=False)]
    res.lines += md_table(["condition", "metric", "clean", "perturbed", "drop"], rows)
    pear = df[(df["metric"] == "pearson") & (df["dim"] != "overall")]
    worst = [f"{c}: " + ", ".join(f"{d} ({x:+.3f})" for d, x in t.nlargest(3, "drop")[["dim", "drop"]]
                                  .itertuples(index=False)) for c, t in pear.groupby("condition", sort=False)]
    res.lines += ["", "Largest Pearson drops per dimension:"] + [f"- {w}" for w in worst]
    grid = pear.pivot(index="condition", columns="dim", values="drop").reindex(columns=list(DIMENSIONS))
    fig = plots.dimension_heatmap(grid.to_numpy().T, list(grid.index), DIMENSIONS,
                                  "Pearson drop (positive = worse)", cmap="RdBu_r")
    path = plots.save(fig, ctx.path(slug(v)), name)
    res.plots.append(path)
    res.lines += ["", image(ctx, path)]
    res.numbers[v] = {c: dict(zip(t["metric"], t["drop"].astype(float), strict=True))
                      for c, t in overall.groupby("condition", sort=False)}


def _run_section(ctx: Context, name: str, keep: Callable[[Run], bool], report: Callable[[Run], pd.DataFrame],
                 note: str, skip: str) -> SectionResult:
    res = SectionResult([note])
    cells: dict[str, dict] = {}
    for v in ctx.variants:
        runs = ctx.selected(v, keep)
        res.lines += ["", f"### {v} ({len(runs)} run(s))", ""]
        if not runs:
            res.lines.append(ctx.skip_note(v, keep, skip))
            continue
        reports = [report(r) for r in runs]
        cells[v] = {r.cell: float(rep[(rep["metric"] == "pearson") & (rep["dim"] == "overall")]["drop"].mean())
                    for r, rep in zip(runs, reports, strict=True)}
        _summarise(ctx, v, reports, res, name)
    res.lines += paired_lines(ctx, cells, "mean Pearson drop", higher_is_better=False)
    return res


def _audio_section(ctx: Context, name: str, conditions: Conditions, note: str) -> SectionResult:
    return _run_section(ctx, name, lambda r: r.has_spectrogram,
                        lambda r: audio_report(ctx.probe(r), conditions(ctx.probe(r))),
                        note + f" First {ctx.probe_items} test items of the first {ctx.max_runs} run(s).",
                        "Not applicable: the model does not hear audio (no spectrogram input); see "
                        "`adversarial_examples` for the worst case of its feature inputs.")


@SECTIONS.register("noise_robustness")
def noise_section(ctx: Context) -> SectionResult:
    """White noise added to the rendered audio at 30, 20 and 10 dB SNR."""
    return _audio_section(ctx, "noise_robustness", noise_conditions,
                          "White Gaussian noise added to the rendered audio (SNR exact per file).")


@SECTIONS.register("tempo_robustness")
def tempo_section(ctx: Context) -> SectionResult:
    """Phase-vocoder time stretch at 0.9 and 1.1 (pitch kept)."""
    return _audio_section(ctx, "tempo_robustness", tempo_conditions,
                          "Audio time-stretched (pitch kept). Tempo legitimately changes some labels "
                          "(music_making_fast_slow, timing): a drop there is expected, not a flaw.")


@SECTIONS.register("cross_recording_quality")
def recording_section(ctx: Context) -> SectionResult:
    """Low-pass 4 kHz, 8-bit quantisation and a small-room reverb on the rendered audio."""
    return _audio_section(ctx, "cross_recording_quality", recording_conditions,
                          "Recording-quality changes applied to the rendered audio (other renderers / "
                          "SoundFonts: train or predict with `features.renderer=fluidsynth`).")


@SECTIONS.register("adversarial_examples")
def adversarial_section(ctx: Context) -> SectionResult:
    """FGSM/PGD on the spectrogram for differentiable audio models; feature worst case otherwise."""
    def report(r: Run) -> pd.DataFrame:
        return adversarial_report(ctx.probe(r)) if r.has_spectrogram else feature_report(ctx.vector_probe(r))

    return _run_section(ctx, "adversarial_examples", lambda r: r.has_spectrogram or r.has_vector, report,
                        "Spectrogram models: FGSM and 10-step PGD within an L-inf ball of eps × the std of "
                        "the normalised spectrogram. Feature models: worst corner of a box of 5% of each "
                        "feature's test-fold range (`feature_worst_case`).", "Not applicable.")


def _split_section(ctx: Context, split: str, by: str, how: str, note: str) -> SectionResult:
    """Per-run metrics of each variant's runs on `split` (trained now for an experiment, see
    `cross_split`), against the same variant on the experiment's own split, with a bar plot."""
    from pianolab.evaluate.cross_split import split_runs

    groups = ctx.dataset.column(by)
    res = SectionResult(lines=[note])
    runs = split_runs(ctx, split)
    fig, axes = plots.figure(panel=(max(5.0, 0.45 * max(map(len, runs.values()), default=1) + 2), 3.2))
    width, labels, per_fold = 0.8 / max(1, len(runs)), [], {}
    for i, (v, v_runs) in enumerate(runs.items()):
        if not v_runs:
            continue
        rows = []
        for r in v_runs:
            idx, yt, yp = r.predictions(ctx.dataset)
            m = _per_run(yt, yp)
            rows.append([f"fold {r.cell[1]}", ", ".join(sorted(set(groups[idx]))), len(idx), m["pearson"], m["r2"]])
        own = [_per_run(*r.predictions(ctx.dataset)[1:])["pearson"] for r in ctx.runs[v]
               if r.cfg.data.split != split]
        reference = float(np.mean(own)) if own else float("nan")
        res.numbers[v] = {"by_test_group": {row[1]: row[3] for row in rows}, "own_split_pearson": reference,
                          "mean_pearson": float(np.mean([row[3] for row in rows]))}
        per_fold[v] = {r.cell: row[3] for r, row in zip(v_runs, rows, strict=True)}
        res.lines += ["", f"### {v} (split `{split}`, training seed {v_runs[0].cell[0]})", ""] + md_table(
            ["run", f"test {by}", "items", "pearson", "r2"], rows)
        if own:
            res.lines += ["", f"Mean Pearson {res.numbers[v]['mean_pearson']:.4f} here vs {reference:.4f} on "
                          f"the experiment's own split (mean over its {len(own)} runs): drop "
                          f"{reference - res.numbers[v]['mean_pearson']:+.4f}."]
        bars = axes[0, 0].bar(np.arange(len(rows)) + i * width, [row[3] for row in rows], width, label=v)
        if own:
            axes[0, 0].axhline(reference, ls="--", lw=1, color=bars.patches[0].get_facecolor())
        labels = [row[1][:14] for row in rows]
    if not res.numbers:
        res.lines += ["", f"No run here used the {split} split, and a single run folder is not re-trained. {how}"]
        return res
    res.lines += paired_lines(ctx, per_fold, f"Pearson per fold of the {split} split", runs=runs)
    axes[0, 0].set_xticks(np.arange(len(labels)) + (len(runs) - 1) * width / 2, labels, rotation=60,
                          ha="right", fontsize=7)
    axes[0, 0].set(ylabel="mean per-dimension Pearson", title=f"test {by} (dashed: the variant on its own split)")
    axes[0, 0].legend(fontsize=7)
    path = plots.save(fig, ctx.out, split)
    res.plots.append(path)
    res.lines += ["", image(ctx, path)]
    return res


def _per_run(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from pianolab.evaluate.metrics import compute_metrics

    return {k: m.value for k, m in compute_metrics(["pearson", "r2"], y, pred).items()}


@SECTIONS.register("cross_composer")
def cross_composer_section(ctx: Context) -> SectionResult:
    """Train on one composer, test on the other (Beethoven -> Schubert and back)."""
    return _split_section(ctx, "composer", "composer",
                          "Evaluate the experiment file instead, or run `pianolab train CONFIG --set "
                          "data.split=composer --fold 0` and `--fold 1` and evaluate those runs.",
                          "Each model is trained on one composer's excerpts only and tested on the other's: "
                          "unseen music and an unseen style, with half the data or less.")


@SECTIONS.register("cross_performer")
def cross_performer_section(ctx: Context) -> SectionResult:
    """Leave one performer out: every human performer's renditions tested by a model that never heard them."""
    return _split_section(ctx, "leave_one_performer_out", "performer",
                          "Evaluate the experiment file instead, or run `pianolab train CONFIG --set "
                          "data.split=leave_one_performer_out --fold K` for each performer K and evaluate those.",
                          "Each model is tested on one performer it never heard. It has heard the other "
                          "performers play the same excerpts, which an excerpt split never allows: a figure "
                          "above the own-split one here means the music was familiar, not that the "
                          "performer did not matter.")
