"""Training objectives (losses) over standardised targets, registered by name in `OBJECTIVES`.

`make_objective(name, dim_weights=None, **kw)` returns an `Objective`: called with pred, target
(B, D) it returns a scalar, the `dim_weights`-weighted mean (default: plain mean) of the per-dimension
losses (D,). Losses are computed in float32, with no host syncs, and are `torch.compile`-friendly.
Targets arrive standardised with training-fold statistics, so margins below are in standard deviations.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pianolab.errors import PianolabError
from pianolab.registry import Registry

PerDim = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (B, D), (B, D) -> (D,)
OBJECTIVES: Registry[Callable[..., PerDim]] = Registry("objective")


@OBJECTIVES.register("mse")
def mse() -> PerDim:
    """Mean squared error per dimension."""
    return lambda pred, target: (pred - target).square().mean(0)


@OBJECTIVES.register("huber")
def huber(delta: float = 1.0) -> PerDim:
    """Huber loss (quadratic within `delta`, linear outside) per dimension."""
    return lambda pred, target: F.huber_loss(pred, target, reduction="none", delta=delta).mean(0)


@OBJECTIVES.register("focal_mse")
def focal_mse(gamma: float = 1.0) -> PerDim:
    """Focal MSE: each squared error is weighted by |err|^gamma (detached), normalised to mean 1 per
    dimension in the batch, so the loss keeps MSE's scale while hard examples (large |err|) get more
    of the gradient. gamma=0 is plain MSE."""

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        err = pred - target
        w = err.detach().abs().pow(gamma)
        w = w / w.mean(0, keepdim=True).clamp_min(1e-12)
        return (w * err.square()).mean(0)

    return loss


@OBJECTIVES.register("correlation")
def correlation(eps: float = 1e-8) -> PerDim:
    """1 - Pearson r between prediction and target within the batch, per dimension (0 = perfectly
    correlated, 1 = uncorrelated, 2 = anti-correlated). Blind to offset and scale."""

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, t = pred - pred.mean(0), target - target.mean(0)
        r = (p * t).sum(0) / (p.square().sum(0) * t.square().sum(0)).clamp_min(eps).sqrt()
        return 1.0 - r

    return loss


@OBJECTIVES.register("ranking")
def ranking(kind: str = "logistic", margin: float = 0.5, temperature: float = 1.0,
            min_gap: float = 0.0) -> PerDim:
    """Pairwise ranking loss within the batch, per dimension: over every ordered pair (i, j) with
    target_i - target_j > min_gap, `logistic` = softplus(-(pred_i - pred_j) / temperature) (RankNet) or
    `hinge` = relu(margin - (pred_i - pred_j)); averaged over those pairs."""
    if kind not in ("logistic", "hinge"):
        raise PianolabError(f"ranking kind must be 'logistic' or 'hinge', got {kind!r}")

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dp = pred[:, None, :] - pred[None, :, :]  # (B, B, D)
        pairs = ((target[:, None, :] - target[None, :, :]) > min_gap).to(pred.dtype)
        per_pair = F.softplus(-dp / temperature) if kind == "logistic" else F.relu(margin - dp)
        return (pairs * per_pair).sum((0, 1)) / pairs.sum((0, 1)).clamp_min(1.0)

    return loss


@OBJECTIVES.register("combined")
def combined(mse: float = 1.0, correlation: float = 0.5, ranking: float = 0.5) -> PerDim:
    """mse * MSE + correlation * (1 - r) + ranking * logistic ranking loss, per dimension."""
    parts = [(w, OBJECTIVES.get(n)()) for n, w in
             (("mse", mse), ("correlation", correlation), ("ranking", ranking)) if w]
    if not parts:
        raise PianolabError("combined objective: give at least one non-zero weight")
    return lambda pred, target: sum(w * fn(pred, target) for w, fn in parts)


class Objective:
    """Scalar loss = sum_d w_d * loss_d(pred, target) with w normalised to sum 1 (uniform by default)."""

    def __init__(self, name: str, per_dim: PerDim, dim_weights: Sequence[float] | None = None):
        self.name, self.per_dim_fn = name, per_dim
        self.weights = None
        if dim_weights is not None:
            w = torch.as_tensor(np.asarray(dim_weights, dtype=np.float32))
            if w.ndim != 1 or bool((w < 0).any()) or float(w.sum()) <= 0:
                raise PianolabError("dim_weights: one non-negative weight per dimension, positive sum")
            self.weights = w / w.sum()

    def per_dim(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(D,) float32 losses."""
        return self.per_dim_fn(pred.float(), target.float())

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses = self.per_dim(pred, target)
        if self.weights is None:
            return losses.mean()
        if self.weights.device != losses.device:  # moved once, on the first call
            self.weights = self.weights.to(losses.device)
        return (losses * self.weights).sum()


def make_objective(name: str, dim_weights: Sequence[float] | None = None, **kw) -> Objective:
    """The objective `name` with options `kw` (unknown options: PianolabError listing valid ones)."""
    factory = OBJECTIVES.get(name)
    valid = list(inspect.signature(factory).parameters)
    unknown = sorted(set(kw) - set(valid))
    if unknown:
        raise PianolabError(f"objective {name!r} does not accept {', '.join(unknown)}; "
                            f"valid: {', '.join(valid) or '(none)'}")
    return Objective(name, factory(**kw), dim_weights)


def shrink_targets(y, mean, factor: float):
    """Label smoothing for regression: y + factor * (mean - y), i.e. pull each target toward the
    training-fold mean by `factor` in [0, 1) (0 = unchanged). With standardised targets mean = 0, so
    this scales targets by (1 - factor): the model is discouraged from confident extreme predictions
    on noisy ratings. Works on numpy arrays and tensors; apply to training targets only."""
    if not 0.0 <= factor < 1.0:
        raise PianolabError(f"label smoothing factor must be in [0, 1), got {factor}")
    return y + factor * (mean - y)
