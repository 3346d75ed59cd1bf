"""Continual learning of new perceptual dimensions (issue 23 §3): learn some, add the rest, forget little.

Phase 1 trains the neural model on the `continual.first` dimensions only (a head with that many
outputs; the other dimensions' labels never reach it). Phase 2 grows the head to all 19 outputs (the
old rows copied, the new ones freshly initialised) and trains on the new dimensions with a registered
strategy (`STRATEGIES`):

- `naive`: the new dimensions' loss only (the body drifts: forgetting);
- `replay`: plus the old dimensions' loss on a fixed buffer of `replay_fraction` of the phase-1 items,
  kept with their old labels;
- `ewc`: plus `ewc_lambda / 2 * sum F (theta - theta*)^2`, F the diagonal Fisher of the phase-1 model
  (mean squared per-item gradient of its squared error on the phase-1 items), theta* its weights;
- `lwf`: plus `lwf_weight` x the squared distance of the old outputs to the phase-1 model's outputs
  on the phase-2 items (no old labels);
- `joint`: one phase on all 19 dimensions from the start (the upper bound).

Each phase runs `train.epochs` epochs (and `train.max_seconds`, early stopping on the phase's own
dimensions of the validation carve-out). The run's predictions are the final model's for all 19, so
the A/B engine compares strategies as usual; `continual.json` in the run folder records the test
fold's mean Pearson r on the first dimensions after phase 1 and after phase 2 (forgetting = the drop)
and on the new dimensions. Both phases use the same training items.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pianolab.atomic import atomic_path
from pianolab.config import RunConfig
from pianolab.data.percepiano import DIMENSIONS, N_DIMS
from pianolab.errors import PianolabError
from pianolab.registry import Registry
from pianolab.train.trainer import Tensors, Trainer

if TYPE_CHECKING:
    from pianolab.train.run import Cell, Neural

RESULT_FILE = "continual.json"


def category(dim: str) -> str:
    """A dimension's category: its name without the two poles (`music_making_fast_slow` -> `music_making`)."""
    return dim.rsplit("_", 2)[0]


CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(category(d) for d in DIMENSIONS))


def first_dimensions(names: tuple[str, ...] | list[str]) -> np.ndarray:
    """Sorted indices of the dimensions `names` gives (dimension names or categories); at least one
    dimension, not all 19."""
    idx = set()
    for n in names:
        if n in DIMENSIONS:
            idx.add(DIMENSIONS.index(n))
        elif n in CATEGORIES:
            idx |= {i for i, d in enumerate(DIMENSIONS) if category(d) == n}
        else:
            raise PianolabError(f"continual.first: unknown dimension or category {n!r}; categories: "
                                f"{', '.join(CATEGORIES)} (or any of the 19 dimension names)")
    if not idx or len(idx) == N_DIMS:
        raise PianolabError(f"continual.first must name some but not all of the {N_DIMS} dimensions, got "
                            f"{len(idx)}")
    return np.array(sorted(idx))


@dataclass(frozen=True)
class Phase2:
    """What phase 2 adds to the new dimensions' loss: `aux` targets of the old outputs with a row
    `mask` (N,) and weight, and a parameter `penalty` (model -> scalar), each optional."""

    aux: torch.Tensor | None = None  # (N, n_old) standardised
    mask: torch.Tensor | None = None  # (N,) 1 where a row's aux counts
    weight: float = 0.0
    penalty: Callable[[torch.nn.Module], torch.Tensor] | None = None


@dataclass
class Context:
    """What a strategy may use when phase 2 starts: the config, the phase-1 model and its training
    data (inputs with the old dimensions' targets), the grown model, the phase-2 inputs and the old
    dimensions' indices."""

    cfg: RunConfig
    phase1: torch.nn.Module
    phase1_train: Tensors
    model: torch.nn.Module
    train: Tensors
    old: np.ndarray
    device: torch.device


@dataclass(frozen=True)
class Strategy:
    """`phases`: 1 (joint) or 2; `phase2(ctx)` the extra terms of phase 2; `option`: its own config key."""

    phases: int
    phase2: Callable[[Context], Phase2] | None = None
    option: str | None = None


STRATEGIES: Registry[Strategy] = Registry("continual strategy")
STRATEGIES.add("joint", Strategy(1))
STRATEGIES.add("naive", Strategy(2, lambda ctx: Phase2()))


