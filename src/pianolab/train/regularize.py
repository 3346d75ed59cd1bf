"""Batch-level regularisers (mixup, time-axis cutmix) and early stopping.

Dropout, stochastic depth and spectral normalisation are model options (`pianolab.models`;
`spectral_norm: head` (= true) normalises the head's Linear, `spectral_norm: all` every nn.Linear of
the model: `pianolab.models.layers.spectral_normalise`, applied by `create_model`); label smoothing for
regression is `pianolab.train.objective.shrink_targets`. Mixing coefficients are drawn
per sample on the batch's device from `generator` (a torch.Generator on that device): no host syncs.
"""

from __future__ import annotations

import torch

Batch = dict[str, torch.Tensor]


def _beta(alpha: float, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """(n,) samples of Beta(alpha, alpha) as G1 / (G1 + G2) with Gamma(alpha) draws."""
    conc = torch.full((2, n), float(alpha), device=device)
    g = torch._standard_gamma(conc, generator=generator)
    return g[0] / (g[0] + g[1]).clamp_min(1e-12)


def _partners(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randperm(n, generator=generator, device=device)


def _keep(lam: torch.Tensor, prob: float, generator: torch.Generator | None) -> torch.Tensor:
    """lam where a sample is mixed (probability `prob`), 1 (unchanged) elsewhere."""
    mixed = torch.rand(lam.shape, generator=generator, device=lam.device) < prob
    return torch.where(mixed, lam, torch.ones_like(lam))


def _mix(x: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    lam = lam.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return lam * x + (1 - lam) * x[perm]


def mixup(batch: Batch, target: torch.Tensor, alpha: float, generator: torch.Generator | None = None,
          prob: float = 1.0) -> tuple[Batch, torch.Tensor]:
    """Mixup (Zhang et al. 2018): sample i becomes lam_i * x_i + (1 - lam_i) * x_perm(i) for every
    batch tensor, target likewise; lam_i ~ Beta(alpha, alpha) per sample (1 for samples not drawn
    with probability `prob`). target (B, D)."""
    n = target.shape[0]
    perm = _partners(n, generator, target.device)
    lam = _keep(_beta(alpha, n, generator, target.device), prob, generator)
    return {k: _mix(v, perm, lam) for k, v in batch.items()}, _mix(target, perm, lam)


def cutmix(batch: Batch, target: torch.Tensor, generator: torch.Generator | None = None, alpha: float = 1.0,
           prob: float = 1.0) -> tuple[Batch, torch.Tensor]:
    """Time-axis CutMix on batch["spec"] (B, C, F, T): a span of round((1 - lam) * T) frames at a
    uniform position is pasted from the partner sample, lam ~ Beta(alpha, alpha). Targets (and any
    other batch tensor, e.g. "vector") are mixed linearly by the kept area fraction 1 - span / T."""
    spec = batch["spec"]
    n, frames = spec.shape[0], spec.shape[-1]
    device = spec.device
    perm = _partners(n, generator, device)
    lam = _keep(_beta(alpha, n, generator, device), prob, generator)
    span = torch.round((1 - lam) * frames)
    start = torch.floor(torch.rand(n, generator=generator, device=device) * (frames - span + 1))
    t = torch.arange(frames, device=device)
    cut = (t >= start[:, None]) & (t < (start + span)[:, None])  # (B, T)
    area = 1 - span / frames
    out = {k: _mix(v, perm, area) for k, v in batch.items() if k != "spec"}
    out["spec"] = torch.where(cut[:, None, None, :], spec[perm], spec)
    return out, _mix(target, perm, area)


class EarlyStopping:
    """Stop when the validation metric has not improved by more than `min_delta` for `patience` calls.

    `step(metric) -> bool` returns True when the metric improved (save the weights then);
    `should_stop` turns True after `patience` calls in a row without improvement. `mode`: "max" for
    correlations, "min" for losses. One host sync per call (`float(metric)`).
    """

    def __init__(self, patience: int, min_delta: float = 0.0, mode: str = "max"):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best: float | None = None
        self.bad = 0
        self.calls = 0
        self.best_call = -1

    def step(self, metric) -> bool:
        value = float(metric)
        better = self.best is None or (value > self.best + self.min_delta if self.mode == "max"
                                       else value < self.best - self.min_delta)
        self.calls += 1
        if better:
            self.best, self.bad, self.best_call = value, 0, self.calls - 1
        else:
            self.bad += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.bad >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad": self.bad, "calls": self.calls, "best_call": self.best_call}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad = state["best"], state["bad"]
        self.calls, self.best_call = state["calls"], state["best_call"]
