"""Packed training: the cells of one variant (same model and settings; other seeds and folds) trained as
one batched model, so a small model fills the GPU with N members per kernel instead of one.

`torch.func.stack_module_state` stacks the members' weights. Where the model allows it
(`pianolab.models.grouped`: Linear, LayerNorm and Conv2d layers, the AST's patch encoder), one grouped
copy of the model runs every member's forward and backward as batched matmuls over the stacked weights,
with the fused attention kernels, compiled on CUDA; otherwise `vmap(grad_and_value(loss))` does. A
functional AdamW (the same arithmetic as `torch.optim.AdamW`) updates each member with its own learning
rate, step count and gradient clipping. Everything else is per member and reuses `Trainer`: the
shuffling, SpecAugment / mixup / cutmix (the member's own generators), the schedule, validation, early
stopping and best-weight restore. Dropout and stochastic depth draw keyed noise
(`pianolab.models.noise`), so a member draws the masks it would draw alone: packed and one-at-a-time
runs agree within float tolerance (tests/test_packed.py). Members whose epoch has fewer batches (smaller
training folds), that stopped early or finished are masked: their weights and optimiser state do not
move.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from pianolab.errors import PianolabError
from pianolab.models.grouped import grouped_copy, grouping_problem
from pianolab.models.noise import noise_key
from pianolab.train.run import SharedSpec
from pianolab.train.trainer import SharedRows, Tensors, Trainer, batch_starts, standardise


@dataclass
class StackedRows:
    """Every member's training rows padded to the longest member and stacked, so that one (M, B) index
    gathers every member's batch in a few kernels: the member's own inputs (M, N, ...), its targets, and
    for spectrograms shared on the device (`SharedRows`) its rows of them and its statistics (applied by
    `standardise`, as `SharedRows.take` does). Padding repeats row 0."""

    batch: dict[str, torch.Tensor]
    target: torch.Tensor
    spec: torch.Tensor | None = None
    rows: torch.Tensor | None = None  # (M, N)
    mean: torch.Tensor | None = None  # (M,) float32
    std: torch.Tensor | None = None

    @classmethod
    def of(cls, parts: list[Tensors]) -> StackedRows:
        longest = max(len(p) for p in parts)
        pad = lambda x: torch.cat([x, x[:1].expand(longest - len(x), *x.shape[1:])])  # noqa: E731
        batch = {k: torch.stack([pad(p.batch[k]) for p in parts]) for k in parts[0].batch}
        target = torch.stack([pad(p.target) for p in parts])
        if not isinstance(parts[0], SharedRows):
            return cls(batch, target)
        return cls(batch, target, parts[0].spec, torch.stack([pad(p.rows) for p in parts]),
                   torch.stack([p.mean for p in parts]), torch.stack([p.std for p in parts]))

    def take(self, idx: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Member i's rows idx[i] of every input, and their targets: ((M, B, ...), (M, B, 19))."""
        member = torch.arange(len(idx), device=idx.device)[:, None]
        batch = {k: v[member, idx] for k, v in self.batch.items()}
        if self.spec is not None:
            x = self.spec[self.rows[member, idx]]
            shape = (-1,) + (1,) * (x.ndim - 1)
            batch["spec"] = standardise(x, self.mean.view(shape), self.std.view(shape))
        return batch, self.target[member, idx]


def unpackable_reason(trainer: Trainer) -> str | None:
    """Why this trainer's model/config cannot train packed (None if it can)."""
    cfg = trainer.cfg
    for m in trainer.model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            return "BatchNorm updates running statistics in place"
        if torch.nn.utils.parametrize.is_parametrized(m):
            return "parametrised layers (spectral_norm)"
        if getattr(m, "attn_dropout", 0.0):
            return "attention dropout draws from torch's global generator"
        if getattr(m, "packing_problem", None):
            return m.packing_problem
    if cfg.train.max_seconds is not None:
        return "a wall-time budget is per run"
    if cfg.ensemble.snapshots:
        return "snapshot ensembles keep each run's end-of-cycle weights (ensemble.snapshots)"
    if cfg.ensemble.tta > 1:
        return "test-time augmentation reads each run's test inputs after training (ensemble.tta)"
    return None


