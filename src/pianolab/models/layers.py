"""Small shared layers: stochastic depth, MLP, pre-norm transformer block, regression head, spectral norm."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from pianolab.errors import PianolabError
from pianolab.models.attention import ATTENTION
from pianolab.models.noise import KeyedDropout, keyed_uniform


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability `p` (rescaled when kept).
    Keyed noise (`pianolab.models.noise`) when the trainer set a key, torch's generator otherwise."""

    salt: int = 0

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        u = keyed_uniform(shape, self.salt, x.device)
        keep = (torch.rand(shape, device=x.device) if u is None else u) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class MLP(nn.Module):
    """Token-wise feed-forward: Linear -> GELU -> Dropout -> Linear -> Dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), KeyedDropout(dropout),
                                 nn.Linear(hidden, dim), KeyedDropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(self, dim: int, heads: int, attention: str, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 attn_dropout: float = 0.0, drop_path: float = 0.0, **attention_kw):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ATTENTION.get(attention)(dim, heads, attn_dropout=attn_dropout, proj_dropout=dropout,
                                             **attention_kw)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x (B, 1 + f*t, dim) -> same shape; `grid` = (f, t) patch grid behind the [CLS] token."""
        x = x + self.drop_path(self.attn(self.norm1(x), grid))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def attention_weights(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, heads, N, N) attention weights this block would apply to `x`."""
        return self.attn.weights(self.norm1(x), grid)


SPECTRAL_NORM = {"none": "no layer", "head": "the head's output Linear", "all": "every nn.Linear of the model"}


def spectral_norm_scope(value: bool | str | None) -> str:
    """The `spectral_norm` option as a scope of SPECTRAL_NORM (false = none, true = head)."""
    if isinstance(value, bool) or value is None:
        return "head" if value else "none"
    if not isinstance(value, str) or value not in SPECTRAL_NORM:
        raise PianolabError(f"spectral_norm must be false, true (= head), 'head', 'all' or 'none', got {value!r}")
    return value


def make_head(dim: int, n_outputs: int, dropout: float = 0.0, spectral_norm: bool | str = False) -> nn.Sequential:
    """Regression head (B, dim) -> (B, n_outputs): LayerNorm, dropout, Linear (spectral-normed unless
    `spectral_norm` is off)."""
    linear = nn.Linear(dim, n_outputs)
    if spectral_norm_scope(spectral_norm) != "none":
        linear = _spectral_norm(linear)
    return nn.Sequential(nn.LayerNorm(dim), KeyedDropout(dropout), linear)


def spectral_normalise(model: nn.Module, spectral_norm: bool | str) -> nn.Module:
    """Under `spectral_norm: all`, give every nn.Linear of `model` (attention projections, MLPs, fusion
    layers, head) torch's spectral-norm parametrization (Miyato et al. 2018); other scopes leave it."""
    if spectral_norm_scope(spectral_norm) == "all":
        for m in [m for m in model.modules() if isinstance(m, nn.Linear)]:
            if not parametrize.is_parametrized(m, "weight"):
                _spectral_norm(m)
    return model


def add_prior(out: torch.Tensor, vector: torch.Tensor, columns: int) -> torch.Tensor:
    """`out` plus the last `columns` columns of `vector`: a prior prediction in the model's (standardised)
    target units, e.g. the stacked trees' (features.stack), which the model then only corrects."""
    return out + vector[:, -columns:].to(out.dtype) if columns else out


def start_at_zero(head: nn.Sequential) -> None:
    """Zero the head's output layer, so that a model with a prior starts from the prior itself
    (left as is under spectral normalisation, which cannot normalise a zero matrix)."""
    linear = head[-1]
    if isinstance(linear, nn.Linear) and not hasattr(linear, "weight_orig"):
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
