"""Optimiser groups and LR schedules, trajectories hand-checked at a few steps."""

import io
import math

import pytest
import torch

from pianolab.errors import PianolabError
from pianolab.models import create_model
from pianolab.train.optim import SCHEDULES, make_optimizer, make_schedule

pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")


def _trajectory(name: str, total: int, warmup: int = 0, **kw) -> list[float]:
    """LR used by each of `total` optimiser steps (base LR 1.0)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_schedule(name, opt, total, warmup_steps=warmup, **kw)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_decay_groups():
    model = create_model("ast_ultra_tiny", n_frames=100)
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.05, fused=False)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    enc = model.encoder
    assert {id(enc.pos_embed), id(enc.cls_token), id(enc.norm.weight), id(enc.patch_embed.bias)} <= ids
    assert id(enc.patch_embed.weight) not in ids and id(enc.blocks[0].attn.qkv.weight) not in ids
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_constant_with_warmup():
    lrs = _trajectory("constant", 20, warmup=4)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]) and lrs[4:] == pytest.approx([1.0] * 16)


def test_cosine():
    lrs = _trajectory("cosine", 10, min_lr_ratio=0.1)
    assert lrs[0] == pytest.approx(1.0) and lrs[5] == pytest.approx(0.55)


def test_warmup_cosine():
    lrs = _trajectory("warmup_cosine", 20, warmup=4)
    assert lrs[0] == pytest.approx(0.25) and lrs[3] == pytest.approx(1.0)  # warmup end
    assert lrs[4] == pytest.approx(1.0) and lrs[12] == pytest.approx(0.5)  # half-way through 16 steps
    default = _trajectory("warmup_cosine", 100)  # warmup = 5% of the steps
    assert default[0] == pytest.approx(0.2) and default[4] == pytest.approx(1.0)


def test_step_decay_milestones():
    lrs = _trajectory("step_decay", 100, milestones=[0.5, 0.75], gamma=0.1)
    assert lrs[49] == pytest.approx(1.0) and lrs[50] == pytest.approx(0.1)
    assert lrs[74] == pytest.approx(0.1) and lrs[75] == pytest.approx(0.01)


def test_one_cycle_peak():
    lrs = _trajectory("one_cycle", 100, pct_start=0.3, div_factor=25, final_div_factor=1e4)
    assert lrs[0] == pytest.approx(1 / 25) and max(lrs) == pytest.approx(1.0)
    assert lrs.index(max(lrs)) == 30 and lrs[99] == pytest.approx(1 / 25e4)
    assert lrs[15] == pytest.approx(1 / 25 + (1 - 1 / 25) * 0.5)


def test_reduce_on_plateau_uses_metrics_only():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_schedule("reduce_on_plateau", opt, 100, warmup_steps=2, patience=1, factor=0.5, mode="max")
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    for _ in range(10):
        sched.step()
    assert opt.param_groups[0]["lr"] == 1.0
    for metric, lr in [(0.5, 1.0), (0.4, 1.0), (0.5, 0.5), (0.6, 0.5), (0.6, 0.5), (0.6, 0.25)]:
        sched.step(metric=torch.tensor(metric))
        assert opt.param_groups[0]["lr"] == pytest.approx(lr)
    sched.step()  # plain steps keep the reduced LR
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25) and sched.get_last_lr() == [0.25]


def test_time_schedules_ignore_metrics():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_schedule("cosine", opt, 10)
    for _ in range(5):
        sched.step()
    sched.step(metric=1.0)
    sched.observe(2.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_state_round_trip_weights_only(name):
    def fresh():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return opt, make_schedule(name, opt, 50, warmup_steps=3)

    opt, sched = fresh()
    for i in range(20):
        sched.step()
        if i % 5 == 4:
            sched.step(metric=float(i % 3))
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    opt2, sched2 = fresh()
    sched2.load_state_dict(torch.load(buf, weights_only=True))
    for _ in range(10):
        sched.step()
        sched2.step()
        assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]


def test_schedule_errors():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(PianolabError, match="valid: .*cosine"):
        make_schedule("linear", opt, 10)
    with pytest.raises(PianolabError, match="valid: milestones, gamma"):
        make_schedule("step_decay", opt, 10, steps=[3])
