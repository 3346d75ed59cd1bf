"""Self-supervised pretraining before the fit (issue 23 §4), registered by method name (`METHODS`).

- `masked_feature` (vector MLP, `symbolic_mlp`): a random `mask_ratio` of each standardised feature
  vector is set to 0 (the training mean); the model's body and a linear decoder learn to reconstruct
  the masked entries (squared error on them only).
- `masked_patch` (AST, SSAST-style generative pretext, Gong et al. 2022): a random `mask_ratio` of the
  patch tokens is replaced by a learned mask token before the positional embeddings; the encoder and a
  linear decoder reconstruct the masked patches of the standardised spectrogram. (SSAST's
  discriminative InfoNCE term is left out.)

The unlabelled pool: the training fold's items (train and validation carve-out), the score MIDI of
their excerpt groups (`pretrain.scores`), `pretrain.copies` MIDI-augmented copies of them (preset
medium) and every MIDI file under `pretrain.corpus`. The test fold is never read: not its labels, and
not its inputs either (pretraining on them would be transductive, and a deployed model never sees the
performances it will rate before it is trained); a corpus or score file that is a PercePiano item
outside the training fold is dropped. Labels are never read. Inputs are scaled with the statistics
fitted on the training part, like the fit's. The decoder is thrown away; the fit then starts from
the pretrained body with a fresh head. `pretrain.json` in the run folder records the pool and the
masked-reconstruction loss before and after (the same masks, eval mode).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pianolab.atomic import atomic_path
from pianolab.config import RunConfig
from pianolab.errors import PianolabError
from pianolab.models.noise import noise_key
from pianolab.registry import Registry
from pianolab.train.trainer import Tensors

if TYPE_CHECKING:
    from pianolab.train.run import Cell

RESULT_FILE = "pretrain.json"
MIDI_SUFFIXES = (".mid", ".midi")


class Pool:
    """Several sources of inputs (each with `len` and `take(idx)`) as one indexable set of rows."""

    def __init__(self, sources: list):
        self.sources = [s for s in sources if len(s)]
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def take(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = idx.cpu().numpy()
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        parts, order = [], []
        for s in np.unique(which):
            at = np.nonzero(which == s)[0]
            local = torch.as_tensor(rows[at] - self.offsets[s], device=idx.device)
            parts.append(self.sources[s].take(local))
            order.append(at)
        inverse = torch.as_tensor(np.argsort(np.concatenate(order)), device=idx.device)
        return {k: torch.cat([p[k] for p in parts])[inverse] for k in parts[0]}


@dataclass(frozen=True)
class Method:
    """`input`: the batch key it reconstructs; `model_class()`: the models it pretrains; `build(model,
    cfg)`: (the modules it trains, decoder modules, loss(batch, mask_rng) -> scalar)."""

    input: str
    model_class: Callable[[], type]
    build: Callable


METHODS: Registry[Method] = Registry("pretraining method")


def _symbolic_mlp():
    from pianolab.models.symbolic import SymbolicMLP

    return SymbolicMLP


def _ast():
    from pianolab.models.ast import ASTRegressor

    return ASTRegressor


def _masked_feature(model, cfg: RunConfig):
    """Body + linear decoder; loss: squared error on the masked entries of the vector."""
    decoder = nn.Linear(model.config.hidden, model.config.in_features).to(next(model.parameters()).device)
    ratio = cfg.pretrain.mask_ratio

    def loss(batch: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        x = batch["vector"].float()
        mask = torch.rand(x.shape, generator=gen, device=x.device) < ratio
        rec = decoder(model.body(x.masked_fill(mask, 0.0)))
        return ((rec - x) ** 2 * mask).sum() / mask.sum().clamp_min(1)

    return [model.body], [decoder], loss


def patch_tokens(conv: nn.Conv2d, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """The patch embeddings (B, N, dim) of `spec` (B, C, F, T) before positions, time-major like
    `PatchEncoder`, the raw patches (B, N, C*p*p) in the same order, and the (f, t) grid."""
    x = conv(spec)  # (B, dim, f, t)
    f, t = x.shape[-2:]
    tokens = x.permute(0, 3, 2, 1).flatten(1, 2)  # (B, t*f, dim)
    target = F.unfold(spec, conv.kernel_size, stride=conv.stride)  # (B, C*p*p, f*t), frequency-major
    return tokens, target.unflatten(2, (f, t)).permute(0, 3, 2, 1).flatten(1, 2), (f, t)


def _masked_patch(model, cfg: RunConfig):
    """Encoder + mask token + linear decoder; loss: squared error on the masked patches."""
    enc = model.encoder
    if not hasattr(enc, "patch_embed"):
        raise PianolabError("pretrain.method masked_patch needs a single-scale AST (not attention: multi_scale)")
    conv = enc.patch_embed
    device = conv.weight.device
    decoder = nn.Linear(conv.out_channels, conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]).to(device)
    token = nn.Parameter(torch.zeros(1, 1, conv.out_channels, device=device))
    nn.init.trunc_normal_(token, std=0.02)
    holder = nn.Module()
    holder.mask_token = token
    ratio = cfg.pretrain.mask_ratio

    def loss(batch: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        tokens, target, (f, t) = patch_tokens(conv, batch["spec"].float())
        mask = torch.rand(tokens.shape[:2], generator=gen, device=tokens.device) < ratio
        tokens = torch.where(mask[..., None], token.to(tokens.dtype), tokens) + enc._pos(f, t)
        cls = (enc.cls_token + enc.cls_pos).expand(len(tokens), -1, -1)
        h = enc.pos_drop(torch.cat([cls.to(tokens.dtype), tokens], 1))
        for blk in enc.blocks:
            h = blk(h, (f, t))
        rec = decoder(enc.norm(h)[:, 1:])
        err = ((rec - target) ** 2).mean(-1)
        return (err * mask).sum() / mask.sum().clamp_min(1)

    return [enc], [decoder, holder], loss


METHODS.add("masked_feature", Method("vector", _symbolic_mlp, _masked_feature))
METHODS.add("masked_patch", Method("spec", _ast, _masked_patch))


# ---- the pool ----------------------------------------------------------------------------------
def corpus_files(cell: Cell) -> tuple[list[Path], dict]:
    """The unlabelled MIDI beyond the training fold's items: their excerpts' score MIDI (with
    `pretrain.scores`) and `pretrain.corpus`; PercePiano items are left out (those of the training
    fold are already in the pool, the others are the test fold's). Returns (files, counts)."""
    from pianolab.data.percepiano import parse_stem

    p, ds, roles = cell.cfg.pretrain, cell.dataset, cell.roles
    fold = set(np.concatenate([roles.train, roles.val]).tolist())
    groups = {ds.items[i].group for i in fold}
    files, counts = [], {"score_midi": 0, "corpus": 0, "dropped_items": 0}

    def keep(path: Path) -> bool:
        if path.stem.strip() in ds.index:  # a PercePiano item (one file name has a leading space)
            counts["dropped_items"] += 1
            return False
        return True

    if p.scores:
        for path in sorted((Path(ds.root) / "score_midi").glob("*.mid")):
            try:
                group = parse_stem(path.stem).group
            except PianolabError:
                continue
            if group in groups and keep(path):
                files.append(path)
                counts["score_midi"] += 1
    for root in p.corpus:
        root = Path(root)
        found = [root] if root.is_file() else sorted(q for q in root.rglob("*") if q.suffix.lower() in MIDI_SUFFIXES)
        for path in found:
            if keep(path):
                files.append(path)
                counts["corpus"] += 1
    return files, counts


def _scaled(cell: Cell, midi: list[Path], device: torch.device, copy: int = 0,
            augment: str | None = None) -> Tensors:
    """Inputs of `midi` (failed files dropped) scaled with the training part's statistics."""
    from pianolab.train.inputs import load_inputs
    from pianolab.train.trainer import standardise

    inp = load_inputs(cell.cfg.features, midi, device=str(device), copy=copy, augment=augment)
    rows = np.nonzero(inp.ok)[0]
    batch, norm = {}, cell.norm
    if inp.vector is not None:
        vec = norm["scaler"].transform(inp.vector[rows])[:, norm["columns"]]
        batch["vector"] = torch.from_numpy(np.ascontiguousarray(vec, dtype=np.float32)).to(device)
    if inp.spec is not None:
        raw = torch.from_numpy(np.ascontiguousarray(inp.spec[rows])).to(device)
        batch["spec"] = standardise(raw, norm["spec_mean"], norm["spec_std"])
    return Tensors(batch, None)


def unlabelled_pool(cell: Cell, fold: list, device: torch.device) -> tuple[Pool, dict]:
    """The pool: `fold` (the training fold's inputs, as `Tensors`) plus score MIDI, augmented copies and
    corpus files (see the module docstring); returns it with the counts of each source."""
    files, counts = corpus_files(cell)
    sources = list(fold)
    counts["fold_items"] = sum(len(s) for s in fold)
    if files:
        extra = _scaled(cell, files, device)
        counts["unreadable"] = len(files) - len(extra)
        sources.append(extra)
    paths = [cell.dataset.items[i].midi_path for i in np.concatenate([cell.roles.train, cell.roles.val])]
    for c in range(1, cell.cfg.pretrain.copies + 1):
        sources.append(_scaled(cell, paths, device, copy=c, augment="medium"))
    counts["augmented_copies"] = sum(len(s) for s in sources[len(fold) + bool(files):])
    return Pool(sources), counts


# ---- the loop ----------------------------------------------------------------------------------
def pretrain_on(model: nn.Module, pool, cfg: RunConfig, device: torch.device) -> dict:
    """Pretrain `model` in place on `pool` (rows of inputs) with `cfg.pretrain`; returns the
    masked-reconstruction loss before and after (fixed masks, eval mode) and per epoch."""
    p = cfg.pretrain
    method = METHODS.get(p.method)
    if not isinstance(model, method.model_class()):
        raise PianolabError(f"pretrain.method {p.method!r} pretrains {method.model_class().__name__} models, "
                            f"not {type(model).__name__}")
    trained, extra, loss_fn = method.build(model, cfg)
    params = [q for m in trained + extra for q in m.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed + 3571)
    bs, n = cfg.train.batch_size, len(pool)
    before = _fixed_mask_loss(trained + extra, pool, loss_fn, cfg.train.seed, device, bs)
    curve, step = [], 0
    for _ in range(p.epochs):
        for m in trained + extra:
            m.train()
        perm = torch.randperm(n, generator=gen, device=device)
        total = torch.zeros((), device=device)
        starts = range(0, n - (n % bs if n > bs else 0), bs)
        for s in starts:
            with noise_key(cfg.train.seed + 7, step):
                loss = loss_fn(pool.take(perm[s:s + bs]), gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            opt.step()
            total += loss.detach()
            step += 1
        curve.append(float(total) / max(len(starts), 1))
    after = _fixed_mask_loss(trained + extra, pool, loss_fn, cfg.train.seed, device, bs)
    return {"method": p.method, "epochs": p.epochs, "mask_ratio": p.mask_ratio, "rows": n,
            "masked_loss_before": before, "masked_loss_after": after, "train_loss": curve}


@torch.no_grad()
def _fixed_mask_loss(modules, pool, loss_fn, seed: int, device, bs: int) -> float:
    """Mean masked-reconstruction loss over the pool in eval mode, with masks drawn from `seed`."""
    for m in modules:
        m.eval()
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    losses, weights = [], []
    for s in range(0, len(pool), bs):
        idx = torch.arange(s, min(s + bs, len(pool)), device=device)
        losses.append(float(loss_fn(pool.take(idx), gen)))
        weights.append(len(idx))
    return float(np.average(losses, weights=weights)) if losses else float("nan")


def pretrain(cell: Cell, model: nn.Module, fold: list, device: torch.device) -> dict:
    """Pretrain `model` on the cell's unlabelled pool (`fold`: its training fold's inputs as `Tensors`
    or shared rows); writes pretrain.json in the run folder, if any."""
    pool, counts = unlabelled_pool(cell, fold, device)
    result = {**pretrain_on(model, pool, cell.cfg, device), "pool": counts}
    if cell.folder is not None:
        with atomic_path(cell.folder / RESULT_FILE) as tmp:
            tmp.write_text(json.dumps(result, indent=1))
    return result


# ---- load-time checks --------------------------------------------------------------------------
def check(cfg: RunConfig) -> str | None:
    """Why `cfg.pretrain` cannot run (one line), or None."""
    p = cfg.pretrain
    if p.method == "none":
        return None
    if p.method not in METHODS:
        return f"unknown pretraining method {p.method!r}; valid: none, {', '.join(METHODS.names())}"
    from pianolab.models import MODELS
    from pianolab.models.classic import ESTIMATORS

    if cfg.model.name in ESTIMATORS:
        return None  # refused as a key without effect (validate.NO_OPS)
    import typing

    method = METHODS.get(p.method)
    cls = typing.get_type_hints(MODELS.get(cfg.model.name))["return"]
    if not issubclass(cls, method.model_class()):
        return f"method {p.method!r} pretrains {method.model_class().__name__} models; model " \
               f"{cfg.model.name!r} is a {cls.__name__}"
    if p.method == "masked_patch" and cfg.model.params.get("attention") == "multi_scale":
        return "method 'masked_patch' needs a single-scale AST (not attention: multi_scale)"
    if cfg.features.stack or cfg.features.peer_centred:
        return "pretraining reads unlabelled inputs alone; features.stack (label-derived columns) and " \
               "features.peer_centred (peer columns per role) have no unlabelled equivalent"
    for root in p.corpus:
        if not Path(root).exists():
            return f"corpus path {root} does not exist"
    if p.corpus:
        from pianolab.features.kinds import get_kind

        scored = [k for k in cfg.features.vector if get_kind(k).uses_score]
        if scored:
            return f"corpus MIDI have no score, and feature kind {scored[0]!r} reads one; use kinds without a " \
                   "score (e.g. symbolic) with pretrain.corpus"
    return None
