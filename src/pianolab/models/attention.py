"""Token mixers for the AST family, registered by name in `ATTENTION` (docs/models.md compares them).

Every kind maps x (B, N, dim) -> (B, N, dim) for the token layout of `pianolab.models.ast`:
N = 1 + f*t, a [CLS] token then the (f freq x t time) patch grid in time-major order
(token 1 + ti*f + fi). `grid=(f, t)` tells structured kinds where each token sits; [CLS] always
attends to and is attended by every token. `weights(x, grid)` returns the (B, heads, N, N) matrix
each kind applies to the values, for diagnostics (rollout). Extra options of a kind are listed in its
`options` and come from the model config; `tokens` is the sequence length the model is built for.

- `vanilla`: full softmax attention, O(N^2).
- `local`, `sparse`: softmax attention restricted to a pattern. On CUDA, from 1024 tokens, they run
  FlexAttention with a block mask, which skips the 128 x 128 tiles the pattern leaves empty (compute
  and memory grow with the allowed pairs, not N^2). On the CPU, below 1024 tokens (where the patterns
  leave few tiles empty) and with attention dropout while training (FlexAttention has no dropout), they
  run the dense masked kernel: the same numbers, no saving.
- `linear`: kernelised linear attention with phi(x) = elu(x) + 1 (Katharopoulos et al. 2020), O(N).
- `performer`: FAVOR+ (Choromanski et al. 2021): positive orthogonal random features approximating
  the softmax kernel, O(N * n_features); `redraw` > 0 draws new features every `redraw` training calls.
- `linformer`: keys and values projected along the sequence to `proj_len` rows (Wang et al. 2020),
  O(N * proj_len); built for `tokens` tokens (shorter inputs are zero-padded, longer ones refused).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pianolab.errors import PianolabError
from pianolab.models.noise import KeyedDropout
from pianolab.registry import Registry

ATTENTION: Registry[type[Attention]] = Registry("attention kind")
MaskMod = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (query index, key index) -> allowed


class Attention(nn.Module):
    """Base: qkv projection, heads, output projection; subclasses choose how tokens are mixed."""

    options: tuple[str, ...] = ()

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.0, proj_dropout: float = 0.0,
                 tokens: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.attn_dropout = heads, attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = KeyedDropout(proj_dropout)

    @property
    def packing_problem(self) -> str | None:
        """Why a packed run (`pianolab.train.packed`) cannot reproduce this layer alone (None: it can)."""
        return None

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


@ATTENTION.register("vanilla")
class VanillaAttention(Attention):
    """Full multi-head softmax attention through `F.scaled_dot_product_attention` (flash on CUDA)."""


# --- patterns: one definition serves the dense mask (broadcast indices) and FlexAttention (scalars) ---

def _local_mod(f: int, window: int) -> MaskMod:
    """[CLS] row and column, and patches at most `window` time steps apart."""
    return lambda q, kv: (q == 0) | (kv == 0) | (((q - 1) // f - (kv - 1) // f).abs() <= window)


def _block_mod(f: int, block: int) -> MaskMod:
    """[CLS] row and column, and patches in the same block of `block` time steps."""
    return lambda q, kv: (q == 0) | (kv == 0) | ((q - 1) // f // block == (kv - 1) // f // block)


def _strided_order(grid: tuple[int, int], stride: int, device: torch.device) -> torch.Tensor:
    """The patch tokens (0-based, without [CLS]) sorted by (frequency row, time step mod `stride`, time
    step): each strided group is contiguous."""
    f, t = grid
    idx = torch.arange(f * t, device=device)
    ti, fi = idx // f, idx % f
    return torch.argsort((fi * stride + ti % stride) * t + ti)


def _strided_mod(grid: tuple[int, int], block: int, stride: int, device: torch.device) -> MaskMod:
    """On the patch tokens in `_strided_order`: same frequency row, time steps a multiple of `stride`
    apart, and not in the same block (those pairs belong to the block pattern)."""
    f, _ = grid
    order = _strided_order(grid, stride, device)
    ti, fi = order // f, order % f
    group, blk = fi * stride + ti % stride, ti // block
    return lambda q, kv: (group[q] == group[kv]) & (blk[q] != blk[kv])


def _dense(mod: MaskMod, n: int, device: torch.device) -> torch.Tensor:
    i = torch.arange(n, device=device)
    return mod(i[:, None], i[None, :])


@functools.lru_cache(maxsize=64)
def _block_mask(pattern: tuple, n: int, device: str):
    """FlexAttention's block mask of a pattern, built once per (pattern, length, device)."""
    from torch.nn.attention.flex_attention import create_block_mask

    name, *args = pattern
    mod = {"local": _local_mod, "block": _block_mod, "strided": _strided_mod}[name]
    mod = mod(*args, torch.device(device)) if name == "strided" else mod(*args)
    return create_block_mask(lambda b, h, q, kv: mod(q, kv), None, None, n, n, device=device)


