"""Robustness transforms change their input as specified; attacks raise the loss; the report's
drop has the right sign per metric direction."""

import math

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestRegressor
from torch import nn

from pianolab.evaluate import MetricResult
from pianolab.evaluate.adversarial import feature_worst_case, fgsm, pgd
from pianolab.evaluate.robustness import (
    TRANSFORMS,
    add_noise,
    bit_depth,
    lowpass,
    measured_snr_db,
    reverb_ir,
    robustness_report,
    small_room_reverb,
    time_stretch,
)

SR = 16000


def tone(freqs, seconds=1.0, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return sum(0.4 * np.sin(2 * np.pi * f * t) for f in freqs)


def band_power(x, lo, hi, sr=SR):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / sr)
    return spec[(f >= lo) & (f < hi)].sum()


def test_registry_names():
    assert TRANSFORMS.names() == ["bit_depth", "lowpass", "noise", "reverb", "time_stretch"]


@pytest.mark.parametrize("snr", [0.0, 10.0, 30.0])
def test_noise_hits_the_requested_snr(snr):
    x = tone([440])
    y = add_noise(x, snr, np.random.default_rng(0))
    measured = 10 * np.log10(np.sum(x**2) / np.sum((y - x) ** 2))
    assert measured == pytest.approx(snr, abs=1e-9) and measured_snr_db(x, y) == pytest.approx(snr)
    assert np.array_equal(y, add_noise(x, snr, np.random.default_rng(0)))
    assert not np.array_equal(y, add_noise(x, snr, np.random.default_rng(1)))
    with pytest.raises(ValueError, match="silent"):
        add_noise(np.zeros(10), snr, np.random.default_rng(0))


@pytest.mark.parametrize("rate", [0.8, 1.25, 2.0])
def test_time_stretch_ratio_from_length_and_pitch_kept(rate):
    x = tone([440], seconds=2.0)
    y = time_stretch(x, rate)
    assert len(x) / len(y) == pytest.approx(rate, rel=0.01)
    peak = np.fft.rfftfreq(len(y), 1 / SR)[np.argmax(np.abs(np.fft.rfft(y)))]
    assert peak == pytest.approx(440, abs=2)


def test_lowpass_removes_energy_above_cutoff():
    x = tone([500, 6000])
    y = lowpass(x, SR, cutoff=2000)
    # Steady state (the middle half, away from the filter's edge transients; both tones have whole
    # periods in it): 6 kHz lies 1.58 octaves above the cutoff, so an 8th-order Butterworth run
    # twice takes it down by 2 * 8 * 20 * log10(3) ≈ 150 dB; require > 100 dB. 500 Hz passes (< 1 %).
    mid = slice(SR // 4, 3 * SR // 4)
    assert band_power(y[mid], 2500, SR / 2) / band_power(x[mid], 2500, SR / 2) < 1e-10
    assert band_power(y[mid], 0, 1500) / band_power(x[mid], 0, 1500) == pytest.approx(1.0, rel=0.01)
    with pytest.raises(ValueError, match="cutoff"):
        lowpass(x, SR, cutoff=9000)


def test_bit_depth_quantises_to_the_grid():
    x = np.sin(2 * np.pi * 440 * np.arange(SR) / SR)  # full scale
    y4 = bit_depth(x, 4)  # q = 2^3 - 1 = 7: values k/7, k in -7..7
    assert np.allclose(y4 * 7, np.round(y4 * 7)) and len(np.unique(y4)) <= 15
    assert np.abs(y4 - x).max() <= 0.5 / 7 + 1e-12
    # Quantisation noise of a full-scale sine: SNR ≈ 6.02·bits + 1.76 dB.
    assert measured_snr_db(x, bit_depth(x, 8)) == pytest.approx(6.02 * 8 + 1.76, abs=1.5)
    assert np.array_equal(bit_depth(np.array([2.0, -3.0]), 8), [1.0, -1.0])


def test_reverb_ir_decays_at_rt60():
    rt60 = 0.4
    ir = reverb_ir(SR, rt60, seed=0)
    # Schroeder backward integration, slope fitted between -5 and -25 dB (T20), extrapolated to -60.
    edc = 10 * np.log10(np.cumsum(ir[::-1] ** 2)[::-1] / np.sum(ir**2))
    t = np.arange(len(ir)) / SR
    sel = (edc <= -5) & (edc >= -25)
    slope = np.polyfit(t[sel], edc[sel], 1)[0]
    assert -60 / slope == pytest.approx(rt60, rel=0.15)


def test_reverb_keeps_length_and_rms_and_smears():
    x = np.zeros(SR)
    x[:800] = np.random.default_rng(0).standard_normal(800)  # a 50 ms noise burst, then silence
    y = small_room_reverb(x, SR, rt60=0.3, seed=1)
    assert y.shape == x.shape and np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)))
    # 0.1..0.15 s is silent dry; wet, the IR (at -20..-30 dB there) fills it.
    tail = slice(SR // 10, 3 * SR // 20)
    assert np.mean(y[tail] ** 2) > 1e-4 * np.mean(x[:800] ** 2)
    # An impulse yields the (RMS-scaled) impulse response itself.
    imp = np.zeros(SR)
    imp[0] = 1.0
    ir = reverb_ir(SR, 0.3, seed=1)
    out = small_room_reverb(imp, SR, rt60=0.3, seed=1)
    assert np.allclose(out[: len(ir)] / out[0], ir / ir[0])


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 19))

    def forward(self, batch):
        return self.net(batch["spec"])


