"""Keyed training noise: dropout and stochastic depth drawn from a hash of (seed, step, layer, element).

A torch generator cannot be given to `nn.Dropout`, and inside `torch.func.vmap` every member of a
packed model would draw from one shared stream. Keyed noise instead depends only on the run's seed,
its optimiser step (a device counter, so no host sync), the layer's salt (its position in the
model, set by `assign_salts`) and the element's index: a cell draws the same masks whether it trains
alone or packed with others (`pianolab.train.packed`). The trainer sets the key with
`noise_key(seed, step)`; with no key set, training falls back to torch's global generator.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

_M32 = 0xFFFFFFFF
_KEY: list = []  # stack of (seed, step); each an int or an int64 tensor (batched under vmap)


@contextlib.contextmanager
def noise_key(seed, step) -> Iterator[None]:
    """Draw training noise from (seed, step) inside the block."""
    _KEY.append((seed, step))
    try:
        yield
    finally:
        _KEY.pop()


def _fmix32(x):
    """MurmurHash3's 32-bit finaliser on int64 tensors or ints (low 32 bits kept after each multiply)."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _M32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _M32
    return x ^ (x >> 16)


def keyed_uniform(shape: tuple[int, ...], salt: int, device: torch.device) -> torch.Tensor | None:
    """Uniform [0, 1) float32 of `shape` from the active key and `salt`; None when no key is set."""
    if not _KEY:
        return None
    seed, step = _KEY[-1]
    base = _fmix32(_fmix32(seed * 0x27D4EB2F + salt * 0x165667B1) + step * 0x9E3779B1)
    n = 1
    for s in shape:
        n *= s
    idx = torch.arange(n, device=device, dtype=torch.int64).view(shape)
    return (_fmix32(idx * 0x9E3779B1 + base) >> 8).to(torch.float32) * (1.0 / (1 << 24))


class KeyedDropout(nn.Dropout):
    """`nn.Dropout` whose mask comes from the active noise key (see module docstring)."""

    salt: int = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        u = keyed_uniform(tuple(x.shape), self.salt, x.device)
        if u is None:
            return super().forward(x)
        return x * (u >= self.p).to(x.dtype) / (1.0 - self.p)


def assign_salts(model: nn.Module) -> nn.Module:
    """Give every keyed noise layer its position in `model` as salt (same model, same salts)."""
    for i, m in enumerate(model.modules()):
        if hasattr(m, "salt"):
            m.salt = i
    return model
