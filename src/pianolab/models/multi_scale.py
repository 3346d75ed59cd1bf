"""Multi-scale AST encoder: parallel patch encoders at several patch sizes, fused into one embedding."""

from __future__ import annotations

import torch
from torch import nn

from pianolab.models.encoder import ASTConfig, PatchEncoder


class MultiScaleEncoder(nn.Module):
    """spec (B, C, F, T) -> pooled (B, dim), tokens (B, sum_i N_i, dim).

    One `PatchEncoder` per patch size in `cfg.scales` (stride = patch, attention `cfg.branch_attention`,
    `cfg.depth` blocks each); their pooled embeddings are concatenated and fused by Linear + GELU.
    Tokens of all branches are concatenated (each branch keeps its own [CLS] first).
    """

    def __init__(self, cfg: ASTConfig):
        super().__init__()
        self.branches = nn.ModuleList(PatchEncoder(cfg, s, s, cfg.branch_attention) for s in cfg.scales)
        self.fuse = nn.Sequential(nn.Linear(cfg.dim * len(cfg.scales), cfg.dim), nn.GELU())

    def forward(self, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [branch(spec) for branch in self.branches]
        pooled = self.fuse(torch.cat([p for p, _ in outs], dim=-1))
        return pooled, torch.cat([t for _, t in outs], dim=1)

    def attention_maps(self, spec: torch.Tensor) -> list[torch.Tensor]:
        """Every branch's per-block maps, branch by branch (token counts differ between branches)."""
        return [m for branch in self.branches for m in branch.attention_maps(spec)]
