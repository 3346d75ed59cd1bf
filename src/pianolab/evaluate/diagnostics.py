"""Training diagnostics: learning curves, per-layer gradient norms, loss landscapes (Li et al.
2018) and attention rollout (Abnar & Zuidema 2020). Plots go to a given folder as PNG files.

Models are `nn.Module`s whose forward takes a dict batch and returns (B, 19); a `loss_fn` is
`loss_fn(pred, target) -> scalar tensor`.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pianolab.evaluate import plots

Records = Sequence[Mapping]
_SKIP_KEYS = frozenset({"epoch", "step", "seed", "fold"})


def read_records(source: str | Path | Records) -> list[dict]:
    """A metrics.jsonl path (one JSON object per line) or an in-memory list of records."""
    if isinstance(source, str | Path):
        lines = Path(source).read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    return [dict(r) for r in source]


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)


@dataclass(frozen=True)
class LearningCurves:
    """`table`: long DataFrame [metric, epoch, mean, std, n] over runs; `plot`: PNG path or None."""

    table: pd.DataFrame
    plot: Path | None


def learning_curves(
    runs: Sequence[str | Path | Records],
    keys: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
) -> LearningCurves:
    """Mean ± std (ddof=1; 0 for one run) per epoch over runs (seeds) of every numeric key.

    Each run is a metrics.jsonl path or a list of records; records without an `epoch` are skipped
    and, within a run, the last value logged for an (epoch, key) wins. `keys` limits the metrics.
    """
    rows = []
    for run_id, source in enumerate(runs):
        last: dict[tuple[int, str], float] = {}
        for rec in read_records(source):
            if "epoch" not in rec:
                continue
            for k, v in rec.items():
                if k not in _SKIP_KEYS and _is_number(v) and (keys is None or k in keys):
                    last[(int(rec["epoch"]), k)] = float(v)
        rows += [{"run": run_id, "epoch": e, "metric": k, "value": v} for (e, k), v in last.items()]
    if not rows:
        raise ValueError("learning_curves: no numeric records with an 'epoch' key")
    g = pd.DataFrame(rows).groupby(["metric", "epoch"])["value"]
    table = pd.concat({"mean": g.mean(), "std": g.std(ddof=1).fillna(0.0), "n": g.count()}, axis=1)
    table = table.reset_index()
    return LearningCurves(table, None if out_dir is None else _plot_curves(table, out_dir))


def _plot_curves(table: pd.DataFrame, out_dir: str | Path) -> Path:
    metrics = sorted(table["metric"].unique())
    fig, axes = plots.figure(*plots.grid_shape(len(metrics)))
    for ax, name in zip(axes.flat, metrics, strict=False):
        t = table[table["metric"] == name].sort_values("epoch")
        ax.plot(t["epoch"], t["mean"], lw=1.5)
        ax.fill_between(t["epoch"], t["mean"] - t["std"], t["mean"] + t["std"], alpha=0.25)
        ax.set(title=f"{name} (n={int(t['n'].max())})", xlabel="epoch")
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    return plots.save(fig, out_dir, "learning_curves")


def layer_grad_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of the gradient of each module's own parameters (after backward), one host sync.

    Keys are parameter names without the last component (e.g. 'blocks.0.attn.qkv').
    """
    sq: dict[str, list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            sq.setdefault(name.rpartition(".")[0] or name, []).append(p.grad.detach().float().pow(2).sum())
    if not sq:
        return {}
    norms = torch.stack([torch.stack(v).sum().sqrt() for v in sq.values()]).tolist()
    return dict(zip(sq, norms, strict=True))


@dataclass(frozen=True)
class GradientReport:
    """`table`: per layer [layer, n, first, last, median, max, vanishing, exploding];
    `history`: long [step, layer, norm]; `plot`: PNG path or None."""

    table: pd.DataFrame
    history: pd.DataFrame
    plot: Path | None


def gradient_analysis(
    records: str | Path | Records,
    vanish_below: float = 1e-6,
    explode_above: float = 1e3,
    out_dir: str | Path | None = None,
) -> GradientReport:
    """Per-layer gradient norms over training from records holding `grad_norms` ({layer: norm},
    e.g. from `layer_grad_norms`) and a `step` (else `epoch`, else the record's position). Records
    with only a scalar `grad_norm` (the trainer's per-epoch mean) count as one layer, 'total'.

    A layer is flagged vanishing when its median norm is below `vanish_below`, exploding when any
    norm is non-finite or above `explode_above`.
    """
    rows = []
    for i, rec in enumerate(read_records(records)):
        norms = rec.get("grad_norms") or ({"total": rec["grad_norm"]} if "grad_norm" in rec else {})
        step = rec.get("step", rec.get("epoch", i))
        rows += [{"step": step, "layer": k, "norm": float(v)} for k, v in norms.items()]
    if not rows:
        raise ValueError("gradient_analysis: no record has a 'grad_norms' or 'grad_norm' entry")
    history = pd.DataFrame(rows)
    stats = []
    for layer, h in history.groupby("layer", sort=False):
        n = h.sort_values("step")["norm"].to_numpy()
        fin = n[np.isfinite(n)]
        med = float(np.median(fin)) if len(fin) else float("nan")
        stats.append({
            "layer": layer, "n": len(n), "first": n[0], "last": n[-1], "median": med,
            "max": float(fin.max()) if len(fin) else float("nan"),
            "vanishing": bool(len(fin) and med < vanish_below),
            "exploding": bool(len(fin) < len(n) or (len(fin) and fin.max() > explode_above)),
        })
    table = pd.DataFrame(stats)
    plot = None
    if out_dir is not None:
        fig, axes = plots.figure(panel=(7, 4))
        for layer, h in history.groupby("layer", sort=False):
            h = h.sort_values("step")
            axes[0, 0].plot(h["step"], h["norm"].clip(lower=1e-12), lw=1, label=layer)
        axes[0, 0].set(yscale="log", xlabel="step", ylabel="grad norm", title="per-layer gradient norm")
        if history["layer"].nunique() <= 12:
            axes[0, 0].legend(fontsize=6)
        plot = plots.save(fig, out_dir, "gradient_norms")
    return GradientReport(table, history, plot)


def _filter_normalized_direction(
    params: list[torch.Tensor], gen: torch.Generator, ignore_1d: bool
) -> list[torch.Tensor]:
    """Gaussian direction, each filter (slice along dim 0) rescaled to its weight's norm;
    1-D parameters (biases, norms) get a zero direction when `ignore_1d`, as in Li et al."""
    out = []
    for p in params:
        d = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(device=p.device, dtype=p.dtype)
        if p.dim() <= 1:
            d = torch.zeros_like(p) if ignore_1d else d * (p.norm() / (d.norm() + 1e-10))
        else:
            pf, df = p.detach().reshape(p.shape[0], -1), d.reshape(p.shape[0], -1)
            d = (df * (pf.norm(dim=1) / (df.norm(dim=1) + 1e-10))[:, None]).reshape(p.shape)
        out.append(d)
    return out


@dataclass(frozen=True)
class Landscape:
    """`offsets` (steps,); `losses` (steps,) or (steps, steps) indexed [alpha, beta];
    `center_loss` the loss at the unperturbed weights; `plot` PNG path or None."""

    offsets: np.ndarray
    losses: np.ndarray
    center_loss: float
    plot: Path | None


def loss_landscape(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    target_key: str = "target",
    directions: int = 1,
    steps: int = 21,
    span: float = 1.0,
    seed: int = 0,
    ignore_1d: bool = True,
    out_dir: str | Path | None = None,
) -> Landscape:
    """Loss along 1 or 2 filter-normalised random directions around the current weights:
    L(θ + a·d1 [+ b·d2]) for a, b in linspace(-span, span, steps) (steps odd, so 0 is on the grid).

    The model runs in eval mode under no_grad; its weights and mode are restored afterwards.
    """
    if directions not in (1, 2):
        raise ValueError("loss_landscape: directions must be 1 or 2")
    if steps < 3 or steps % 2 == 0:
        raise ValueError("loss_landscape: steps must be odd and >= 3 (so offset 0 is on the grid)")
    params = list(model.parameters())
    origin = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(seed)
    dirs = [_filter_normalized_direction(params, gen, ignore_1d) for _ in range(directions)]
    offsets = np.linspace(-span, span, steps)
    offsets[steps // 2] = 0.0
    grid = np.stack(np.meshgrid(*[offsets] * directions, indexing="ij"), axis=-1).reshape(-1, directions)
    was_training = model.training
    model.eval()
    losses = []
    try:
        with torch.no_grad():
            for coef in grid:
                for i, p in enumerate(params):
                    p.copy_(origin[i] + sum(float(c) * d[i] for c, d in zip(coef, dirs, strict=True)))
                losses.append(float(loss_fn(model(batch), batch[target_key])))
    finally:
        with torch.no_grad():
            for p, o in zip(params, origin, strict=True):
                p.copy_(o)
        model.train(was_training)
    losses = np.array(losses).reshape([steps] * directions)
    center = float(losses[(steps // 2,) * directions])
    plot = None if out_dir is None else _plot_landscape(offsets, losses, out_dir)
    return Landscape(offsets, losses, center, plot)


def _plot_landscape(offsets: np.ndarray, losses: np.ndarray, out_dir: str | Path) -> Path:
    fig, axes = plots.figure(panel=(5, 4))
    ax = axes[0, 0]
    if losses.ndim == 1:
        ax.plot(offsets, losses, marker=".")
        ax.set(xlabel="offset along d1", ylabel="loss")
    else:
        cs = ax.contourf(offsets, offsets, losses.T, levels=20)
        fig.colorbar(cs, ax=ax, label="loss")
        ax.set(xlabel="d1", ylabel="d2")
    ax.set_title(f"loss landscape ({losses.ndim}-D, filter-normalised)")
    return plots.save(fig, out_dir, f"loss_landscape_{losses.ndim}d")


_HEAD_FUSION: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda a: a.mean(dim=1),
    "max": lambda a: a.amax(dim=1),
    "min": lambda a: a.amin(dim=1),
}


def attention_rollout(
    attentions: Sequence[torch.Tensor], head_fusion: str = "mean", residual: bool = True
) -> torch.Tensor:
    """Attention rollout over layers: list of (B, heads, T, T) -> (B, T, T), rows summing to one.

    Per layer the heads are fused, the residual path added as 0.5·A + 0.5·I (when `residual`),
    rows renormalised, and the layers multiplied from the first: R = Â_L ··· Â_1.
    """
    if not attentions:
        raise ValueError("attention_rollout: no attention maps given")
    fuse = _HEAD_FUSION.get(head_fusion)
    if fuse is None:
        raise ValueError(f"unknown head_fusion {head_fusion!r}; valid: {', '.join(sorted(_HEAD_FUSION))}")
    rollout = None
    for att in attentions:
        a = fuse(torch.as_tensor(att).detach().to(torch.float64))
        if residual:
            a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    return rollout


def rollout_patch_map(rollout: torch.Tensor, grid: tuple[int, int], n_prefix: int = 1) -> np.ndarray:
    """Attention of token 0 ([CLS]) to the patch tokens, reshaped to the patch grid:
    (B, T, T) -> (B, freq_patches, time_patches). Patches must follow `n_prefix` special tokens in
    row-major (frequency, time) order, as `conv(x).flatten(2)` produces them."""
    row = rollout[:, 0, n_prefix:].cpu().numpy()
    if row.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"rollout has {row.shape[1]} patch tokens, grid {grid} needs {grid[0] * grid[1]}")
    return row.reshape(len(row), *grid)


def plot_rollout_overlay(
    spectrograms: np.ndarray,
    maps: np.ndarray,
    out_dir: str | Path,
    titles: Sequence[str] | None = None,
    name: str = "attention_rollout",
) -> Path:
    """Overlay rollout maps (N, Fp, Tp) on spectrograms (N, F, T): one panel per performance.
    The map is stretched over the spectrogram's extent (approximate for overlapping patches)."""
    fig, axes = plots.figure(*plots.grid_shape(len(spectrograms)), panel=(4.5, 3))
    for i, ax in enumerate(axes.flat):
        if i >= len(spectrograms):
            ax.set_visible(False)
            continue
        spec = np.asarray(spectrograms[i])
        extent = (0, spec.shape[1], 0, spec.shape[0])
        ax.imshow(spec, origin="lower", aspect="auto", cmap="gray", extent=extent)
        ax.imshow(maps[i], origin="lower", aspect="auto", cmap="magma", alpha=0.5, extent=extent)
        ax.set(title=titles[i] if titles else f"item {i}", xlabel="frame", ylabel="bin")
    return plots.save(fig, out_dir, name)
