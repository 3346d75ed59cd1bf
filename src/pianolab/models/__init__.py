"""The model zoo: every neural model by name (`create_model`, `list_models`), timm-style.

A model maps a batch dict to (B, n_outputs), names the batch keys it reads in `inputs`, exposes
`embed(batch) -> (B, E)` and keeps its frozen config in `.config`. Classic (scikit-learn) regressors
live in `pianolab.models.classic` (`create_estimator`).
"""

from __future__ import annotations

from torch import nn

from pianolab.models import ast, hybrid, symbolic  # noqa: F401  (registers the models)
from pianolab.models.base import MODELS, register_model
from pianolab.models.encoder import AST_SIZES, attention_kinds
from pianolab.models.layers import spectral_normalise
from pianolab.models.noise import assign_salts

__all__ = ["MODELS", "create_model", "list_models", "parameter_count", "parameter_table", "register_model",
           "attention_kinds"]


def create_model(name: str, *, n_outputs: int = 19, in_channels: int = 1, n_freq: int = 128,
                 in_features: int | None = None, **overrides) -> nn.Module:
    """Build the registered model `name`; `overrides` are fields of its config (others: PianolabError)."""
    common = {"n_outputs": n_outputs, "in_channels": in_channels, "n_freq": n_freq,
              "in_features": in_features}
    model = MODELS.get(name)(common, overrides)
    return assign_salts(spectral_normalise(model, getattr(model.config, "spectral_norm", False)))


def list_models() -> list[str]:
    return MODELS.names()


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_table(patches: tuple[tuple[int, int], ...] = ((16, 16), (16, 10)), n_freq: int = 128,
                    n_frames: int = 1000) -> str:
    """Markdown table of real parameter counts of every AST size for (patch, stride) pairs."""
    lines = ["| model | " + " | ".join(f"patch {p} / stride {s}" for p, s in patches) + " |",
             "|---|" + "---|" * len(patches)]
    for size in AST_SIZES:
        counts = [parameter_count(create_model(f"ast_{size}", n_freq=n_freq, n_frames=n_frames, patch=p,
                                               stride=s)) for p, s in patches]
        lines.append(f"| ast_{size} | " + " | ".join(f"{c:,}" for c in counts) + " |")
    return "\n".join(lines)
