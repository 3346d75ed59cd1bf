"""SpecAugment, mixup, cutmix and early stopping: counts and mixing arithmetic checked by hand."""

import pytest
import torch

from pianolab.errors import PianolabError
from pianolab.presets import PRESETS
from pianolab.train.augment import SpecAugment, spec_augment_from_preset
from pianolab.train.regularize import EarlyStopping, cutmix, mixup


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_frequency_masks_cover_expected_bins():
    aug = SpecAugment(freq_masks=1, min_freq=0.1, max_freq=0.1, time_masks=0)
    mask = aug.masks(torch.zeros(8, 1, 100, 40), generator=_gen())
    per_sample = mask[:, 0, :, 0].sum(1)
    assert torch.equal(per_sample, torch.full((8,), 10)) and mask.all(-1).sum() == 80  # whole bands


def test_time_masks_cover_expected_frames():
    aug = SpecAugment(freq_masks=0, time_masks=1, min_time=0.25, max_time=0.25)
    mask = aug.masks(torch.zeros(5, 2, 16, 80), generator=_gen())
    assert torch.equal(mask[:, 0, 0, :].sum(1), torch.full((5,), 20))
    frames = mask[0, 0, 0].nonzero().flatten()
    assert frames.max() - frames.min() == 19  # one contiguous span


def test_spec_augment_fill_probability_and_determinism():
    spec = torch.randn(16, 1, 64, 50, generator=_gen(1))
    aug = SpecAugment(prob=1.0)
    a, b, c = aug(spec, generator=_gen(3)), aug(spec, generator=_gen(3)), aug(spec, generator=_gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    masked = aug.masks(spec, generator=_gen(3))
    means = spec.mean(dim=(1, 2, 3), keepdim=True).expand_as(spec)
    assert torch.equal(a[masked.expand_as(spec)], means[masked.expand_as(spec)])
    assert torch.equal(aug(spec, prob=0.0, generator=_gen(3)), spec)
    half = SpecAugment(prob=0.5).masks(torch.zeros(400, 1, 32, 32), generator=_gen()).flatten(1).any(1)
    assert 150 < int(half.sum()) < 250


def test_presets_come_from_pianolab_presets():
    for name in PRESETS.names():
        assert spec_augment_from_preset(name).prob == PRESETS.get(name).spec_augment_prob
    with pytest.raises(PianolabError, match="valid: .*heavy"):
        spec_augment_from_preset("extreme")


def test_mixup_label_arithmetic():
    n = 6
    eye = torch.eye(n)  # item i is the one-hot e_i, so a mixed row shows lam and the partner
    batch, target = mixup({"vector": eye.clone(), "spec": eye.view(n, 1, 1, n).clone()}, eye.clone(),
                          alpha=0.4, generator=_gen())
    assert torch.allclose(batch["vector"], target) and torch.allclose(batch["spec"].view(n, n), target)
    assert torch.allclose(target.sum(1), torch.ones(n)) and (target >= 0).all()
    assert ((target > 0).sum(1) <= 2).all()
    again, _ = mixup({"vector": eye.clone()}, eye.clone(), alpha=0.4, generator=_gen())
    assert torch.equal(again["vector"], batch["vector"])
    same, t = mixup({"vector": eye.clone()}, eye.clone(), alpha=0.4, generator=_gen(), prob=0.0)
    assert torch.equal(same["vector"], eye) and torch.equal(t, eye)


def test_cutmix_time_span_and_area_weights():
    n, frames = 8, 50
    spec = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, frames).contiguous()
    out, target = cutmix({"spec": spec, "vector": torch.eye(n)}, torch.eye(n), generator=_gen(2), alpha=1.0)
    for i in range(n):
        row = out["spec"][i, 0, 0]
        own = (row == i).float().mean()
        if target[i, i] < 1:  # mixed with another item: label weight = fraction of frames kept
            assert target[i, i] == pytest.approx(float(own))
            pasted = (row != i).nonzero().flatten()
            assert pasted.numel() == 0 or pasted.max() - pasted.min() + 1 == pasted.numel()  # contiguous
        assert torch.allclose(target[i].sum(), torch.tensor(1.0))
    assert torch.allclose(out["vector"], target)


def test_early_stopping():
    stop = EarlyStopping(patience=2, min_delta=0.01, mode="max")
    assert [stop.step(v) for v in (0.1, 0.2, 0.205, 0.19)] == [True, True, False, False]
    assert stop.should_stop and stop.best == pytest.approx(0.2) and stop.best_call == 1
    resumed = EarlyStopping(patience=2, min_delta=0.01, mode="max")
    resumed.load_state_dict(stop.state_dict())
    assert resumed.should_stop and resumed.step(torch.tensor(0.5)) and not resumed.should_stop
    low = EarlyStopping(patience=1, mode="min")
    assert low.step(1.0) and low.step(0.5) and not low.step(0.7) and low.should_stop
