"""The AST config and its single-scale patch encoder (spectrogram -> pooled embedding + tokens)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pianolab.errors import PianolabError
from pianolab.models.attention import ATTENTION
from pianolab.models.grouped import group_aware
from pianolab.models.layers import Block
from pianolab.models.noise import KeyedDropout

AST_SIZES: dict[str, dict[str, int]] = {
    "ultra_tiny": {"depth": 3, "dim": 256, "heads": 4},
    "tiny": {"depth": 4, "dim": 320, "heads": 5},
    "small": {"depth": 6, "dim": 384, "heads": 8},
    "medium": {"depth": 6, "dim": 512, "heads": 8},
}


def attention_kinds() -> list[str]:
    """Every value the `attention` option takes: the registered token mixers and `multi_scale`."""
    return sorted([*ATTENTION.names(), "multi_scale"])


@dataclass(frozen=True)
class ASTConfig:
    """AST hyper-parameters. The positional grid is built for (n_freq x n_frames) inputs and
    interpolated for other sizes. `stride=None` means stride = patch (no overlap)."""

    depth: int
    dim: int
    heads: int
    n_outputs: int = 19
    in_channels: int = 1
    n_freq: int = 128
    n_frames: int = 1000
    patch: int = 16
    stride: int | None = None
    mlp_ratio: float = 4.0
    dropout: float = 0.1  # MLP and attention-output dropout
    attn_dropout: float = 0.0
    drop_path: float = 0.1  # stochastic depth of the last block (linear from 0 over depth)
    head_dropout: float = 0.0
    spectral_norm: bool | str = False  # head (= true): the head's Linear; all: every Linear (models.layers)
    pool: str = "cls"  # cls | mean (of the patch tokens)
    attention: str = "vanilla"  # see attention_kinds()
    window: int = 4  # local: time steps each side
    block: int = 4  # sparse: time steps per block
    sparse_stride: int = 4  # sparse: time-step stride of the strided (same frequency row) pattern
    n_features: int = 128  # performer: random features
    redraw: int = 0  # performer: redraw the features every N training calls (0: never)
    proj_len: int = 64  # linformer: length the keys and values are projected to
    scales: tuple[int, ...] = (16, 32)  # multi_scale: patch size (= stride) of each branch
    branch_attention: str = "vanilla"  # multi_scale: attention kind inside each branch

    def __post_init__(self):
        object.__setattr__(self, "scales", tuple(self.scales))
        if self.attention not in attention_kinds():
            raise PianolabError(f"unknown attention kind {self.attention!r}; valid: "
                                f"{', '.join(attention_kinds())}")
        ATTENTION.get(self.branch_attention)
        if self.pool not in ("cls", "mean"):
            raise PianolabError(f"pool must be 'cls' or 'mean', got {self.pool!r}")
        if self.dim % self.heads:
            raise PianolabError(f"dim {self.dim} is not divisible by heads {self.heads}")
        patches = self.scales if self.attention == "multi_scale" else (self.patch,)
        if max(patches) > min(self.n_freq, self.n_frames) or (self.stride is not None and self.stride < 1):
            raise PianolabError(f"patch {max(patches)} / stride {self.stride} do not fit a "
                                f"{self.n_freq} x {self.n_frames} input")


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


@group_aware
class PatchEncoder(nn.Module):
    """spec (B, C, F, T) -> pooled (B, dim), tokens (B, 1 + f*t, dim) after the final LayerNorm.

    Conv patch embedding (kernel `patch`, stride `stride`; overlapping when stride < patch), [CLS] +
    learned positional embeddings over the (f x t) patch grid, pre-norm blocks. A grid other than the
    one built for (another T) bilinearly interpolates the positional embeddings. T must be >= patch.
    """

    def __init__(self, cfg: ASTConfig, patch: int, stride: int, attention: str):
        super().__init__()
        self.pool = cfg.pool
        self.patch_embed = nn.Conv2d(cfg.in_channels, cfg.dim, kernel_size=patch, stride=stride)
        self.grid = ((cfg.n_freq - patch) // stride + 1, (cfg.n_frames - patch) // stride + 1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], cfg.dim))
        self.pos_drop = KeyedDropout(cfg.dropout)
        options = {k: getattr(cfg, k) for k in ATTENTION.get(attention).options}
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.heads, attention, cfg.mlp_ratio, cfg.dropout, cfg.attn_dropout, r,
                  tokens=1 + self.grid[0] * self.grid[1], **options)
            for r in rates)
        self.norm = nn.LayerNorm(cfg.dim)
        for p in (self.cls_token, self.cls_pos, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        self.apply(_init)

    def _pos(self, f: int, t: int) -> torch.Tensor:
        """Positional embeddings (G, f*t, dim) for an (f x t) grid, time-major (G = 1, or the members of a
        grouped model: `pianolab.models.grouped`)."""
        f0, t0 = self.grid
        pos = self.pos_embed.reshape(-1, t0 * f0, self.pos_embed.shape[-1])
        if (f, t) == self.grid:
            return pos
        pos = pos.unflatten(1, (t0, f0)).permute(0, 3, 2, 1)  # (G, dim, f0, t0)
        pos = F.interpolate(pos, size=(f, t), mode="bilinear", align_corners=False)
        return pos.permute(0, 3, 2, 1).flatten(1, 2)

    def _tokens(self, spec: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.patch_embed(spec)  # (B, dim, f, t)
        f, t = x.shape[-2], x.shape[-1]
        pos = self._pos(f, t)
        g, dim = pos.shape[0], pos.shape[-1]  # a grouped model's batch is its G members' batches in turn
        x = (x.permute(0, 3, 2, 1).flatten(1, 2).unflatten(0, (g, -1)) + pos[:, None]).flatten(0, 1)
        cls = (self.cls_token + self.cls_pos).reshape(g, 1, 1, dim).expand(-1, x.shape[0] // g, -1, -1)
        return self.pos_drop(torch.cat([cls.flatten(0, 1).to(x.dtype), x], dim=1)), (f, t)

    def forward(self, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, grid = self._tokens(spec)
        for blk in self.blocks:
            x = blk(x, grid)
        x = self.norm(x)
        pooled = x[:, 0] if self.pool == "cls" else x[:, 1:].mean(1)
        return pooled, x

    @torch.no_grad()
    def attention_maps(self, spec: torch.Tensor) -> list[torch.Tensor]:
        """Per block (B, heads, N, N) attention weights (N = 1 + f*t), first block first."""
        x, grid = self._tokens(spec)
        maps = []
        for blk in self.blocks:
            maps.append(blk.attention_weights(x, grid))
            x = blk(x, grid)
        return maps
