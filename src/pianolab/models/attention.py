"""Token mixers for the AST family, registered by name in `ATTENTION`.

Every kind maps x (B, N, dim) -> (B, N, dim) for the token layout of `pianolab.models.ast`:
N = 1 + f*t, a [CLS] token then the (f freq x t time) patch grid in time-major order
(token 1 + ti*f + fi). `grid=(f, t)` tells structured kinds where each token sits; [CLS] always
attends to and is attended by every token. `weights(x, grid)` returns the (B, heads, N, N) attention
matrix for diagnostics (rollout). Masks are built from shapes only (no host syncs, compile-friendly).
Extra options of a kind are listed in its `options` and come from the model config.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pianolab.models.noise import KeyedDropout
from pianolab.registry import Registry

ATTENTION: Registry[type[Attention]] = Registry("attention kind")


class Attention(nn.Module):
    """Base: qkv projection, heads, output projection; subclasses choose how tokens are mixed."""

    options: tuple[str, ...] = ()

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.0, proj_dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.attn_dropout = heads, attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = KeyedDropout(proj_dropout)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v  # each (B, H, N, d_head)

    def mask(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor | None:
        """(N, N) bool, True where query i may attend key j; None = full attention."""
        return None

    def _mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        p = self.attn_dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask(grid, q.device), dropout_p=p)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        q, k, v = self._qkv(x)
        out = self._mix(q, k, v, grid).transpose(1, 2).flatten(2)
        return self.proj_drop(self.proj(out))

    def weights(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        q, k, _ = self._qkv(x)
        scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(q.shape[-1])
        mask = self.mask(grid, x.device)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(-1)


def _grid_coords(grid: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(time index, freq index) of each patch token, each (f*t,), time-major order."""
    f, t = grid
    idx = torch.arange(f * t, device=device)
    return idx // f, idx % f


def _with_cls(allowed: torch.Tensor) -> torch.Tensor:
    """Grow an (M, M) patch mask to (1+M, 1+M) with a global [CLS] row and column."""
    m = allowed.shape[0]
    full = torch.ones(m + 1, m + 1, dtype=torch.bool, device=allowed.device)
    full[1:, 1:] = allowed
    return full


@ATTENTION.register("vanilla")
class VanillaAttention(Attention):
    """Full multi-head softmax attention through `F.scaled_dot_product_attention` (flash on CUDA)."""


@ATTENTION.register("local")
class LocalAttention(Attention):
    """Windowed attention: a patch sees patches at most `window` time steps away (all frequencies)."""

    options = ("window",)

    def __init__(self, dim: int, heads: int, window: int = 4, **kw):
        super().__init__(dim, heads, **kw)
        self.window = window

    def mask(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        ti, _ = _grid_coords(grid, device)
        return _with_cls((ti[:, None] - ti[None, :]).abs() <= self.window)


@ATTENTION.register("sparse")
class SparseAttention(Attention):
    """Block + strided pattern (Sparse Transformer-like) on the patch grid.

    A patch sees every patch in its block of `block` consecutive time steps, plus the patches of its own
    frequency row every `sparse_stride` time steps across the whole excerpt.
    """

    options = ("block", "sparse_stride")

    def __init__(self, dim: int, heads: int, block: int = 4, sparse_stride: int = 4, **kw):
        super().__init__(dim, heads, **kw)
        self.block, self.stride = block, sparse_stride

    def mask(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        ti, fi = _grid_coords(grid, device)
        same_block = (ti[:, None] // self.block) == (ti[None, :] // self.block)
        strided = (fi[:, None] == fi[None, :]) & ((ti[:, None] - ti[None, :]) % self.stride == 0)
        return _with_cls(same_block | strided)


@ATTENTION.register("linear")
class LinearAttention(Attention):
    """Kernelised linear attention, O(N) in tokens: softmax(qk^T) is replaced by phi(q) phi(k)^T.

    `kernel="elu"`: phi(x) = elu(x) + 1 (Katharopoulos et al. 2020). `kernel="favor"`: Performer's
    positive random features exp(w.x - |x|^2/2) with `n_features` fixed Gaussian directions (a buffer).
    Computed in float32 (autocast off) for stability; no attention dropout.
    """

    options = ("kernel", "n_features")

    def __init__(self, dim: int, heads: int, kernel: str = "elu", n_features: int = 64, **kw):
        super().__init__(dim, heads, **kw)
        if kernel not in ("elu", "favor"):
            raise ValueError(f"linear attention kernel must be 'elu' or 'favor', got {kernel!r}")
        self.kernel = kernel
        self.register_buffer("features", torch.randn(n_features, dim // heads) if kernel == "favor" else None)

    def _phi(self, x: torch.Tensor, is_query: bool) -> torch.Tensor:
        if self.kernel == "elu":
            return F.elu(x) + 1.0
        x = x * x.shape[-1] ** -0.25
        proj = x @ self.features.t() - 0.5 * (x * x).sum(-1, keepdim=True)
        stab = proj.amax(-1, keepdim=True) if is_query else proj.amax((-2, -1), keepdim=True)
        return torch.exp(proj - stab.detach()) + 1e-6

    def _features(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._phi(q.float(), True), self._phi(k.float(), False)

    def _mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        with torch.autocast(q.device.type, enabled=False):
            fq, fk = self._features(q, k)
            kv = fk.transpose(-2, -1) @ v.float()  # (B, H, r, d)
            norm = fq @ fk.sum(-2, keepdim=True).transpose(-2, -1)  # (B, H, N, 1)
            return ((fq @ kv) / norm.clamp_min(1e-6)).to(v.dtype)

    def weights(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        q, k, _ = self._qkv(x)
        with torch.autocast(x.device.type, enabled=False):
            fq, fk = self._features(q, k)
            scores = fq @ fk.transpose(-2, -1)
            return scores / scores.sum(-1, keepdim=True).clamp_min(1e-6)