def _replay(ctx: Context) -> Phase2:
    """A fixed buffer (drawn with the run's seed) of phase-1 items keeps its old labels."""
    n = len(ctx.train)
    k = max(1, int(round(ctx.cfg.continual.replay_fraction * n)))
    rows = np.random.default_rng(ctx.cfg.train.seed + 104729).choice(n, size=k, replace=False)
    mask = torch.zeros(n, device=ctx.device)
    mask[torch.as_tensor(rows, device=ctx.device)] = 1.0
    return Phase2(ctx.phase1_train.target * mask[:, None], mask, 1.0)


def _lwf(ctx: Context) -> Phase2:
    """The phase-1 model's own outputs on the phase-2 items become the old outputs' targets."""
    aux = predict(ctx.phase1, ctx.train, ctx.device)
    return Phase2(torch.from_numpy(aux).to(ctx.device), torch.ones(len(ctx.train), device=ctx.device),
                  ctx.cfg.continual.lwf_weight)


def _ewc(ctx: Context) -> Phase2:
    fisher = grow(fisher_diagonal(ctx.phase1, ctx.phase1_train), ctx.model, ctx.old, fill=0.0)
    anchor = {k: v.detach().clone() for k, v in ctx.model.named_parameters()}
    return Phase2(penalty=ewc_penalty(fisher, anchor, ctx.cfg.continual.ewc_lambda))


STRATEGIES.add("replay", Strategy(2, _replay, "replay_fraction"))
STRATEGIES.add("ewc", Strategy(2, _ewc, "ewc_lambda"))
STRATEGIES.add("lwf", Strategy(2, _lwf, "lwf_weight"))


# ---- pieces ------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: torch.nn.Module, data: Tensors, device: torch.device, chunk: int = 256) -> np.ndarray:
    """`model`'s outputs (N, out) on `data` in eval mode (float32)."""
    model.eval()
    out = [model(data.take(torch.arange(s, min(s + chunk, len(data)), device=device))).float()
           for s in range(0, len(data), chunk)]
    return torch.cat(out).cpu().numpy() if out else np.empty((0, 0), np.float32)


def grow(old: dict[str, torch.Tensor], model: torch.nn.Module, rows: np.ndarray,
         fill: float | None = None) -> dict[str, torch.Tensor]:
    """`old` (a phase-1 model's parameters or buffers by name) in the shapes of `model`'s: equal shapes
    copied, a tensor with len(rows) leading rows where `model`'s has 19 goes to `rows`; the other rows
    keep `model`'s values (`fill` None) or `fill`."""
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    out = {}
    for name, value in old.items():
        target = own[name].detach()
        if value.shape == target.shape:
            out[name] = value.detach().clone()
        elif value.shape[0] == len(rows) and value.shape[1:] == target.shape[1:]:
            grown = target.clone() if fill is None else torch.full_like(target, fill)
            grown[torch.as_tensor(rows, device=grown.device)] = value.detach().to(grown.dtype)
            out[name] = grown
        else:
            raise PianolabError(f"continual: cannot grow {name} from {tuple(value.shape)} to {tuple(target.shape)}")
    return out


def shrink(model: torch.nn.Module, rows: np.ndarray) -> dict[str, torch.Tensor]:
    """`model`'s state with the head's 19-row tensors cut to `rows` (a phase-1 model of the same init)."""
    out = {}
    for name, value in model.state_dict().items():
        out[name] = value[torch.as_tensor(rows, device=value.device)] \
            if value.ndim and value.shape[0] == N_DIMS and _is_head(name) else value
    return out


def _is_head(name: str) -> bool:
    return name.startswith("head.")


def fisher_diagonal(model: torch.nn.Module, data: Tensors, chunk: int = 64) -> dict[str, torch.Tensor]:
    """Diagonal Fisher of `model` under a unit-variance Gaussian likelihood: the mean over the items of
    `data` of the squared gradient of that item's squared error (per-item gradients by torch.func),
    in eval mode."""
    from torch.func import functional_call, grad, vmap

    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def item_loss(p, batch, y):
        pred = functional_call(model, (p, buffers), ({k: v[None] for k, v in batch.items()},))
        return 0.5 * ((pred[0].float() - y) ** 2).sum()

    per_item = vmap(grad(item_loss), in_dims=(None, 0, 0))
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for s in range(0, len(data), chunk):
        idx = torch.arange(s, min(s + chunk, len(data)), device=data.target.device)
        g = per_item(params, data.take(idx), data.target[idx])
        for k in total:
            total[k] += (g[k].float() ** 2).sum(0)
    return {k: v / max(len(data), 1) for k, v in total.items()}


