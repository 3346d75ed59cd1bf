"""AdamW with sensible decay groups, and LR schedules registered by name in `SCHEDULES`.

Every schedule is a `Schedule` (a torch `LambdaLR`) over an LR multiplier of the optimiser step:
call `step()` once per optimiser step. Call `step(metric=v)` (or `observe(v)`) after each
validation: `reduce_on_plateau` reacts to it (host sync of one scalar per validation), every other
schedule ignores it. Warm-up is linear, reaching the base LR on step `warmup_steps - 1`. Only
`warmup_cosine` warms up by default (`pianolab.config.SCHEDULE_WARMUP`); an explicit `warmup_steps`
(from `optim.warmup_frac`) puts it before any schedule, except `one_cycle`, which uses it as its rise.
`step_decay` milestones are epochs (default 50, 100, 150).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from pianolab.config import SCHEDULE_WARMUP, OptimConfig
from pianolab.errors import PianolabError
from pianolab.registry import Registry

NO_DECAY_NAMES = ("pos_embed", "cls_token", "cls_pos")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decay on weight matrices/kernels; none on norms, biases and embeddings."""
    embed_params = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.split(".")[-1] in NO_DECAY_NAMES or id(p) in embed_params
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(params_or_model: nn.Module | Iterable, lr: float, weight_decay: float,
                   fused: bool = False) -> torch.optim.AdamW:
    """AdamW; from a module, no decay on norms/biases/embeddings. `fused=True` uses the fused kernel
    (pass it on CUDA); plain parameter iterables are decayed uniformly."""
    groups = param_groups(params_or_model, weight_decay) if isinstance(params_or_model, nn.Module) \
        else params_or_model
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)


class Multiplier:
    """LR multiplier as a function of the step; state is plain attributes (saved by LambdaLR).
    `default_warmup_frac`: the warm-up (fraction of the steps) when none is asked for."""

    default_warmup_frac = 0.0

    def __init__(self, total_steps: int, warmup_steps: int = 0):
        self.total, self.warmup = max(1, total_steps), max(0, warmup_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        return self.body((step - self.warmup) / max(1, self.total - self.warmup), step)

    def body(self, progress: float, step: int) -> float:
        """Multiplier after warmup; `progress` in [0, 1] over the remaining steps."""
        return 1.0

    def observe(self, metric: float) -> None:
        """A validation metric; only `reduce_on_plateau` uses it."""


SCHEDULES: Registry[Callable[..., Multiplier]] = Registry("schedule")


@SCHEDULES.register("constant")
class Constant(Multiplier):
    """Base LR throughout (after any warmup)."""


@SCHEDULES.register("cosine")
class Cosine(Multiplier):
    """Cosine decay from the base LR to `min_lr_ratio` x base at the last step."""

    def __init__(self, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0):
        super().__init__(total_steps, warmup_steps)
        self.min_ratio = min_lr_ratio

    def body(self, progress: float, step: int) -> float:
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@SCHEDULES.register("warmup_cosine")
class WarmupCosine(Cosine):
    """Cosine after a linear warm-up over `SCHEDULE_WARMUP['warmup_cosine']` (5%) of the steps, unless
    `warmup_steps` says otherwise."""

    default_warmup_frac = SCHEDULE_WARMUP["warmup_cosine"]


@SCHEDULES.register("cyclic_cosine")
class CyclicCosine(Multiplier):
    """Cosine from the base LR to `min_lr_ratio` x base within each of `cycles` equal cycles, restarting
    at the base LR (SGDR without growth; `ensemble.snapshots` keeps the weights at each cycle's end)."""

    def __init__(self, total_steps: int, warmup_steps: int = 0, cycles: int = 5, min_lr_ratio: float = 0.0):
        super().__init__(total_steps, warmup_steps)
        if not isinstance(cycles, int) or isinstance(cycles, bool) or cycles < 1:
            raise PianolabError(f"cyclic_cosine cycles must be an integer >= 1, got {cycles!r}")
        self.cycles, self.min_ratio = cycles, min_lr_ratio

    def body(self, progress: float, step: int) -> float:
        from pianolab.advanced.snapshots import cycle_multiplier

        return cycle_multiplier(progress, self.cycles, self.min_ratio)


STEP_DECAY_MILESTONES = (50, 100, 150)  # epochs


@SCHEDULES.register("step_decay")
class StepDecay(Multiplier):
    """Multiply by `gamma` at each milestone, in epochs: from the first step of epoch m on
    (step m * steps_per_epoch). Default: STEP_DECAY_MILESTONES."""

    def __init__(self, total_steps: int, warmup_steps: int = 0, milestones: Sequence[int] = STEP_DECAY_MILESTONES,
                 gamma: float = 0.1, steps_per_epoch: int = 1):
        super().__init__(total_steps, warmup_steps)
        if any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in milestones):
            raise PianolabError(f"step_decay milestones are epochs (integers >= 1), got {list(milestones)}")
        self.milestones = sorted(m * max(1, steps_per_epoch) for m in milestones)
        self.gamma = gamma

    def body(self, progress: float, step: int) -> float:
        return self.gamma ** sum(step >= m for m in self.milestones)