def test_fgsm_and_pgd_increase_the_loss():
    torch.manual_seed(0)
    model = TinyNet()
    batch = {"spec": torch.randn(16, 8), "other": torch.zeros(16)}
    target = torch.rand(16, 19)
    loss_fn = nn.functional.mse_loss
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        clean = float(loss_fn(model(batch), target))
    eps = 0.1
    adv = fgsm(model, "spec", batch, target, loss_fn, eps)
    with torch.no_grad():
        fgsm_loss = float(loss_fn(model(adv), target))
    assert fgsm_loss > clean
    assert torch.allclose((adv["spec"] - batch["spec"]).abs(), torch.full((16, 8), eps))
    assert adv["other"] is batch["other"] and not adv["spec"].requires_grad
    adv2 = pgd(model, "spec", batch, target, loss_fn, eps, steps=10)
    with torch.no_grad():
        pgd_loss = float(loss_fn(model(adv2), target))
    assert pgd_loss > clean and (adv2["spec"] - batch["spec"]).abs().max() <= eps + 1e-6
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert all(p.grad is None for p in model.parameters())


def test_feature_worst_case_linear_is_exact():
    # One-output linear model f(x) = w·x: the worst squared error in the box |dx_j| <= d_j is
    # (|r| + sum_j |w_j| d_j)^2 with r = w·x - y.
    rng = np.random.default_rng(0)
    w = np.array([1.5, -2.0, 0.0, 0.5])
    X = rng.uniform(0.3, 0.7, (50, 4))
    y = X @ w + 0.1 * rng.standard_normal(50)
    lo, hi, eps = np.zeros(4), np.array([1.0, 1.0, 2.0, 4.0]), 0.05
    res = feature_worst_case(lambda Z: Z @ w, X, y, lo, hi, eps, n_random=0)
    expected = (np.abs(X @ w - y) + np.sum(np.abs(w) * eps * (hi - lo))) ** 2
    assert res.loss_adv == pytest.approx(expected)
    assert res.loss_clean == pytest.approx((X @ w - y) ** 2)
    assert np.all(np.abs(res.X_adv - X) <= eps * (hi - lo) + 1e-12)


def test_feature_worst_case_black_box_model():
    rng = np.random.default_rng(1)
    X = rng.random((200, 5))
    y = np.column_stack([X[:, 0] > 0.5, X[:, 1]]).astype(float)
    forest = RandomForestRegressor(n_estimators=10, random_state=0).fit(X, y)
    res = feature_worst_case(forest.predict, X, y, lo=0.0, hi=1.0, eps=0.1, n_random=4)
    assert np.all(res.loss_adv >= res.loss_clean) and res.loss_adv.mean() > 2 * res.loss_clean.mean()
    assert res.X_adv.min() >= 0.0 and res.X_adv.max() <= 1.0
    assert np.all(np.abs(res.X_adv - X) <= 0.1 + 1e-12)


def test_robustness_report_drop_signs():
    clean = {"pearson": MetricResult(0.7, np.array([0.8, 0.6])),
             "mse": MetricResult(0.10, np.array([0.1, 0.1]), higher_is_better=False)}
    noisy = {"pearson": MetricResult(0.675, np.array([0.7, 0.65])),
             "mse": MetricResult(0.15, np.array([0.2, 0.1]), higher_is_better=False)}
    rep = robustness_report(clean, {"snr10": noisy}, dims=["a", "b"]).set_index(["metric", "dim"])
    # Pearson: drop = clean - perturbed (.8 -> .7 is +.1 worse; .6 -> .65 is -.05, better).
    assert rep.loc[("pearson", "a"), "drop"] == pytest.approx(0.1)
    assert rep.loc[("pearson", "b"), "drop"] == pytest.approx(-0.05)
    assert rep.loc[("pearson", "overall"), "drop"] == pytest.approx(0.025)
    # MSE (lower is better): drop = perturbed - clean.
    assert rep.loc[("mse", "a"), "drop"] == pytest.approx(0.1) and rep.loc[("mse", "b"), "drop"] == 0
    assert math.isclose(rep.loc[("mse", "overall"), "drop"], 0.05)
