"""Adversarial inputs within an L-infinity budget: FGSM and PGD on a differentiable input tensor
of a dict batch (e.g. the spectrogram), and a black-box worst case for feature models.

`loss_fn(pred, target) -> scalar tensor`; models take the dict batch and return (B, 19).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _input_grad(model: nn.Module, key: str, batch: Mapping, x: torch.Tensor, target, loss_fn) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(model({**batch, key: x}), target)
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def _clamp(x: torch.Tensor, clamp: tuple[float, float] | None) -> torch.Tensor:
    return x if clamp is None else x.clamp(*clamp)


def _eval_mode(model: nn.Module) -> bool:
    was = model.training
    model.eval()
    return was


def fgsm(
    model: nn.Module,
    batch_key: str,
    batch: Mapping[str, torch.Tensor],
    target: torch.Tensor,
    loss_fn: LossFn,
    eps: float,
    clamp: tuple[float, float] | None = None,
) -> dict[str, torch.Tensor]:
    """Fast gradient sign method: a copy of `batch` whose `batch_key` is x + eps·sign(∇x loss)
    (optionally clamped to a valid range). The model runs in eval mode; weights are untouched."""
    was = _eval_mode(model)
    try:
        x = batch[batch_key]
        adv = _clamp(x + eps * _input_grad(model, batch_key, batch, x, target, loss_fn).sign(), clamp)
    finally:
        model.train(was)
    return {**batch, batch_key: adv.detach()}


def pgd(
    model: nn.Module,
    batch_key: str,
    batch: Mapping[str, torch.Tensor],
    target: torch.Tensor,
    loss_fn: LossFn,
    eps: float,
    alpha: float | None = None,
    steps: int = 10,
    random_start: bool = True,
    seed: int = 0,
    clamp: tuple[float, float] | None = None,
) -> dict[str, torch.Tensor]:
    """Projected gradient descent (Madry et al.): `steps` signed-gradient steps of size `alpha`
    (default 2.5·eps/steps), each projected back into the L-inf ball of radius eps around x."""
    alpha = 2.5 * eps / steps if alpha is None else alpha
    x0 = batch[batch_key].detach()
    was = _eval_mode(model)
    try:
        x = x0.clone()
        if random_start:
            gen = torch.Generator().manual_seed(seed)
            noise = torch.rand(x0.shape, generator=gen, dtype=torch.float64) * 2 - 1
            x = _clamp(x0 + eps * noise.to(device=x0.device, dtype=x0.dtype), clamp)
        for _ in range(steps):
            x = x + alpha * _input_grad(model, batch_key, batch, x, target, loss_fn).sign()
            x = _clamp(torch.minimum(torch.maximum(x, x0 - eps), x0 + eps), clamp).detach()
    finally:
        model.train(was)
    return {**batch, batch_key: x}


@dataclass(frozen=True)
class FeatureAttack:
    """`X_adv` (items, features) within the budget; `loss_clean`, `loss_adv` (items,) item MSE."""

    X_adv: np.ndarray
    loss_clean: np.ndarray
    loss_adv: np.ndarray


def feature_worst_case(
    predict_fn: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    lo: np.ndarray | float,
    hi: np.ndarray | float,
    eps: float,
    n_random: int = 8,
    seed: int = 0,
) -> FeatureAttack:
    """Worst-case perturbation of feature inputs for black-box models (trees, sklearn pipelines).

    Each feature may move by δ_j = eps·(hi_j − lo_j) and must stay in its natural range [lo, hi].
    Candidates: the corner whose sign per feature is the one that raised the item's loss more when
    probing that feature alone by ±δ_j (the exact worst case of a one-output linear model when no
    range bound clips the box), plus
    `n_random` random corners. Per item the candidate with the highest MSE over dims is kept
    (the clean input included, so loss_adv >= loss_clean). Costs 2·features + n_random + 2 calls'
    worth of rows, batched into a few predict_fn calls.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(len(X), -1)
    n, f = X.shape
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (f,))
    hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (f,))
    delta = eps * (hi - lo)
    box_lo, box_hi = np.maximum(X - delta, lo), np.minimum(X + delta, hi)

    def item_loss(Xs: np.ndarray) -> np.ndarray:
        k = len(Xs) // n
        pred = np.asarray(predict_fn(Xs), dtype=np.float64).reshape(k, n, -1)
        return ((pred - y[None]) ** 2).mean(axis=-1)  # (k, n)

    probes = np.repeat(X[None], 2 * f, axis=0)  # (2f, n, f): feature j up, then feature j down
    probes[np.arange(f), :, np.arange(f)] = box_hi.T
    probes[f + np.arange(f), :, np.arange(f)] = box_lo.T
    probe_loss = item_loss(probes.reshape(-1, f))  # (2f, n)
    up = (probe_loss[:f] >= probe_loss[f:]).T  # (n, f)
    rng = np.random.default_rng(seed)
    signs = [up] + [rng.random((n, f)) < 0.5 for _ in range(n_random)]
    cands = np.stack([X] + [np.where(s, box_hi, box_lo) for s in signs])  # (1 + 1 + n_random, n, f)
    losses = item_loss(cands.reshape(-1, f))
    best = losses.argmax(axis=0)
    return FeatureAttack(cands[best, np.arange(n)], losses[0], losses[best, np.arange(n)])
