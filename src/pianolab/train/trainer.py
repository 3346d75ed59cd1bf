"""One explicit training loop for neural models (nanoGPT-style).

The epoch's inputs live on the device; each step indexes them with a device permutation, so there is
no host synchronisation inside an epoch (losses and gradient norms accumulate on the device and
are read once per epoch). bf16 autocast on CUDA, optional `torch.compile`, gradient clipping, a
schedule stepped per optimiser step, validation on a carve-out of the training fold (never the test
fold) for early stopping and `reduce_on_plateau`. `state.pt` is written every
`checkpoint_every` epochs with everything needed to resume bit-for-bit (model, optimiser, schedule,
RNG states, early-stopping state).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pianolab.atomic import atomic_path
from pianolab.config import RunConfig
from pianolab.models.noise import noise_key
from pianolab.presets import PRESETS


@dataclass
class Tensors:
    """Device-resident inputs and standardised targets of one role (train/val/test)."""

    batch: dict[str, torch.Tensor]
    target: torch.Tensor | None

    def __len__(self) -> int:
        return next(iter(self.batch.values())).shape[0]

    def take(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[idx] for k, v in self.batch.items()}


def standardise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std in float32, by true division whether `mean`/`std` are numbers or tensors (a Python
    number divisor is a multiply by its reciprocal on CUDA: other bits), so every path that standardises
    a spectrogram (`run._to_device`, `SharedRows`, packed batches) gives the same bits."""
    as_tensor = lambda v: torch.as_tensor(v, dtype=torch.float32, device=x.device)  # noqa: E731
    return (x - as_tensor(mean)) / as_tensor(std)


@dataclass
class SharedRows(Tensors):
    """One role of one cell as rows of a spectrogram tensor that several cells share on the device
    (packed training), standardised per batch with the cell's own training statistics (`standardise`,
    so a batch has the bits of a private copy). `batch` holds the cell's own (small) inputs, e.g. its
    scaled feature vector."""

    spec: torch.Tensor | None = None  # (items, C, F, T) raw, shared
    rows: torch.Tensor | None = None  # (n,) rows of `spec`
    mean: torch.Tensor | float = 0.0  # float32 on the device once constructed
    std: torch.Tensor | float = 1.0

    def __post_init__(self):
        self.mean, self.std = (torch.as_tensor(v, dtype=torch.float32, device=self.spec.device)
                               for v in (self.mean, self.std))

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {**super().take(idx), "spec": standardise(self.spec[self.rows[idx]], self.mean, self.std)}


def batch_starts(n: int, bs: int) -> range:
    """Start index of each mini-batch of an epoch over `n` items (the last partial batch dropped,
    unless it is the only one)."""
    return range(0, n - (n % bs if n > bs else 0), bs)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextmanager
