"""Optimiser groups and LR schedules, trajectories hand-checked at a few steps."""

import io
import math

import pytest
import torch

from pianolab.config import config_from_dict, config_hash
from pianolab.errors import PianolabError
from pianolab.models import create_model
from pianolab.train.optim import SCHEDULES, make_optimizer, make_schedule, schedule_from_config

pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")


def _trajectory(name: str, total: int, warmup: int | None = None, **kw) -> list[float]:
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


def test_step_decay_milestones_are_epochs():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_schedule("step_decay", opt, 100, steps_per_epoch=4, milestones=[10, 20], gamma=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[39] == pytest.approx(1.0) and lrs[40] == pytest.approx(0.1)  # epoch 10 starts at step 40
    assert lrs[79] == pytest.approx(0.1) and lrs[80] == pytest.approx(0.01)
    with pytest.raises(PianolabError, match="milestones are epochs"):
        make_schedule("step_decay", opt, 100, milestones=[0.5, 0.75])


def _config_trace(optim: dict, epochs: int, steps_per_epoch: int, metric=None) -> list[float]:
    """LR of each step of `epochs` epochs under the config's optim section (what the Trainer builds);
    `metric(epoch)` is fed after each epoch, as validation does."""
    cfg = config_from_dict({"optim": {"lr": 1.0, **optim}})
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = schedule_from_config(cfg.optim, opt, epochs, steps_per_epoch)
    lrs = []
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        if metric is not None:
            sched.step(metric=metric(epoch))
    return lrs


def test_seven_schedules_give_seven_distinct_documented_traces():
    """Each schedule from a config with no warm-up key: only warmup_cosine warms up, constant is flat,
    step_decay drops 10x at epochs 50, 100 and 150, one_cycle peaks at 30%, reduce_on_plateau halves
    after a plateau of the validation loss, cyclic_cosine restarts its cosine 5 times."""
    epochs, spe = 160, 2
    plateau = lambda epoch: 1.0 / (1 + min(epoch, 20))  # noqa: E731  (improves for 20 epochs, then flat)
    traces = {name: _config_trace({"schedule": name}, epochs, spe, plateau if name == "reduce_on_plateau"
                                  else None) for name in SCHEDULES.names()}
    assert len(traces) == 7
    assert len({tuple(round(x, 9) for x in t) for t in traces.values()}) == 7
    n = epochs * spe
    assert traces["constant"] == [1.0] * n
    cos = traces["cosine"]
    assert cos[0] == 1.0 and all(a >= b for a, b in zip(cos, cos[1:], strict=False)) and cos[-1] < 1e-3
    assert cos[n // 2] == pytest.approx(0.5, abs=0.01)
    warm = traces["warmup_cosine"]
    k = int(0.05 * n)  # 5% warm-up: 16 steps
    assert warm[:k] == pytest.approx([(i + 1) / k for i in range(k)]) and warm[k] == pytest.approx(1.0)
    assert warm[-1] < 1e-3
    step = traces["step_decay"]
    for epoch, lr in [(0, 1.0), (49, 1.0), (50, 0.1), (99, 0.1), (100, 0.01), (150, 0.001), (159, 0.001)]:
        assert step[epoch * spe] == pytest.approx(lr) and step[epoch * spe + 1] == pytest.approx(lr)
    one = traces["one_cycle"]
    assert one[0] == pytest.approx(1 / 25) and one.index(max(one)) == round(0.3 * n) and one[-1] < 1e-4
    plat = traces["reduce_on_plateau"]
    assert plat[:21 * spe] == [1.0] * (21 * spe) and plat[-1] < 1.0 and min(plat) > 0
    assert sorted(set(plat), reverse=True)[:2] == pytest.approx([1.0, 0.5])
    cyc, cycle = traces["cyclic_cosine"], n // 5
    assert [cyc[i * cycle] for i in range(5)] == [1.0] * 5 and cyc[cycle - 1] < 1e-3
    assert cyc[cycle // 2] == pytest.approx(0.5, abs=0.01) and cyc[:cycle] == cyc[cycle:2 * cycle]


def test_explicit_warmup_frac_applies_to_any_schedule():
    for name in ("constant", "cosine", "step_decay"):
        lrs = _config_trace({"schedule": name, "warmup_frac": 0.1}, 10, 10)
        assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)]) and lrs[10] == pytest.approx(1.0)
    no_warm = _config_trace({"schedule": "warmup_cosine", "warmup_frac": 0.0}, 10, 10)
    assert no_warm == _config_trace({"schedule": "cosine"}, 10, 10)


def test_config_hash_names_the_real_warmup():
    """Same training, same hash: warmup_cosine's own 5% equals an explicit 0.05; cosine without a
    warm-up is another run than cosine with one."""
    h = lambda optim: config_hash(config_from_dict({"optim": optim}))  # noqa: E731
    assert h({"schedule": "warmup_cosine"}) == h({"schedule": "warmup_cosine", "warmup_frac": 0.05})
    assert h({"schedule": "cosine"}) == h({"schedule": "cosine", "warmup_frac": 0.0})
    assert h({"schedule": "cosine"}) != h({"schedule": "cosine", "warmup_frac": 0.05})
    assert h({}) == h({"schedule": "warmup_cosine", "warmup_frac": 0.05})


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
