"""Sections that rebuild a run's model: permutation importance by feature family, loss landscape and
attention rollout. Each uses the first `ctx.max_runs` (importance) or first (model plots) runs of a
variant that it applies to, and says so when none does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from pianolab.evaluate import plots
from pianolab.evaluate.context import Context, Probe, slug
from pianolab.evaluate.sections import SECTIONS, SectionResult, frame_table, image, md_table


def z_target(probe: Probe) -> torch.Tensor:
    """Labels standardised like the training targets (the scale of the model's outputs)."""
    return torch.from_numpy((probe.y - probe.y_mean) / probe.y_std).float().to(probe.device)


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(pred.float(), target)


@SECTIONS.register("feature_importance")
def importance_section(ctx: Context) -> SectionResult:
    """Permutation importance of feature families on the runs' test folds (vector inputs only)."""
    from pianolab.evaluate.importance import feature_families, permutation_importance

    res = SectionResult([f"Drop in mean Pearson r when one feature family's columns are shuffled jointly on the "
                         f"test fold (3 permutations), averaged over the first {ctx.max_runs} run(s) of each "
                         "variant; families are feature-name prefixes (e.g. `symbolic:velocity`)."])
    for v in ctx.variants:
        runs = ctx.selected(v, lambda r: r.has_vector)
        if not runs:
            res.lines += ["", f"### {v}", "", ctx.skip_note(v, lambda r: r.has_vector, "Not applicable: the "
                                                           "model has no vector (feature) inputs.")]
            continue
        tables = []
        for r in runs:
            vp = ctx.vector_probe(r)
            imp = permutation_importance(vp.predict, vp.X, vp.y, "pearson", feature_families(vp.names),
                                         n_repeats=3, seed=0, groups=vp.groups)
            tables.append(imp.table)
        table = (pd.concat(tables).groupby("family", as_index=False)
                 .agg(importance=("importance_mean", "mean"), sd=("importance_std", "mean"),
                      n_features=("n_features", "first"))
                 .sort_values("importance", ascending=False, ignore_index=True))
        res.numbers[v] = dict(zip(table["family"], table["importance"].astype(float), strict=True))
        fig, axes = plots.figure(panel=(6, 0.6 + 0.28 * len(table)))
        axes[0, 0].barh(table["family"][::-1], table["importance"][::-1], xerr=table["sd"][::-1])
        axes[0, 0].set(xlabel="drop in Pearson r when shuffled", title=f"permutation importance: {v}")
        path = plots.save(fig, ctx.path(slug(v)), "permutation_importance")
        res.plots.append(path)
        res.lines += ["", f"### {v} ({len(runs)} run(s))", ""] + frame_table(table) + ["", image(ctx, path)]
    return res


def landscape(probe: Probe, out_dir, steps_1d: int = 21, steps_2d: int = 9) -> tuple[list[str], dict, list]:
    """1-D and 2-D filter-normalised slices of the test-batch MSE (standardised targets)."""
    from pianolab.evaluate.diagnostics import loss_landscape

    batch = {**probe.batch, "target": z_target(probe)}
    one = loss_landscape(probe.model, mse_loss, batch, steps=steps_1d, out_dir=out_dir)
    two = loss_landscape(probe.model, mse_loss, batch, directions=2, steps=steps_2d, seed=1, out_dir=out_dir)
    mid = steps_1d // 2
    edge = float(np.mean([one.losses[0], one.losses[-1]]))
    half = float(np.mean([one.losses[mid // 2], one.losses[mid + (mid + 1) // 2]]))
    nums = {"center_loss": one.center_loss, "loss_at_half_span": half, "loss_at_span": edge,
            "min_1d": float(one.losses.min()), "max_2d": float(two.losses.max())}
    lines = [f"{len(probe.y)} test items; MSE on standardised targets. Loss at the trained weights "
             f"{one.center_loss:.4f}; along a random filter-normalised direction at ±0.5: {half:.4f}, at ±1: "
             f"{edge:.4f}; 1-D minimum {one.losses.min():.4f}; 2-D slice maximum {two.losses.max():.4f}."]
    return lines, nums, [one.plot, two.plot]


@SECTIONS.register("loss_landscape")
def landscape_section(ctx: Context) -> SectionResult:
    """Li et al. (2018) random-direction slices around the final weights of each variant's first run."""
    res = SectionResult()
    for v in ctx.variants:
        runs = ctx.selected(v, lambda r: r.neural)[:1]
        res.lines += ["", f"### {v}", ""]
        if not runs:
            res.lines.append(ctx.skip_note(v, lambda r: r.neural, "Not applicable: a scikit-learn estimator has "
                                              "no weights to perturb."))
            continue
        lines, nums, paths = landscape(ctx.probe(runs[0]), ctx.path(slug(v)))
        res.lines += [f"Run {runs[0].folder.name}: " + lines[0], ""] + [image(ctx, p) for p in paths]
        res.numbers[v], res.plots = nums, res.plots + paths
    return res


def supports_rollout(model) -> bool:
    return hasattr(model, "attention_maps") and hasattr(getattr(model, "encoder", None), "patch_embed")


def rollout(probe: Probe, out_dir, n: int = 3) -> tuple[list[str], dict, list]:
    """Attention rollout of [CLS] over the patch grid for the first `n` items, overlaid on their
    spectrograms; numbers: the share of attention per frequency quarter (low to high)."""
    from pianolab.evaluate.diagnostics import attention_rollout, plot_rollout_overlay, rollout_patch_map

    batch = {k: t[:n] for k, t in probe.batch.items()}
    model = probe.model.eval()
    with torch.no_grad():
        f, t = model.encoder.patch_embed(batch["spec"]).shape[-2:]
        r = attention_rollout(model.attention_maps(batch))
    maps = rollout_patch_map(r, (t, f)).transpose(0, 2, 1)  # tokens are time-major: (B, t, f) -> (B, f, t)
    spec = batch["spec"][:, 0].cpu().numpy()
    path = plot_rollout_overlay(spec, maps, out_dir, titles=probe.stems[:n])
    quarters = np.array_split(np.arange(f), min(4, f))
    share = np.array([[m[q].sum() / m.sum() for q in quarters] for m in maps]).mean(0)
    rows = [[f"Q{i + 1} (patch rows {q[0]}–{q[-1]})", float(share[i])] for i, q in enumerate(quarters)]
    lines = [f"[CLS] attention rollout (heads averaged, residual added) over a {f} × {t} patch grid for "
             f"{len(spec)} test performances; it shows which time–frequency regions feed the pooled "
             "representation shared by all 19 outputs (not one map per dimension).", ""]
    return lines + md_table(["frequency quarter (low → high)", "share of attention"], rows), \
        {"frequency_share": share.tolist()}, [path]


@SECTIONS.register("attention_rollout")
def rollout_section(ctx: Context) -> SectionResult:
    """Attention rollout overlays for 3 test performances of each variant's first AST/hybrid run."""
    res = SectionResult()
    for v in ctx.variants:
        runs = ctx.selected(v, lambda r: r.has_spectrogram)[:1]
        res.lines += ["", f"### {v}", ""]
        not_applicable = ("Not applicable: needs a spectrogram transformer with a patch grid (AST or hybrid; not "
                          "vector models, estimators or the multi-scale encoder).")
        if not runs:
            res.lines.append(ctx.skip_note(v, lambda r: r.has_spectrogram, not_applicable))
            continue
        probe = ctx.probe(runs[0])
        if not supports_rollout(probe.model):
            res.lines.append(not_applicable)
            continue
        lines, nums, paths = rollout(probe, ctx.path(slug(v)))
        res.lines += lines + [""] + [image(ctx, p) for p in paths]
        res.numbers[v], res.plots = nums, res.plots + paths
    return res