def deterministic_kernels(on: bool) -> Iterator[None]:
    """With `on`, the GPU settings meant for bit-for-bit training: PyTorch's deterministic kernels (a
    warning names any op that has none), cuBLAS with a fixed workspace, attention through the math
    kernel (flash and memory-efficient attention accumulate their gradients in a nondeterministic
    order). Slower; the previous settings come back on exit. Measured on an H200, two runs of one cell
    still differ (by up to 6e-3 in a prediction), about as much as without it (docs/benchmarks.md)."""
    if not on:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cuda.enable_flash_sdp(False)
    torch.backends.cuda.enable_mem_efficient_sdp(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cuda.enable_flash_sdp(before[2])
        torch.backends.cuda.enable_mem_efficient_sdp(before[3])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Trains `model` on `train` with the objective, optimiser, schedule and regularisers of `cfg`."""

    def __init__(self, cfg: RunConfig, model: torch.nn.Module, device: torch.device, steps_per_epoch: int):
        from pianolab.train.augment import spec_augment_from_preset
        from pianolab.train.objective import make_objective
        from pianolab.train.optim import make_optimizer, schedule_from_config
        from pianolab.train.regularize import EarlyStopping

        self.cfg, self.model, self.device = cfg, model, device
        self.total_steps = max(1, cfg.train.epochs * steps_per_epoch)
        self.loss_fn = make_objective(cfg.objective.name, **cfg.objective.params)
        self.optimizer = make_optimizer(model, cfg.optim.lr, cfg.optim.weight_decay,
                                        fused=device.type == "cuda")
        self.schedule = schedule_from_config(cfg.optim, self.optimizer, cfg.train.epochs, steps_per_epoch)
        self.preset = PRESETS.get(cfg.augment.preset)
        self.spec_augment = spec_augment_from_preset(cfg.augment.preset)
        self.stopper = EarlyStopping(cfg.regularize.early_stopping, mode="max") \
            if cfg.regularize.early_stopping else None
        self.generator = torch.Generator(device=device).manual_seed(cfg.train.seed)
        self.host_rng = random.Random(cfg.train.seed)
        self.autocast = device.type == "cuda" and cfg.train.amp
        self.step_fn = torch.compile(self._forward_loss) if cfg.train.compile and device.type == "cuda" \
            else self._forward_loss
        self.epoch = 0
        self.steps = torch.zeros((), dtype=torch.int64, device=device)  # keys the model's dropout noise
        self.best_state: dict | None = None

    def _forward_loss(self, batch: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            pred = self.model(batch)
        return self.loss_fn(pred.float(), target)

    @property
    def augments(self) -> bool:
        """Whether `_augment` may change a batch (or draw random numbers)."""
        reg = self.cfg.regularize
        return self.preset.spec_augment_prob > 0 or max(reg.mixup_prob, self.preset.mixup_prob) > 0 \
            or reg.cutmix_prob > 0

    def _augment(self, batch: dict, target: torch.Tensor) -> tuple[dict, torch.Tensor]:
        from pianolab.train.regularize import cutmix, mixup

        reg = self.cfg.regularize
        if "spec" in batch and self.preset.spec_augment_prob > 0:
            batch = {**batch, "spec": self.spec_augment(batch["spec"], self.preset.spec_augment_prob,
                                                         self.generator)}
        mix_prob = max(reg.mixup_prob, self.preset.mixup_prob)
        if mix_prob > 0 and self.host_rng.random() < mix_prob:
            batch, target = mixup(batch, target, reg.mixup_alpha or 0.4, self.generator)
        elif "spec" in batch and reg.cutmix_prob > 0 and self.host_rng.random() < reg.cutmix_prob:
            batch, target = cutmix(batch, target, self.generator)
        return batch, target

    def train_epoch(self, train: Tensors) -> dict:
        """One pass over `train` in shuffled mini-batches; returns mean loss and grad norm."""
        self.model.train()
        n, bs = len(train), self.cfg.train.batch_size
        perm = torch.randperm(n, device=self.device, generator=self.generator)
        loss_sum = torch.zeros((), device=self.device)
        grad_sum = torch.zeros((), device=self.device)
        steps = 0
        t0 = time.perf_counter()
        for start in batch_starts(n, bs):
            idx = perm[start:start + bs]
            batch, target = self._augment(train.take(idx), train.target[idx])
            with noise_key(self.cfg.train.seed, self.steps, fused=self.device.type == "cuda"):
                loss = self.step_fn(batch, target)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_sum += torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
            self.optimizer.step()
            self.schedule.step()
            self.steps += 1
            loss_sum += loss.detach()
            steps += 1
        self.epoch += 1
        stats = torch.stack([loss_sum, grad_sum]).cpu().tolist()  # the one sync per epoch
        from pianolab.evaluate.diagnostics import layer_grad_norms

        layers = layer_grad_norms(self.model)  # the epoch's last step, per module (one more sync)
        seconds = time.perf_counter() - t0
        return {"epoch": self.epoch, "train_loss": stats[0] / max(steps, 1),
                "grad_norm": stats[1] / max(steps, 1), "lr": self.optimizer.param_groups[0]["lr"],
                "samples_per_s": steps * bs / max(seconds, 1e-9), "grad_norms": layers}

    @torch.no_grad()
    def predict(self, data: Tensors, chunk: int = 256) -> np.ndarray:
        """Standardised predictions (N, 19) in eval mode."""
        self.model.eval()
        out = []
        for start in range(0, len(data), chunk):
            idx = torch.arange(start, min(start + chunk, len(data)), device=self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                out.append(self.model(data.take(idx)).float())
        return torch.cat(out).cpu().numpy()

    def validate(self, val: Tensors, metric: Callable[[np.ndarray, np.ndarray], float],
                 pred: np.ndarray | None = None) -> dict:
        """Validation loss and `metric` on `val` (its predictions `pred` when already made); steps the
        plateau schedule and early stopping."""
        pred = self.predict(val) if pred is None else pred
        target = val.target.cpu().numpy()
        loss = float(np.mean((pred - target) ** 2))
        score = metric(target, pred)
        if hasattr(self.schedule, "observe"):
            self.schedule.observe(loss)
        if self.stopper is not None:
            if self.stopper.step(score):
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return {"val_mse_std": loss, "val_pearson": score}

    @property
    def should_stop(self) -> bool:
        return self.stopper is not None and self.stopper.should_stop

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    # ---- resumable state -------------------------------------------------------------------
    def save_state(self, path: Path) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "schedule": self.schedule.state_dict(), "epoch": self.epoch, "steps": self.steps,
                 "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                 "host_rng": json.dumps(self.host_rng.getstate()),
                 "stopper": None if self.stopper is None else self.stopper.state_dict(),
                 "best_state": self.best_state}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def load_state(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.epoch = state["epoch"]
        self.steps.copy_(state["steps"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        hs = json.loads(state["host_rng"])
        self.host_rng.setstate((hs[0], tuple(hs[1]), hs[2]))
        if self.stopper is not None and state["stopper"] is not None:
            self.stopper.load_state_dict(state["stopper"])
        self.best_state = state["best_state"]
        if "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
