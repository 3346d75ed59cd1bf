"""The model registry and the strict config builder every model factory uses."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from pianolab.errors import PianolabError
from pianolab.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
C = TypeVar("C")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a model factory under its function name (timm-style)."""
    return MODELS.register()(fn)


def build_config(cls: type[C], model: str, common: Mapping[str, Any], defaults: Mapping[str, Any],
                 overrides: Mapping[str, Any]) -> C:
    """Make a frozen config: defaults < common args (those `cls` has) < overrides.

    `common` holds create_model's shared keywords (n_outputs, in_channels, ...); a model takes the ones
    its config has and ignores the rest. An override the config lacks is a one-line PianolabError.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise PianolabError(f"model {model!r} does not accept {', '.join(unknown)}; "
                            f"valid overrides: {', '.join(sorted(fields))}")
    kwargs = {**defaults, **{k: v for k, v in common.items() if k in fields}, **overrides}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field left unset
        raise PianolabError(f"model {model!r}: {e}") from None
