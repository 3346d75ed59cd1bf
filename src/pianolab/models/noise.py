"""Keyed training noise: dropout and stochastic depth drawn from a hash of (seed, step, layer, element).

A torch generator cannot be given to `nn.Dropout`, and inside `torch.func.vmap` every member of a
packed model would draw from one shared stream. Keyed noise instead depends only on the run's seed,
its optimiser step (a device counter, so no host sync), the layer's salt (its position in the
model, set by `assign_salts`), how often the layer was called before in this step (a layer used
twice draws two independent masks) and the element's index: a cell draws the same masks whether it trains
alone or packed with others (`pianolab.train.packed`). The trainer sets the key with
`noise_key(seed, step)`; with no key set, training falls back to torch's global generator. A grouped
model (`pianolab.models.grouped`) sets (M,) tensors of seeds and steps: member i's rows of a draw
are what member i draws alone.

The hash is integer arithmetic, so it is exact however it is computed: on CUDA, outside `vmap`
(`fused=True`), it runs as one `torch.compile`d kernel instead of a dozen int64 passes, with the
same bits. (An int32 version, the same bits, was tried and dropped: it saved ~0.6 ms of a 45 ms packed
GPU step but made compiling the packed model ~35 % longer: docs/benchmarks.md, "Seventh GPU pass".)
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

import torch
from torch import nn

_M32 = 0xFFFFFFFF
_LOCAL = threading.local()  # per thread (cells trained as threads, `ab.backends.threads`): a stack of
# (seed, step, fused, calls per salt); seed/step ints or int64 tensors


def _keys() -> list:
    if not hasattr(_LOCAL, "keys"):
        _LOCAL.keys = []
    return _LOCAL.keys


@contextlib.contextmanager
def noise_key(seed, step, fused: bool = False) -> Iterator[None]:
    """Draw training noise from (seed, step) inside the block; `fused`: compile the hash (CUDA)."""
    _keys().append((seed, step, fused, {}))
    try:
        yield
    finally:
        _keys().pop()


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
    keys = _keys()
    if not keys:
        return None
    seed, step, fused, calls = keys[-1]
    call = calls[salt] = calls.get(salt, -1) + 1
    base = _fmix32(_fmix32(seed * 0x27D4EB2F + salt * 0x165667B1 + call * 0x61C88647) + step * 0x9E3779B1)
    n = 1
    for s in shape:
        n *= s
    if getattr(base, "ndim", 0) == 1:  # one key per member of a grouped model, whose rows come member
        base, n = base[:, None], n // base.shape[0]  # by member: each draws its part from its own key
    # inside a compiled model the hash is compiled with it; `fused` is for eager callers
    uniform = fused_uniform() if fused and not torch.compiler.is_compiling() else None
    return (uniform or _uniform)(base, n, device).view(shape)


# 0x9E3779B1 - 2**32: the same low 32 bits after masking, and an int32 literal.
_GOLDEN_SIGNED = 0x9E3779B1 - (1 << 32)


def _uniform(base, n: int, device: torch.device) -> torch.Tensor:
    """The element index is xor-ed with the key before any multiply: Inductor folds a multiply of a bare
    index into its (int32 on CUDA) index arithmetic, where the constant times the tensor's strides
    overflows ("Scalar -419976072960 is out of range for type int32"); after the xor it is a value."""
    idx = torch.arange(n, device=device, dtype=torch.int64)
    return (_fmix32((idx ^ base) * _GOLDEN_SIGNED + base) >> 8).to(torch.float32) * (1.0 / (1 << 24))


@functools.cache
def fused_uniform():
    """`_uniform` compiled into one kernel, or None where torch.compile is unavailable. Compiled on first
    use; threads that train at once call it first from one thread (compiling is not thread-safe)."""
    try:
        compiled = torch.compile(_uniform, dynamic=True)
        compiled(torch.zeros((), dtype=torch.int64, device="cuda"), 8, torch.device("cuda"))
        return compiled
    except Exception:  # noqa: BLE001 - no compiler/triton here: the eager hash gives the same bits
        return None


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
