"""`spectral_norm: all` normalises every Linear layer of a model; `head` (= true) only the head's."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from pianolab.errors import PianolabError
from pianolab.models import create_model

SHAPES = {"ast_ultra_tiny": {"n_freq": 32, "n_frames": 32, "patch": 8, "attention": "linformer"},
          "hybrid_xattn": {"in_features": 6, "n_freq": 32, "n_frames": 32, "patch": 8},
          "symbolic_mlp": {"in_features": 6}}


def _linears(model: nn.Module) -> dict[str, bool]:
    """Every nn.Linear of the model: whether its weight is spectral-normalised."""
    return {name: parametrize.is_parametrized(m, "weight") and "weight" in m.parametrizations
            for name, m in model.named_modules() if isinstance(m, nn.Linear)}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_all_normalises_every_linear_and_head_only_the_head(name):
    everything = _linears(create_model(name, spectral_norm="all", **SHAPES[name]))
    assert len(everything) >= 3 and all(everything.values())
    for value in ("head", True):
        head_only = _linears(create_model(name, spectral_norm=value, **SHAPES[name]))
        assert [k for k, on in head_only.items() if on] == ["head.2"]
    assert not any(_linears(create_model(name, **SHAPES[name])).values())


def test_all_bounds_every_layer_and_reloads():
    """After a few training steps (and training-mode passes, one power iteration each) every Linear's
    effective weight has spectral norm ~1, and a model built from the same options loads the state (as
    predict and evaluate rebuild a checkpoint)."""
    torch.manual_seed(0)
    kw = {"spectral_norm": "all", **SHAPES["hybrid_xattn"]}
    model = create_model("hybrid_xattn", **kw).train()
    batch = {"spec": torch.randn(4, 1, 32, 32), "vector": torch.randn(4, 6)}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(batch).pow(2).mean().backward()
        opt.step()
    with torch.no_grad():
        for _ in range(30):
            model(batch)
        model.eval()
        norms = [float(torch.linalg.matrix_norm(m.weight, ord=2)) for m in model.modules() if isinstance(m, nn.Linear)]
        plain = [float(torch.linalg.matrix_norm(m.weight, ord=2)) for m in create_model("hybrid_xattn", **{
            **kw, "spectral_norm": False}).modules() if isinstance(m, nn.Linear)]
    assert max(abs(n - 1) for n in norms) < 0.1 < max(abs(n - 1) for n in plain)
    again = create_model("hybrid_xattn", **kw).eval()
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again(batch), model(batch))


def test_unknown_scope_is_refused():
    with pytest.raises(PianolabError, match="spectral_norm must be .*'all'.*got 'every'"):
        create_model("symbolic_mlp", in_features=6, spectral_norm="every")
