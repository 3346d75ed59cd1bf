"""Audio Spectrogram Transformer regressor (Gong et al. 2021), trained from scratch.

Registered sizes (layers, dim, heads): ast_ultra_tiny (3, 256, 4), ast_tiny (4, 320, 5),
ast_small (6, 384, 8), ast_medium (6, 512, 8). Every `ASTConfig` field is an override, e.g.
`create_model("ast_tiny", patch=16, stride=10, attention="local", window=8)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pianolab.models.base import build_config, register_model
from pianolab.models.encoder import AST_SIZES, ASTConfig, PatchEncoder
from pianolab.models.layers import make_head
from pianolab.models.multi_scale import MultiScaleEncoder


def build_encoder(cfg: ASTConfig) -> nn.Module:
    """The spectrogram encoder `cfg` asks for: spec -> (pooled (B, dim), tokens (B, N, dim))."""
    if cfg.attention == "multi_scale":
        return MultiScaleEncoder(cfg)
    return PatchEncoder(cfg, cfg.patch, cfg.stride or cfg.patch, cfg.attention)


class ASTRegressor(nn.Module):
    """batch["spec"] (B, C, F, T) -> (B, n_outputs); `embed` gives the pooled (B, dim) representation."""

    inputs: tuple[str, ...] = ("spec",)

    def __init__(self, cfg: ASTConfig):
        super().__init__()
        self.config = cfg
        self.encoder = build_encoder(cfg)
        self.head = make_head(cfg.dim, cfg.n_outputs, cfg.head_dropout, cfg.spectral_norm)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(batch["spec"])[0]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.embed(batch))

    def attention_maps(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Per block (B, heads, N, N) attention weights, for attention rollout."""
        return self.encoder.attention_maps(batch["spec"])


def _ast(name: str, size: str, common: Mapping[str, Any], overrides: Mapping[str, Any]) -> ASTRegressor:
    return ASTRegressor(build_config(ASTConfig, name, common, AST_SIZES[size], overrides))


@register_model
def ast_ultra_tiny(common: Mapping[str, Any], overrides: Mapping[str, Any]) -> ASTRegressor:
    return _ast("ast_ultra_tiny", "ultra_tiny", common, overrides)


@register_model
def ast_tiny(common: Mapping[str, Any], overrides: Mapping[str, Any]) -> ASTRegressor:
    return _ast("ast_tiny", "tiny", common, overrides)


@register_model
def ast_small(common: Mapping[str, Any], overrides: Mapping[str, Any]) -> ASTRegressor:
    return _ast("ast_small", "small", common, overrides)


@register_model
def ast_medium(common: Mapping[str, Any], overrides: Mapping[str, Any]) -> ASTRegressor:
    return _ast("ast_medium", "medium", common, overrides)
