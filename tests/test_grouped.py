"""Grouped models: M members as one module compute what each member computes alone."""

import pytest
import torch
from torch.func import functional_call, stack_module_state

from pianolab.models import create_model
from pianolab.models.grouped import grouped_copy, grouping_problem
from pianolab.models.noise import assign_salts, noise_key


def _ast(seed: int, **kw):
    torch.manual_seed(seed)
    model = create_model("ast_ultra_tiny", n_freq=32, n_frames=48, depth=2, dim=32, heads=2, patch=8,
                         stride=kw.pop("stride", 8), dropout=0.2, drop_path=0.3, head_dropout=0.1, **kw)
    return assign_salts(model).train()


@pytest.mark.parametrize("options", [{}, {"stride": 6, "pool": "mean"}, {"attention": "local", "window": 1}])
def test_grouped_forward_and_gradients_equal_each_member_alone(options):
    members = [_ast(seed, **dict(options)) for seed in (0, 1, 2)]
    seeds, steps = torch.tensor([5, 6, 7]), torch.tensor([0, 3, 9])
    specs = torch.randn(3, 4, 1, 32, 48, generator=torch.Generator().manual_seed(1))
    targets = torch.randn(3, 4, 19, generator=torch.Generator().manual_seed(2))
    params, _ = stack_module_state(members)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    grouped = grouped_copy(members[0])
    with noise_key(seeds, steps):
        pred = functional_call(grouped, params, ({"spec": specs.flatten(0, 1)},)).unflatten(0, (3, 4))
    losses = ((pred - targets) ** 2).mean((1, 2))
    grads = torch.autograd.grad(losses.sum(), list(params.values()))
    for i, member in enumerate(members):
        with noise_key(int(seeds[i]), int(steps[i])):
            alone = member({"spec": specs[i]})
        torch.testing.assert_close(pred[i], alone, atol=1e-5, rtol=1e-5)
        ((alone - targets[i]) ** 2).mean().backward()
        for (name, p), g in zip(member.named_parameters(), grads, strict=True):
            torch.testing.assert_close(g[i], p.grad, atol=1e-5, rtol=1e-4, msg=name)
    without_noise = functional_call(grouped.eval(), params, ({"spec": specs.flatten(0, 1)},))
    assert not torch.allclose(without_noise.unflatten(0, (3, 4)), pred)  # the dropout did draw masks


def test_grouping_problem_names_what_cannot_be_grouped():
    assert grouping_problem(_ast(0)) is None
    assert "buffers" in grouping_problem(_ast(0, attention="performer"))
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8))
    assert "buffers" in grouping_problem(mlp)
    embedding = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 2))
    assert "0 (Embedding) owns parameters" in grouping_problem(embedding)


@pytest.mark.parametrize("name", ["ast_tiny", "hybrid_concat", "hybrid_gated", "hybrid_xattn", "symbolic_mlp"])
def test_every_groupable_model_keeps_its_members_apart(name):
    """No registered model mixes the rows of different members (e.g. through batch statistics)."""
    from pianolab.models import MODELS

    assert name in MODELS.names()
    kw = {"in_features": 6} if name != "ast_tiny" else {}
    if name != "symbolic_mlp":
        kw.update(n_freq=32, n_frames=48, patch=8)
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(create_model(name, **kw).eval())
    assert grouping_problem(members[0]) is None
    gen = torch.Generator().manual_seed(3)
    batch = {"spec": torch.randn(2, 3, 1, 32, 48, generator=gen), "vector": torch.randn(2, 3, 6, generator=gen)}
    batch = {k: v for k, v in batch.items() if k in members[0].inputs}
    params, _ = stack_module_state(members)
    pred = functional_call(grouped_copy(members[0]), params, ({k: v.flatten(0, 1) for k, v in batch.items()},))
    for i, member in enumerate(members):
        alone = member({k: v[i] for k, v in batch.items()})
        torch.testing.assert_close(pred.unflatten(0, (2, 3))[i], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel,stride,padding", [(4, 4, 0), (5, 3, 0), (3, 2, (1, 2))])
def test_grouped_conv_equals_each_member_conv(kernel, stride, padding):
    """Patch rows gathered from a strided view: non-overlapping, overlapping and padded convolutions."""
    torch.manual_seed(0)
    convs = [torch.nn.Sequential(torch.nn.Conv2d(2, 6, kernel, stride=stride, padding=padding)) for _ in range(3)]
    params, _ = stack_module_state(convs)
    x = torch.randn(3, 4, 2, 17, 23)
    out = functional_call(grouped_copy(convs[0]), params, (x.flatten(0, 1),)).unflatten(0, (3, 4))
    for i, conv in enumerate(convs):
        torch.testing.assert_close(out[i], conv(x[i]), atol=1e-5, rtol=1e-5)
