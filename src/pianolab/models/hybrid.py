"""Hybrids: an AST branch over batch["spec"] fused with an MLP branch over batch["vector"].

`hybrid_concat`: [AST pooled, vector embedding] -> head.
`hybrid_gated`: a learned sigmoid gate mixes the AST embedding and the projected vector embedding.
`hybrid_xattn`: the vector embedding becomes `n_tokens` query tokens that cross-attend to the AST
tokens; [AST pooled, mean of the attended tokens] -> head.
The AST size is `size=` (ultra_tiny, tiny, small, medium); patch/stride/attention/... are direct
overrides, any other ASTConfig field goes in `ast={...}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pianolab.errors import PianolabError
from pianolab.models.ast import build_encoder
from pianolab.models.base import build_config, register_model
from pianolab.models.encoder import AST_SIZES, ASTConfig
from pianolab.models.layers import add_prior, make_head, start_at_zero
from pianolab.models.symbolic import VectorMLP

_AST_KEYS = ("n_outputs", "in_channels", "n_freq", "n_frames", "patch", "stride", "attention", "dropout",
             "drop_path")


@dataclass(frozen=True)
class HybridConfig:
    in_features: int | None
    n_outputs: int = 19
    in_channels: int = 1
    n_freq: int = 128
    n_frames: int = 1000
    size: str = "ultra_tiny"
    patch: int = 16
    stride: int | None = None
    attention: str = "vanilla"
    dropout: float = 0.1
    drop_path: float = 0.1
    ast: dict = field(default_factory=dict)  # further ASTConfig overrides
    hidden: int = 256  # vector MLP width
    vector_layers: int = 2
    head_dropout: float = 0.1
    spectral_norm: bool | str = False  # head (= true) or all: see models.layers.spectral_norm_scope
    n_tokens: int = 4  # xattn: query tokens made from the vector embedding
    prior_columns: int = 0  # the last N vector columns are a prior prediction to correct (features.stack)

    def __post_init__(self):
        if not self.in_features or self.in_features < 1:
            raise PianolabError("hybrid models need in_features (the width of batch['vector'])")
        if self.size not in AST_SIZES:
            raise PianolabError(f"unknown AST size {self.size!r}; valid: {', '.join(AST_SIZES)}")
        taken = sorted(set(self.ast) & {*_AST_KEYS, "depth", "dim", "heads"})
        if taken:
            raise PianolabError(f"set {', '.join(taken)} directly (or via size), not in ast={{...}}")

    def ast_config(self) -> ASTConfig:
        own = {k: getattr(self, k) for k in _AST_KEYS}
        return build_config(ASTConfig, f"hybrid AST ({self.size})", {}, AST_SIZES[self.size],
                            {**own, **self.ast})


class HybridBase(nn.Module):
    """Shared branches: `encoder` (spec -> pooled, tokens) and `vector` (vector -> (B, hidden))."""

    inputs: tuple[str, ...] = ("spec", "vector")

    def __init__(self, cfg: HybridConfig):
        super().__init__()
        self.config = cfg
        self.ast_config = cfg.ast_config()
        self.encoder = build_encoder(self.ast_config)
        self.vector = VectorMLP(cfg.in_features, cfg.hidden, cfg.vector_layers, cfg.dropout)

    def fuse(self, pooled: torch.Tensor, tokens: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pooled, tokens = self.encoder(batch["spec"])
        return self.fuse(pooled, tokens, self.vector(batch["vector"]))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return add_prior(self.head(self.embed(batch)), batch["vector"], self.config.prior_columns)

    def attention_maps(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The AST branch's per-block (B, heads, N, N) attention weights."""
        return self.encoder.attention_maps(batch["spec"])


class ConcatHybrid(HybridBase):
    """embed = [AST pooled (dim), vector embedding (hidden)]."""

    def __init__(self, cfg: HybridConfig):
        super().__init__(cfg)
        self.head = make_head(self.ast_config.dim + cfg.hidden, cfg.n_outputs, cfg.head_dropout,
                              cfg.spectral_norm)

    def fuse(self, pooled, tokens, vec):
        return torch.cat([pooled, vec], dim=-1)


class GatedHybrid(HybridBase):
    """embed = g * a + (1 - g) * W v with g = sigmoid(G [a, W v]) per channel (B, dim)."""

    def __init__(self, cfg: HybridConfig):
        super().__init__(cfg)
        dim = self.ast_config.dim
        self.project = nn.Linear(cfg.hidden, dim)
        self.gate = nn.Linear(2 * dim, dim)
        self.head = make_head(dim, cfg.n_outputs, cfg.head_dropout, cfg.spectral_norm)

    def fuse(self, pooled, tokens, vec):
        v = self.project(vec)
        g = torch.sigmoid(self.gate(torch.cat([pooled, v], dim=-1)))
        return g * pooled + (1 - g) * v


class XAttnHybrid(HybridBase):
    """Vector tokens (B, n_tokens, dim) cross-attend to AST tokens (B, N, dim) (pre-norm, residual);
    embed = [AST pooled, mean of the updated vector tokens] (B, 2*dim)."""

    def __init__(self, cfg: HybridConfig):
        super().__init__(cfg)
        dim, self.heads = self.ast_config.dim, self.ast_config.heads
        self.to_tokens = nn.Linear(cfg.hidden, cfg.n_tokens * dim)
        self.norm_q = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = make_head(2 * dim, cfg.n_outputs, cfg.head_dropout, cfg.spectral_norm)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, H, L, d_head)

    def fuse(self, pooled, tokens, vec):
        queries = self.to_tokens(vec).unflatten(-1, (self.config.n_tokens, -1))  # (B, n_tokens, dim)
        k, v = self.kv(tokens).chunk(2, dim=-1)
        att = F.scaled_dot_product_attention(self._split(self.q(self.norm_q(queries))), self._split(k),
                                             self._split(v))
        queries = queries + self.proj(att.transpose(1, 2).flatten(2))
        return torch.cat([pooled, queries.mean(1)], dim=-1)


def _hybrid(cls: type[HybridBase], name: str, common: Mapping[str, Any],
            overrides: Mapping[str, Any]) -> HybridBase:
    model = cls(build_config(HybridConfig, name, common, {}, overrides))
    if model.config.prior_columns:
        start_at_zero(model.head)
    return model


@register_model
def hybrid_concat(common: Mapping[str, Any], overrides: Mapping[str, Any]) -> HybridBase:
    return _hybrid(ConcatHybrid, "hybrid_concat", common, overrides)


@register_model
def hybrid_gated(common: Mapping[str, Any], overrides: Mapping[str, Any]) -> HybridBase:
    return _hybrid(GatedHybrid, "hybrid_gated", common, overrides)


@register_model
def hybrid_xattn(common: Mapping[str, Any], overrides: Mapping[str, Any]) -> HybridBase:
    return _hybrid(XAttnHybrid, "hybrid_xattn", common, overrides)