class PackedTrainer:
    """Trains `trainers[i].model` on `train[i]` for every member i at once (same architecture)."""

    def __init__(self, trainers: list[Trainer], device: torch.device):
        self.trainers, self.device = trainers, device
        models = [t.model for t in trainers]
        stacked, self.buffers = stack_module_state(models)
        n = len(trainers)
        # every member's weights in one (M, P) tensor, and each parameter a view of it: the optimiser
        # updates all of them with a few kernels over the whole tensor
        self.flat = torch.cat([v.detach().reshape(n, -1) for v in stacked.values()], 1)
        self.params, start = {}, 0
        for k, v in stacked.items():
            self.params[k] = self.flat[:, start:start + v[0].numel()].view(v.shape)
            start += v[0].numel()
        self.template = copy.deepcopy(models[0]).train()
        opt = trainers[0].optimizer
        self.betas, self.eps = opt.defaults["betas"], opt.defaults["eps"]
        decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
        decays = [decay[id(p)] for p in models[0].parameters()]
        self.decay_values = sorted(set(decays))
        self.decay_index = torch.cat([torch.full((p.numel(),), self.decay_values.index(d))
                                      for p, d in zip(models[0].parameters(), decays, strict=True)]).to(device)
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.seeds = torch.tensor([t.cfg.train.seed for t in trainers], dtype=torch.int64, device=device)
        self.steps = torch.zeros(n, dtype=torch.int64, device=device)
        self.loss_fn, self.autocast = trainers[0].loss_fn, trainers[0].autocast
        self.eval_every = trainers[0].cfg.train.eval_every
        self.grouped = grouped_copy(self.template) if grouping_problem(self.template) is None else None
        if self.grouped is not None:
            self.params = {k: torch.nn.Parameter(v) for k, v in self.params.items()}  # views of self.flat
            for name, p in self.params.items():  # the grouped copy's own weights are the stacked ones
                owner, _, leaf = name.rpartition(".")
                self.grouped.get_submodule(owner)._parameters[leaf] = p
            # compiled on CUDA whatever train.compile says: once per pack, it pays (eager, the keyed dropout
            # and the norms run as separate passes over M times the activations; docs/benchmarks.md)
            self.grouped_losses = torch.compile(self._grouped_losses) if device.type == "cuda" \
                else self._grouped_losses
            self.grad_fn = self._grouped_grads
        else:
            self.grad_fn = vmap(grad_and_value(self._loss))  # every argument batched over members
        self.last_grads: dict[str, torch.Tensor] = {}

    def _loss(self, params, buffers, batch, target, seed, step):
        with noise_key(seed, step), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                   enabled=self.autocast):
            pred = functional_call(self.template, (params, buffers), (batch,))
        return self.loss_fn(pred.float(), target)

    def _grouped_losses(self, batch, target):
        """(M,) losses of the grouped model on the members' batches (M, B, ...)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            pred = self.grouped({k: v.flatten(0, 1) for k, v in batch.items()})
        pred = pred.float().unflatten(0, target.shape[:2])
        return torch.stack([self.loss_fn(p, t) for p, t in zip(pred.unbind(0), target.unbind(0), strict=True)])

    def _grouped_grads(self, params, buffers, batch, target, seeds, steps):
        with noise_key(seeds, steps):  # on CUDA the hash is compiled with the model
            losses = self.grouped_losses(batch, target)
        grads = torch.autograd.grad(losses.sum(), list(params.values()))
        return dict(zip(params, grads, strict=True)), losses.detach()

    def done(self, i: int) -> bool:
        t = self.trainers[i]
        return t.epoch >= t.cfg.train.epochs or t.should_stop

    def train_epoch(self, train: StackedRows, sizes: list[int]) -> dict[int, dict]:
        """One epoch of every member still training (member i has `sizes[i]` training rows); returns each
        one's epoch record."""
        live = [i for i in range(len(self.trainers)) if not self.done(i)]
        bs = self.trainers[0].cfg.train.batch_size
        perm = torch.zeros(len(self.trainers), max(sizes), dtype=torch.int64, device=self.device)
        for i in live:  # each member shuffles with its own generator; padding (and finished members) row 0
            perm[i, :sizes[i]] = torch.randperm(sizes[i], device=self.device, generator=self.trainers[i].generator)
        n_steps = {i: len(batch_starts(sizes[i], bs)) for i in live}
        augmenting = any(self.trainers[i].augments for i in live)
        sums = torch.zeros(len(self.trainers), 2, device=self.device)
        t0 = time.perf_counter()
        for s in range(max(n_steps.values())):
            stepping = [i for i in live if s < n_steps[i]]  # the others compute on padding and do not move
            batch, target = train.take(perm[:, s * bs:(s + 1) * bs])
            if augmenting:
                for i in stepping:
                    own, target[i] = self.trainers[i]._augment({k: v[i] for k, v in batch.items()}, target[i])
                    for k, v in own.items():
                        batch[k][i] = v
            mask = torch.zeros(len(self.trainers), dtype=torch.bool)
            mask[stepping] = True
            mask = mask.to(self.device, non_blocking=True)
            norms, losses = self._step(batch, target, mask, stepping)
            sums += torch.stack([losses, norms], 1) * mask[:, None]
        for i in live:
            self.trainers[i].epoch += 1
        self._write_back(live)
        stats = sums.cpu().tolist()  # the one sync per epoch
        rate = sum(n_steps.values()) * bs / max(time.perf_counter() - t0, 1e-9)
        from pianolab.evaluate.diagnostics import layer_grad_norms

        return {i: {"epoch": self.trainers[i].epoch, "train_loss": stats[i][0] / n_steps[i],
                    "grad_norm": stats[i][1] / n_steps[i],
                    "lr": self.trainers[i].optimizer.param_groups[0]["lr"], "packed": len(self.trainers),
                    "samples_per_s": rate,
                    "grad_norms": layer_grad_norms(self.trainers[i].model)} for i in live}

    def _step(self, batch: dict[str, torch.Tensor], target: torch.Tensor, mask: torch.Tensor,
              stepping: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        grads, losses = self.grad_fn(self.params, self.buffers, batch, target, self.seeds, self.steps)
        lrs = torch.tensor([t.optimizer.param_groups[0]["lr"] for t in self.trainers], dtype=torch.float64)
        self.steps += mask.to(torch.int64)
        idle = [i for i in range(len(self.trainers)) if i not in stepping]
        with torch.no_grad():
            norms = self._clipped_adamw(grads, lrs.to(self.device, non_blocking=True),
                                        torch.tensor(idle).to(self.device, non_blocking=True) if idle else None)
        with warnings.catch_warnings():  # LambdaLR warns that its optimiser did not step: it did not
            warnings.simplefilter("ignore", UserWarning)
            for i in stepping:
                self.trainers[i].schedule.step()
        self.last_grads = grads
        return norms, losses.detach().float()

    def _clipped_adamw(self, grads, lrs, idle: torch.Tensor | None) -> torch.Tensor:
        """Each member's gradient clipped to its own norm, then torch.optim.AdamW's update per member (own
        lr and step count) over the flat weights, in place (a dozen passes over them); the `idle`
        members' rows are put back. Returns the (M,) gradient norms."""
        state = (self.flat, self.exp_avg, self.exp_avg_sq)
        saved = [t.index_select(0, idle) for t in state] if idle is not None else []
        g = torch.cat([grads[k].reshape(len(lrs), -1) for k in self.params], 1)
        norms = torch.linalg.vector_norm(g, dim=1)
        g.mul_((self.trainers[0].cfg.optim.grad_clip / (norms + 1e-6)).clamp(max=1.0)[:, None])
        b1, b2 = self.betas
        t = self.steps.to(torch.float64)
        bc2_sqrt = (1 - b2 ** t).sqrt().float()[:, None]
        step_size = (lrs / (1 - b1 ** t)).float()[:, None]
        keep = torch.stack([(1 - lrs * d).float() for d in self.decay_values], 1)  # (M, distinct decays)
        self.flat.mul_(keep[:, self.decay_index])
        self.exp_avg.lerp_(g, 1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (self.exp_avg_sq.sqrt() / bc2_sqrt).add_(self.eps)
        self.flat.sub_(torch.div(self.exp_avg, denom, out=denom).mul_(step_size))
        for tensor, rows in zip(state, saved, strict=False):
            tensor.index_copy_(0, idle, rows)
        return norms

    def _write_back(self, members: list[int]) -> None:
        """Copy the stacked weights (and the last gradients) into the members' own models."""
        with torch.no_grad():
            for i in members:
                for k, p in self.trainers[i].model.named_parameters():
                    p.copy_(self.params[k][i])
                    p.grad = self.last_grads[k][i].detach().clone() if k in self.last_grads else None

    @torch.no_grad()
    def predict(self, data: list[Tensors], chunk: int = 64) -> list[np.ndarray]:
        """Every member's standardised predictions on its own `data[i]` (one per member, none empty) in
        eval mode, from the grouped model: one pass per `chunk` rows of every member (shorter sets repeat
        their last row)."""
        self.grouped.eval()
        longest = max(len(d) for d in data)
        out = []
        for start in range(0, longest, chunk):
            idx = torch.arange(start, min(start + chunk, longest), device=self.device)
            batch = [d.take(idx.clamp(max=len(d) - 1)) for d in data]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                pred = self.grouped({k: torch.cat([b[k] for b in batch]) for k in batch[0]})
            out.append(pred.float().unflatten(0, (len(data), -1)))
        self.grouped.train()
        preds = torch.cat(out, 1).cpu().numpy()  # one sync for every member
        return [p[:len(d)] for p, d in zip(preds, data, strict=True)]

    def fit(self, train: list[Tensors], val: list[Tensors], metric, on_epoch) -> None:
        """Train until every member is done; `on_epoch(i, record)` receives each member's records."""
        stacked, sizes = StackedRows.of(train), [len(t) for t in train]
        while not all(self.done(i) for i in range(len(self.trainers))):
            records = self.train_epoch(stacked, sizes)
            due = [i for i in records if len(val[i]) and self.trainers[i].epoch % self.eval_every == 0]
            preds = {}
            if due and self.grouped is not None:  # members with nothing to validate predict a placeholder
                preds = dict(enumerate(self.predict([v if len(v) else val[due[0]] for v in val])))
            for i, rec in records.items():
                if i in due:
                    rec.update(self.trainers[i].validate(val[i], metric, pred=preds.get(i)))
                on_epoch(i, rec)


def execute_pack(cfgs: list, folders: list, experiment: str, variant: str) -> list[dict]:
    """Run the cells `cfgs` (one variant: same config but seed and fold) packed, each writing its own
    run folder exactly as `pianolab.train.run.execute` does; returns their test summaries. Raises
    PianolabError when they cannot be packed (the caller runs them one at a time instead)."""
    from pianolab.train.run import (
        _mean_pearson,
        append_record,
        finish_cell,
        load_all_items,
        neural_parts,
        prepare_cell,
        save_neural,
    )
    from pianolab.train.trainer import deterministic_kernels, pick_device

    device = pick_device(cfgs[0].train.device)
    loaded = load_all_items(cfgs[0], device)
    shared = _shared_spectrograms(cfgs[0], loaded, device)
    cells, members = [], []
    for cfg, folder in zip(cfgs, folders, strict=True):  # one cell's host arrays at a time
        cells.append(prepare_cell(cfg, folder, experiment, variant, device, loaded=loaded))
        members.append(neural_parts(cells[-1], device, shared))
        cells[-1].part = None
    trainers = [m.trainer for m in members]
    reasons = {unpackable_reason(t) for t in trainers} - {None}
    if reasons:
        raise PianolabError(f"cannot pack {variant!r}: {sorted(reasons)[0]}")
    pack = PackedTrainer(trainers, device)
    for c in cells:
        (c.folder / "metrics.jsonl").write_text("")
    with warnings.catch_warnings(), deterministic_kernels(cells[0].cfg.train.deterministic):
        warnings.filterwarnings("ignore", "There is a performance drop", UserWarning)  # vmap of CPU SDPA
        pack.fit([m.train for m in members], [m.val for m in members], _mean_pearson,
                 lambda i, rec: append_record(cells[i].folder, rec))
    return [finish_cell(c, save_neural(c, m)) for c, m in zip(cells, members, strict=True)]


def _shared_spectrograms(cfg, loaded, device) -> SharedSpec | None:
    """Every item's raw spectrogram, once on the device; None without spectrograms or with
    MIDI-augmented training copies (those stay private)."""
    if not cfg.features.spectrogram or cfg.features.augment_factor > 1:
        return None
    return SharedSpec(torch.from_numpy(np.ascontiguousarray(loaded.inputs.spec)).to(device), loaded.pos)