@SCHEDULES.register("one_cycle")
class OneCycle(Multiplier):
    """One-cycle (Smith): cosine rise from base/`div_factor` to the base LR (the peak) over `pct_start`
    of the steps (or `warmup_steps` if given), cosine fall to base/(div_factor*final_div_factor) at the
    last step. The base LR is the peak. Momentum is not cycled."""

    def __init__(self, total_steps: int, warmup_steps: int = 0, pct_start: float = 0.3,
                 div_factor: float = 25.0, final_div_factor: float = 1e4):
        super().__init__(total_steps, 0)
        self.peak = warmup_steps or max(1, round(pct_start * self.total))
        self.start, self.end = 1 / div_factor, 1 / (div_factor * final_div_factor)

    def __call__(self, step: int) -> float:
        if step <= self.peak:
            return self.start + (1 - self.start) * 0.5 * (1 - math.cos(math.pi * step / self.peak))
        progress = min(1.0, (step - self.peak) / max(1, self.total - 1 - self.peak))
        return self.end + (1 - self.end) * 0.5 * (1 + math.cos(math.pi * progress))


@SCHEDULES.register("reduce_on_plateau")
class ReduceOnPlateau(Multiplier):
    """Constant (after warmup) times `scale`; each validation metric that fails to improve on the best
    by a relative `threshold` for more than `patience` validations multiplies `scale` by `factor`
    (down to `min_lr_ratio`). `mode="min"` for losses, "max" for correlations. Feed it the metric of
    the validation carve-out of the training fold, never the test fold."""

    def __init__(self, total_steps: int, warmup_steps: int = 0, mode: str = "min", factor: float = 0.5,
                 patience: int = 5, threshold: float = 1e-4, min_lr_ratio: float = 0.0):
        super().__init__(total_steps, warmup_steps)
        if mode not in ("min", "max"):
            raise PianolabError(f"reduce_on_plateau mode must be 'min' or 'max', got {mode!r}")
        self.mode, self.factor, self.patience = mode, factor, patience
        self.threshold, self.min_ratio = threshold, min_lr_ratio
        self.scale, self.best, self.bad = 1.0, None, 0

    def body(self, progress: float, step: int) -> float:
        return self.scale

    def observe(self, metric: float) -> None:
        sign = 1.0 if self.mode == "min" else -1.0
        value = sign * float(metric)
        if self.best is None or value < self.best - abs(self.best) * self.threshold:
            self.best, self.bad = value, 0
            return
        self.bad += 1
        if self.bad > self.patience:
            self.scale, self.bad = max(self.min_ratio, self.scale * self.factor), 0


class Schedule(LambdaLR):
    """LambdaLR over one `Multiplier` with a uniform `step(metric=None)` (see module docstring)."""

    def __init__(self, optimizer: torch.optim.Optimizer, multiplier: Multiplier):
        super().__init__(optimizer, multiplier)

    @property
    def multiplier(self) -> Multiplier:
        return self.lr_lambdas[0]

    def step(self, metric=None) -> None:
        if metric is None:
            super().step()
            return
        self.observe(metric)

    def observe(self, metric) -> None:
        """Feed a validation metric and re-apply the current multiplier to every group."""
        self.multiplier.observe(metric)
        lrs = [base * self.multiplier(self.last_epoch) for base in self.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = lrs


_FIXED = ("total_steps", "warmup_steps", "steps_per_epoch")


def schedule_options(name: str) -> list[str]:
    """The options (`optim.schedule_params`) the schedule `name` accepts."""
    return [p for p in inspect.signature(SCHEDULES.get(name)).parameters if p not in _FIXED]


def warmup_count(frac: float, total_steps: int) -> int:
    """Steps of a warm-up over `frac` of `total_steps` (at least one when `frac` > 0)."""
    return max(1, int(frac * total_steps)) if frac > 0 else 0


def make_schedule(name: str, optimizer: torch.optim.Optimizer, total_steps: int,
                  warmup_steps: int | None = None, steps_per_epoch: int = 1, **kw) -> Schedule:
    """The schedule `name` over `total_steps` optimiser steps; `kw` are its options (listed on error).
    `warmup_steps=None`: the schedule's own warm-up (only `warmup_cosine` has one)."""
    cls = SCHEDULES.get(name)
    valid = schedule_options(name)
    unknown = sorted(set(kw) - set(valid))
    if unknown:
        raise PianolabError(f"schedule {name!r} does not accept {', '.join(unknown)}; "
                            f"valid: {', '.join(valid) or '(none)'}")
    if warmup_steps is None:
        warmup_steps = warmup_count(cls.default_warmup_frac, total_steps)
    if "steps_per_epoch" in inspect.signature(cls).parameters:
        kw["steps_per_epoch"] = steps_per_epoch
    return Schedule(optimizer, cls(total_steps, warmup_steps, **kw))



def schedule_from_config(optim: OptimConfig, optimizer: torch.optim.Optimizer, epochs: int,
                         steps_per_epoch: int) -> Schedule:
    """The schedule `optim` asks for over `epochs` x `steps_per_epoch` steps: warm-up only where the
    schedule's name (`warmup_cosine`) or an explicit `optim.warmup_frac` asks for it."""
    total = max(1, epochs * steps_per_epoch)
    warm = None if optim.warmup_frac is None else warmup_count(optim.warmup_frac, total)
    return make_schedule(optim.schedule, optimizer, total, warmup_steps=warm, steps_per_epoch=steps_per_epoch,
                         **optim.schedule_params)
