"""Each loss behaves as named on hand-checked cases."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pianolab.errors import PianolabError
from pianolab.train.objective import OBJECTIVES, make_objective, shrink_targets


def _target(b: int = 8, d: int = 3) -> torch.Tensor:
    return torch.randn(b, d, generator=torch.Generator().manual_seed(0))


def test_mse_and_huber_match_torch():
    p, t = _target(), _target().flip(0)
    assert torch.allclose(make_objective("mse")(p, t), F.mse_loss(p, t))
    assert torch.allclose(make_objective("huber", delta=0.5)(p, t), F.huber_loss(p, t, delta=0.5))


def test_correlation_loss():
    t = _target()
    loss = make_objective("correlation")
    assert loss(2 * t + 1, t).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(-3 * t, t).item() == pytest.approx(2.0, abs=1e-6)
    p = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    y = torch.tensor([[1.0], [3.0], [2.0], [4.0]])  # r = 0.8 by hand
    assert loss(p, y).item() == pytest.approx(0.2, abs=1e-6)


@pytest.mark.parametrize("kind", ["logistic", "hinge"])
def test_ranking_prefers_right_order(kind):
    t = _target()
    loss = make_objective("ranking", kind=kind)
    assert loss(t, t) < loss(-t, t)
    # hand-checked: two items, target order 1 > 0, prediction gap +2 (right) or -2 (wrong)
    y = torch.tensor([[0.0], [1.0]])
    right, wrong = torch.tensor([[0.0], [2.0]]), torch.tensor([[2.0], [0.0]])
    if kind == "logistic":
        assert loss(right, y).item() == pytest.approx(np.log1p(np.exp(-2.0)), rel=1e-5)
        assert loss(wrong, y).item() == pytest.approx(np.log1p(np.exp(2.0)), rel=1e-5)
    else:
        assert loss(right, y).item() == 0.0 and loss(wrong, y).item() == pytest.approx(2.5)
    tied = torch.zeros(4, 1)
    assert loss(torch.randn(4, 1), tied).item() == 0.0  # ties give no pairs


def test_combined_is_the_weighted_sum():
    p, t = _target() * 0.5, _target()
    parts = {n: make_objective(n)(p, t) for n in ("mse", "correlation", "ranking")}
    got = make_objective("combined", mse=1.0, correlation=2.0, ranking=0.5)(p, t)
    assert torch.allclose(got, parts["mse"] + 2 * parts["correlation"] + 0.5 * parts["ranking"])


def test_focal_mse_weights_hard_examples_more():
    t = torch.zeros(4, 1)
    p0 = torch.tensor([[0.1], [0.1], [0.1], [2.0]])  # item 3 is hard

    def grads(name, **kw):
        p = p0.clone().requires_grad_(True)
        make_objective(name, **kw)(p, t).backward()
        return p.grad.abs().flatten()

    g_mse, g_focal = grads("mse"), grads("focal_mse", gamma=2.0)
    assert g_focal[3] / g_focal[0] > 10 * (g_mse[3] / g_mse[0])
    assert torch.allclose(make_objective("focal_mse", gamma=0.0)(p0, t), make_objective("mse")(p0, t))


def test_dim_weights_select_dimensions():
    p, t = _target(), torch.zeros(8, 3)
    per_dim = make_objective("mse").per_dim(p, t)
    assert torch.allclose(make_objective("mse", dim_weights=[0, 1, 0])(p, t), per_dim[1])
    assert torch.allclose(make_objective("mse", dim_weights=[2, 1, 1])(p, t),
                          (2 * per_dim[0] + per_dim[1] + per_dim[2]) / 4)
    with pytest.raises(PianolabError):
        make_objective("mse", dim_weights=[-1, 1, 1])


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_objective_scalar_finite_with_bf16_pred(name):
    p = _target(16, 19).to(torch.bfloat16).requires_grad_(True)
    loss = make_objective(name)(p, _target(16, 19))
    assert loss.ndim == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(p.grad.float()).all()


def test_unknown_options_are_errors():
    with pytest.raises(PianolabError, match="valid: delta"):
        make_objective("huber", beta=1.0)
    with pytest.raises(PianolabError, match="valid: .*mse"):
        make_objective("l1")
    with pytest.raises(PianolabError, match="hinge"):
        make_objective("ranking", kind="listwise")


def test_shrink_targets():
    y = np.array([2.0, -1.0, 0.0])
    assert np.allclose(shrink_targets(y, 0.0, 0.1), [1.8, -0.9, 0.0])
    assert torch.allclose(shrink_targets(torch.tensor([4.0]), torch.tensor([2.0]), 0.25), torch.tensor([3.5]))
    assert np.array_equal(shrink_targets(y, 0.0, 0.0), y)
    with pytest.raises(PianolabError):
        shrink_targets(y, 0.0, 1.0)