def ewc_penalty(fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor],
                lam: float) -> Callable[[torch.nn.Module], torch.Tensor]:
    """model -> lam / 2 * sum_i F_i (theta_i - theta*_i)^2 (zero at the anchor)."""

    def penalty(model: torch.nn.Module) -> torch.Tensor:
        terms = [(fisher[k] * (p - anchor[k]) ** 2).sum() for k, p in model.named_parameters() if k in fisher]
        return 0.5 * lam * torch.stack(terms).sum()

    return penalty


class Phase2Trainer(Trainer):
    """The run's trainer whose loss is the objective on the new outputs plus the strategy's terms.
    Targets: (N, n_new) new labels, then the aux targets (n_old) and the mask column."""

    def setup(self, new: np.ndarray, old: np.ndarray, extra: Phase2) -> None:
        self.new = torch.as_tensor(new, device=self.device)
        self.old = torch.as_tensor(old, device=self.device)
        self.extra = extra

    def _forward_loss(self, batch: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            pred = self.model(batch)
        pred, k = pred.float(), len(self.new)
        loss = self.loss_fn(pred[:, self.new], target[:, :k])
        if self.extra.aux is not None:
            aux, mask = target[:, k:-1], target[:, -1]
            err = ((pred[:, self.old] - aux) ** 2).mean(1)
            loss = loss + self.extra.weight * (mask * err).sum() / mask.sum().clamp_min(1.0)
        if self.extra.penalty is not None:
            loss = loss + self.extra.penalty(self.model)
        return loss


# ---- the two phases ----------------------------------------------------------------------------
def _train(trainer: Trainer, train: Tensors, val: Tensors, cols: np.ndarray | None, cfg: RunConfig,
           metric, log, phase: int, offset: int) -> None:
    """Epochs of `trainer` as in `train.run` (early stopping on `val`, predictions cut to `cols`)."""
    started = time.perf_counter()
    while trainer.epoch < cfg.train.epochs and not trainer.should_stop:
        rec = trainer.train_epoch(train)
        if len(val) and trainer.epoch % cfg.train.eval_every == 0:
            pred = trainer.predict(val)
            rec.update(trainer.validate(val, metric, pred=pred if cols is None else pred[:, cols]))
        log({**rec, "epoch": offset + rec["epoch"], "phase": phase})
        if cfg.train.max_seconds is not None and time.perf_counter() - started > cfg.train.max_seconds:
            break
    trainer.restore_best()


def _targets(data: Tensors, target: torch.Tensor) -> Tensors:
    """`data`'s inputs with other targets."""
    if type(data) is not Tensors:
        raise PianolabError("continual learning runs one cell at a time (not with shared spectrogram rows)")
    return Tensors(data.batch, target)


def _mean_r(y: np.ndarray, p: np.ndarray) -> float:
    from pianolab.evaluate.metrics import nanmean, pearson_cols

    return nanmean(pearson_cols(y, p)) if len(y) > 1 else float("nan")


def fit_continual(cell: Cell, net: Neural, device: torch.device, log: Callable[[dict], None],
                  metric: Callable[[np.ndarray, np.ndarray], float]) -> dict:
    """Train `net.model` (built for all 19 outputs) by `cell.cfg.continual`; leaves the final weights in
    it (and in `net.trainer`, for the run's predictions) and returns what it writes to continual.json."""
    from pianolab.models import create_model

    cfg = cell.cfg
    strategy = STRATEGIES.get(cfg.continual.strategy)
    old = first_dimensions(cfg.continual.first)
    new = np.setdiff1d(np.arange(N_DIMS), old)
    steps = max(1, len(net.train) // cfg.train.batch_size)
    y_test = cell.dataset.labels[cell.roles.test]
    result: dict = {"strategy": cfg.continual.strategy, "first": [DIMENSIONS[i] for i in old],
                    "new": [DIMENSIONS[i] for i in new], "split": "test fold", "metric": "mean Pearson r"}
    if strategy.phases == 1:
        _train(net.trainer, net.train, net.val, None, cfg, metric, log, 0, 0)
        p = predict(net.model, net.test, device)
    else:
        model1 = create_model(cfg.model.name, n_outputs=len(old), **net.shape_kw, **cfg.model.params).to(device)
        model1.load_state_dict(shrink(net.model, old))  # the same initial weights as the joint model
        train1 = _targets(net.train, net.train.target[:, old])
        val1 = _targets(net.val, net.val.target[:, old]) if len(net.val) else net.val
        trainer1 = Trainer(cfg, model1, device, steps)
        _train(trainer1, train1, val1, None, cfg, metric, log, 1, 0)
        p1 = predict(model1, net.test, device)
        result["first_after_phase1"] = _mean_r(y_test[:, old], p1)
        state = grow(model1.state_dict(), net.model, old)
        net.model.load_state_dict(state)
        ctx = Context(cfg, model1, train1, net.model, net.train, old, device)
        extra = strategy.phase2(ctx)
        aux = torch.zeros(len(net.train), len(old), device=device) if extra.aux is None else extra.aux
        mask = torch.zeros(len(net.train), device=device) if extra.mask is None else extra.mask
        train2 = _targets(net.train, torch.cat([net.train.target[:, new], aux, mask[:, None]], 1))
        val2 = _targets(net.val, net.val.target[:, new]) if len(net.val) else net.val
        trainer2 = Phase2Trainer(cfg, net.model, device, steps)
        trainer2.setup(new, old, extra)
        _train(trainer2, train2, val2, new, cfg, metric, log, 2, trainer1.epoch)
        net.trainer.best_state = None  # the run's predictions: phase 2's (restored) weights
        p = predict(net.model, net.test, device)
    result["first_after_phase2"] = _mean_r(y_test[:, old], p[:, old]) if len(p) else float("nan")
    result["new_after_phase2"] = _mean_r(y_test[:, new], p[:, new]) if len(p) else float("nan")
    if "first_after_phase1" in result:
        result["forgetting"] = result["first_after_phase1"] - result["first_after_phase2"]
    if cell.folder is not None:
        with atomic_path(cell.folder / RESULT_FILE) as tmp:
            tmp.write_text(json.dumps(result, indent=1))
    return result


# ---- load-time checks and the summary table ----------------------------------------------------
def check(cfg: RunConfig) -> str | None:
    """Why `cfg.continual` cannot run (one line), or None."""
    c = cfg.continual
    if c.strategy == "none":
        return None
    if c.strategy not in STRATEGIES:
        return f"continual.strategy: unknown continual strategy {c.strategy!r}; valid: none, " \
               f"{', '.join(STRATEGIES.names())}"
    try:
        first_dimensions(c.first)
    except PianolabError as e:
        return str(e)
    if cfg.features.stack:
        return "continual: features.stack adds a 19-column prior to every output; phase 1 has fewer outputs"
    if cfg.regularize.mixup_prob > 0 or cfg.regularize.cutmix_prob > 0:
        return "continual: mixup/cutmix would mix phase 2's replay and distillation targets; turn them off"
    return None


def option_no_effect(cfg: RunConfig, option: str) -> bool:
    """Whether `continual.<option>` (replay_fraction, ewc_lambda, lwf_weight, first) does nothing."""
    name = cfg.continual.strategy
    if option == "first":
        return name == "none"
    own = STRATEGIES.get(name).option if name in STRATEGIES else None
    return own != option


def forgetting_table(folders: list[Path] | dict[str, list[Path]]) -> str:
    """Markdown table of continual.json over run folders, per variant: mean ± sd over cells of r on the
    first dimensions after phase 1 and 2, forgetting, r on the new dimensions (test folds)."""
    groups = folders if isinstance(folders, dict) else {"": folders}
    keys = ("first_after_phase1", "first_after_phase2", "forgetting", "new_after_phase2")
    lines = ["| variant | strategy | cells | first dims r after phase 1 | after phase 2 | forgetting | "
             "new dims r |", "|---|---|---|---|---|---|---|"]
    for variant, fs in groups.items():
        recs = [json.loads((f / RESULT_FILE).read_text()) for f in fs if (f / RESULT_FILE).is_file()]
        if not recs:
            continue
        cells = []
        for k in keys:
            v = np.array([r.get(k, np.nan) for r in recs], dtype=float)
            cells.append("—" if np.isnan(v).all() else f"{np.nanmean(v):.3f} ± {np.nanstd(v, ddof=1):.3f}"
                         if len(v) > 1 else f"{v[0]:.3f}")
        lines.append(f"| {variant} | {recs[0]['strategy']} | {len(recs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