@torch.compiler.disable
def _cached_block_mask(pattern: tuple, n: int, device: torch.device):
    return _block_mask(pattern, n, str(device))


@functools.cache
def _compiled_flex():
    """FlexAttention compiled (eager it materialises every score; inside a compiled model it is inlined)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: tuple,
         compiled: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention over the pairs of `pattern` with FlexAttention: (output, log-sum-exp (B, H, N))."""
    from torch.nn.attention.flex_attention import AuxRequest, flex_attention

    fn = _compiled_flex() if compiled else flex_attention
    out, aux = fn(q, k, v, block_mask=_cached_block_mask(pattern, q.shape[-2], q.device),
                  return_aux=AuxRequest(lse=True))
    return out, aux.lse


class PatternAttention(Attention):
    """Softmax attention restricted to `mask`; `flex_mix` is the block-sparse version of `_mix`, used on
    CUDA from `FLEX_FROM` tokens: below, the patterns keep about as many 128 x 128 tiles as full attention
    (docs/models.md), and the dense masked kernel is as fast without compiling."""

    FLEX_FROM = 1024

    def _mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        if q.is_cuda and q.shape[-2] >= self.FLEX_FROM and not (self.training and self.attn_dropout):
            return self.flex_mix(q, k, v, grid)
        return super()._mix(q, k, v, grid)

    def flex_mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int],
                 compiled: bool = True) -> torch.Tensor:
        raise NotImplementedError


