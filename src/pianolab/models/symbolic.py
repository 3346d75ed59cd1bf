"""MLP regressor over the feature vector (classic and/or symbolic features, standardised)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pianolab.errors import PianolabError
from pianolab.models.base import build_config, register_model
from pianolab.models.layers import add_prior, make_head, start_at_zero
from pianolab.models.noise import KeyedDropout


@dataclass(frozen=True)
class SymbolicConfig:
    in_features: int | None
    n_outputs: int = 19
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.2
    norm: str = "layer"  # layer | batch
    head_dropout: float = 0.0
    spectral_norm: bool | str = False  # head (= true) or all: see models.layers.spectral_norm_scope
    prior_columns: int = 0  # the last N vector columns are a prior prediction to correct (features.stack)

    def __post_init__(self):
        if not self.in_features or self.in_features < 1:
            raise PianolabError("symbolic_mlp needs in_features (the width of batch['vector'])")
        if self.norm not in ("layer", "batch"):
            raise PianolabError(f"norm must be 'layer' or 'batch', got {self.norm!r}")


class VectorMLP(nn.Module):
    """(B, D) -> (B, hidden): `layers` x [Linear, LayerNorm or BatchNorm, GELU, Dropout]."""

    def __init__(self, in_features: int, hidden: int, layers: int, dropout: float, norm: str = "layer"):
        super().__init__()
        norm_cls = nn.LayerNorm if norm == "layer" else nn.BatchNorm1d
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Linear(in_features if i == 0 else hidden, hidden), norm_cls(hidden), nn.GELU(),
                     KeyedDropout(dropout)]
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SymbolicMLP(nn.Module):
    """batch["vector"] (B, D) -> (B, n_outputs); `embed` gives the last hidden layer (B, hidden)."""

    inputs: tuple[str, ...] = ("vector",)

    def __init__(self, cfg: SymbolicConfig):
        super().__init__()
        self.config = cfg
        self.body = VectorMLP(cfg.in_features, cfg.hidden, cfg.layers, cfg.dropout, cfg.norm)
        self.head = make_head(cfg.hidden, cfg.n_outputs, cfg.head_dropout, cfg.spectral_norm)
        if cfg.prior_columns:
            start_at_zero(self.head)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.body(batch["vector"])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return add_prior(self.head(self.embed(batch)), batch["vector"], self.config.prior_columns)


@register_model
def symbolic_mlp(common: Mapping[str, Any], overrides: Mapping[str, Any]) -> SymbolicMLP:
    return SymbolicMLP(build_config(SymbolicConfig, "symbolic_mlp", common, {}, overrides))