@ATTENTION.register("local")
class LocalAttention(PatternAttention):
    """Windowed attention: a patch sees patches at most `window` time steps away (all frequencies)."""

    options = ("window",)

    def __init__(self, dim: int, heads: int, window: int = 4, **kw):
        super().__init__(dim, heads, **kw)
        if window < 0:
            raise PianolabError(f"local attention: window must be >= 0, got {window}")
        self.window = window

    def mask(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        return _dense(_local_mod(grid[0], self.window), 1 + grid[0] * grid[1], device)

    def flex_mix(self, q, k, v, grid, compiled=True):
        return flex(q, k, v, ("local", grid[0], self.window), compiled)[0]


@ATTENTION.register("sparse")
class SparseAttention(PatternAttention):
    """Block + strided pattern (Sparse Transformer-like) on the patch grid.

    A patch sees every patch in its block of `block` consecutive time steps, plus the patches of its own
    frequency row every `sparse_stride` time steps across the whole excerpt. On CUDA the two patterns
    run as two block-sparse passes, the strided one on the tokens reordered so that each strided group
    is contiguous, and their softmaxes are merged exactly through their log-sum-exps.
    """

    options = ("block", "sparse_stride")

    def __init__(self, dim: int, heads: int, block: int = 4, sparse_stride: int = 4, **kw):
        super().__init__(dim, heads, **kw)
        if block < 1 or sparse_stride < 1:
            raise PianolabError(f"sparse attention: block and sparse_stride must be >= 1, got {block}, "
                                f"{sparse_stride}")
        self.block, self.stride = block, sparse_stride

    def mask(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        f, t = grid
        n = 1 + f * t
        allowed = _dense(_block_mod(f, self.block), n, device)
        order = _strided_order(grid, self.stride, device) + 1
        strided = _dense(_strided_mod(grid, self.block, self.stride, device), n - 1, device)
        allowed[order[:, None], order[None, :]] |= strided
        return allowed

    def flex_mix(self, q, k, v, grid, compiled=True):
        out_a, lse_a = flex(q, k, v, ("block", grid[0], self.block), compiled)
        order = _strided_order(grid, self.stride, q.device) + 1
        out_b, lse_b = flex(*(x.index_select(2, order) for x in (q, k, v)),
                            ("strided", grid, self.block, self.stride), compiled)
        back = torch.argsort(order)
        out_b, lse_b = out_b.index_select(2, back), lse_b.index_select(2, back)
        lse_b = F.pad(lse_b, (1, 0), value=float("-inf"))  # [CLS] is all in the block pass
        out_b = F.pad(out_b, (0, 0, 1, 0))
        top = torch.maximum(lse_a, lse_b)
        wa, wb = torch.exp(lse_a - top)[..., None], torch.exp(lse_b - top)[..., None]
        return ((out_a.float() * wa + out_b.float() * wb) / (wa + wb)).to(q.dtype)


class KernelAttention(Attention):
    """softmax(q k^T) replaced by phi(q) phi(k)^T, computed as phi(q) (phi(k)^T v): O(N) in tokens.
    In float32 (autocast off) for stability; no attention dropout."""

    def _phi(self, x: torch.Tensor, is_query: bool) -> torch.Tensor:
        raise NotImplementedError

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


@ATTENTION.register("linear")
class LinearAttention(KernelAttention):
    """Linear transformer attention (Katharopoulos et al. 2020): phi(x) = elu(x) + 1."""

    def _phi(self, x: torch.Tensor, is_query: bool) -> torch.Tensor:
        return F.elu(x) + 1.0


def orthogonal_gaussian(n: int, d: int, device: torch.device | None = None) -> torch.Tensor:
    """(n, d) rows orthogonal in blocks of d, each row's length that of a d-dim Gaussian vector
    (Performer's orthogonal random features)."""
    blocks = [torch.linalg.qr(torch.randn(d, d, device=device))[0].T for _ in range(-(-n // d))]
    return torch.cat(blocks)[:n] * torch.randn(n, d, device=device).norm(dim=1, keepdim=True)


@ATTENTION.register("performer")
class PerformerAttention(KernelAttention):
    """FAVOR+ (Choromanski et al. 2021): phi(x) = exp(w.x - |x|^2 / 2) over `n_features` orthogonal
    Gaussian directions w (a buffer), x scaled by d^-1/4, so that E[phi(q).phi(k)] = exp(q.k / sqrt(d)):
    an unbiased estimate of the softmax kernel. `redraw` > 0: new directions every `redraw` training
    calls (from torch's generator, on the device; 0 keeps the ones drawn at construction)."""

    options = ("n_features", "redraw")

    def __init__(self, dim: int, heads: int, n_features: int = 128, redraw: int = 0, **kw):
        super().__init__(dim, heads, **kw)
        if n_features < 1 or redraw < 0:
            raise PianolabError(f"performer attention: n_features must be >= 1 and redraw >= 0, got "
                                f"{n_features}, {redraw}")
        self.n_features, self.redraw = n_features, redraw
        self.register_buffer("features", orthogonal_gaussian(n_features, dim // heads))
        if redraw:
            self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    @property
    def packing_problem(self) -> str | None:
        return "performer attention redraws its random features (redraw > 0)" if self.redraw else None

    def _redraw(self) -> None:
        """Every `redraw`-th training call, new directions (drawn every call, kept when due: no host sync)."""
        with torch.no_grad():
            self.calls += 1
            fresh = orthogonal_gaussian(*self.features.shape, device=self.features.device)
            self.features.copy_(torch.where(self.calls % self.redraw == 0, fresh, self.features))

    def _features(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.redraw and self.training:
            self._redraw()
        return super()._features(q, k)

    def _phi(self, x: torch.Tensor, is_query: bool) -> torch.Tensor:
        x = x * x.shape[-1] ** -0.25
        proj = x @ self.features.t() - 0.5 * (x * x).sum(-1, keepdim=True)
        # a query's own maximum, or one per sequence for the keys: constants that cancel in the normalisation
        stab = proj.amax(-1, keepdim=True) if is_query else proj.amax((-2, -1), keepdim=True)
        return torch.exp(proj - stab.detach()) + 1e-6


@ATTENTION.register("linformer")
class LinformerAttention(Attention):
    """Linformer (Wang et al. 2020): softmax(q (E k)^T / sqrt(d)) (F v), E and F learned (proj_len x
    tokens) projections of the sequence, shared by the heads, one pair per layer. Inputs shorter than
    `tokens` are zero-padded (only their tokens are projected); longer ones are refused."""

    options = ("proj_len",)

    def __init__(self, dim: int, heads: int, proj_len: int = 64, tokens: int | None = None, **kw):
        super().__init__(dim, heads, **kw)
        if tokens is None or proj_len < 1:
            raise PianolabError(f"linformer attention needs its sequence length and proj_len >= 1 "
                                f"(got tokens={tokens}, proj_len={proj_len})")
        self.tokens = tokens
        self.project_k = nn.Linear(tokens, proj_len, bias=False)
        self.project_v = nn.Linear(tokens, proj_len, bias=False)

    def _project(self, x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        """(B, H, N, d) -> (B, H, proj_len, d) along the tokens."""
        n = x.shape[-2]
        if n > self.tokens:
            raise PianolabError(f"linformer attention was built for {self.tokens} tokens, got {n} "
                                f"(a longer spectrogram than the model's n_frames)")
        return layer(F.pad(x.transpose(-2, -1), (0, self.tokens - n))).transpose(-2, -1)

    def _mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        p = self.attn_dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, self._project(k, self.project_k),
                                              self._project(v, self.project_v), dropout_p=p)

    def weights(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, H, N, N): the softmax over the projected keys times the value projection, i.e. the
        linear map applied to the values (its rows need not sum to one)."""
        q, k, _ = self._qkv(x)
        scores = (q @ self._project(k, self.project_k).transpose(-2, -1)).float() / math.sqrt(q.shape[-1])
        return scores.softmax(-1) @ self.project_v.weight[:, : x.shape[1]].float()
