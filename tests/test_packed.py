"""Packed training (several cells as one grouped or vmapped model) agrees with one-at-a-time training."""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pianolab import track
from pianolab.ab.runner import run_experiment
from pianolab.ab.spec import load_experiment
from pianolab.config import config_from_dict
from pianolab.models import create_model
from pianolab.train.packed import PackedTrainer
from pianolab.train.run import _mean_pearson
from pianolab.train.trainer import SharedRows, Tensors, Trainer, seed_everything

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop")


POOL = torch.randn(90, 1, 32, 64, generator=torch.Generator().manual_seed(7))  # raw spectrograms
TARGETS = torch.randn(90, 19, generator=torch.Generator().manual_seed(8))


def _member(seed: int, n: int, shared: bool, **model_kw):
    """A small AST with dropout and stochastic depth, SpecAugment, mixup and early stopping, on `n`
    rows of POOL (the last 12 for validation), standardised with its training rows' statistics: as
    a private normalised copy (one at a time) or as rows of the shared pool (packed)."""
    cfg = config_from_dict({"model": {"name": "ast_ultra_tiny"}, "augment": {"preset": "light"},
                            "regularize": {"early_stopping": 2, "mixup_prob": 0.3},
                            "train": {"epochs": 3, "batch_size": 8, "seed": seed, "device": "cpu"}})
    rows = torch.randperm(90, generator=torch.Generator().manual_seed(seed))[:n]
    train_rows, val_rows = rows[:-12], rows[-12:]
    raw = POOL.numpy()[train_rows.numpy()]
    mean, std = float(raw.mean()), float(raw.std() + 1e-6)  # as run._prepare
    seed_everything(seed)
    model = create_model("ast_ultra_tiny", n_freq=32, n_frames=64, depth=2, dim=64, heads=2, drop_path=0.2,
                         **model_kw)
    trainer = Trainer(cfg, model, torch.device("cpu"), steps_per_epoch=n // 8)
    if shared:
        parts = [SharedRows({}, TARGETS[r], POOL, r, mean, std) for r in (train_rows, val_rows)]
    else:
        parts = [Tensors({"spec": torch.from_numpy((POOL.numpy()[r.numpy()] - mean) / std)}, TARGETS[r])
                 for r in (train_rows, val_rows)]
    return trainer, *parts


SIZES = [(0, 60), (1, 52), (2, 70)]  # training sets of different sizes: members step unevenly


@pytest.mark.parametrize("model_kw", [{}, {"attention": "performer"}], ids=["grouped", "vmap"])
def test_packed_trainer_matches_one_at_a_time(model_kw):
    """The grouped model, and `vmap` for a model it cannot group (performer keeps its random features in a
    buffer)."""
    alone = []
    for seed, n in SIZES:
        t, train, val = _member(seed, n, shared=False, **model_kw)
        while t.epoch < 3 and not t.should_stop:
            rec = t.train_epoch(train)
            rec.update(t.validate(val, _mean_pearson))
        t.restore_best()
        alone.append((t.predict(val), rec))
    members = [_member(seed, n, shared=True, **model_kw) for seed, n in SIZES]
    first = torch.arange(5)  # a shared-row batch has the bits of the private normalised copy
    assert torch.equal(members[0][1].take(first)["spec"], _member(0, 60, shared=False)[1].take(first)["spec"])
    records = {}
    pack = PackedTrainer([m[0] for m in members], torch.device("cpu"))
    assert (pack.grouped is None) == bool(model_kw)  # the vanilla AST trains as one grouped model
    pack.fit([m[1] for m in members], [m[2] for m in members], _mean_pearson, records.__setitem__)
    for (t, _, val), (pred, _) in zip(members, alone, strict=True):
        t.restore_best()
        assert np.abs(t.predict(val) - pred).max() < 1e-5
    for i, (_, rec) in enumerate(alone):
        assert records[i]["epoch"] == rec["epoch"]
        assert records[i]["train_loss"] == pytest.approx(rec["train_loss"], rel=1e-5)
        assert records[i]["val_pearson"] == pytest.approx(rec["val_pearson"], abs=1e-5)


EXP = {"name": "packed", "hypothesis": "Two hidden layers fit the symbolic features better than one.",
       "baseline": {"features": {"vector": ["symbolic"]}, "model": {"name": "symbolic_mlp"},
                    "train": {"epochs": 4, "batch_size": 64}, "track": {"tracker": "none"}},
       "variants": {"batchnorm": {"model.params.norm": "batch"}},
       "seeds": 2, "split": {"name": "excerpt", "folds": 3}}


def _cells(exp, root):
    out = {}
    for c in exp.cells():
        folder = track.run_dir(c.config, exp.name, c.variant, root)
        out[(c.variant, c.seed, c.fold)] = pd.read_parquet(folder / "predictions.parquet")
    return out


def test_packed_backend_agrees_with_local_on_every_cell(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(EXP))
    exp = load_experiment(path)
    lines = []
    run_experiment(exp, root=tmp_path / "local", tracker="none", echo=lambda s: None)
    run_experiment(exp, root=tmp_path / "packed", tracker="none", echo=lines.append, backend="packed")
    assert sum(": ran" in x for x in lines) == 12  # baseline packed; BatchNorm variant one at a time
    local, packed = _cells(exp, tmp_path / "local"), _cells(exp, tmp_path / "packed")
    for key, frame in local.items():
        pred_cols = [c for c in frame.columns if c.startswith("pred_")]
        assert (frame["stem"] == packed[key]["stem"]).all()
        assert np.abs(frame[pred_cols].to_numpy() - packed[key][pred_cols].to_numpy()).max() < 1e-5, key
    metrics = track.read_metrics(track.run_dir(exp.config("baseline"), exp.name, "baseline", tmp_path / "packed"))
    assert metrics[-1]["packed"] == 6 and len(metrics) == 4
    lines.clear()
    run_experiment(exp, root=tmp_path / "packed", tracker="none", echo=lines.append, backend="packed")
    assert len(lines) == 12 and all(": skipped" in x for x in lines)
    lines.clear()  # two variants' packs at once, in their own processes: the same cells
    run_experiment(exp, root=tmp_path / "two", tracker="none", echo=lines.append, backend="packed", jobs=2)
    assert sum(": ran" in x for x in lines) == 12
    for key, frame in _cells(exp, tmp_path / "two").items():  # BatchNorm cells ran in 2 processes (of one
        pred_cols = [c for c in frame.columns if c.startswith("pred_")]  # BLAS thread each): float noise
        tolerance = 1e-5 if key[0] == "baseline" else 1e-4
        assert np.abs(frame[pred_cols].to_numpy() - packed[key][pred_cols].to_numpy()).max() < tolerance, key


AST_EXP = {"name": "packed_ast", "hypothesis": "Mean pooling of the patch tokens beats the CLS token.",
           "baseline": {"features": {"spectrogram": "log_mel", "seconds": 4},
                        "model": {"name": "ast_ultra_tiny",
                                  "params": {"depth": 1, "dim": 64, "heads": 2, "patch": 32}},
                        "augment": {"preset": "spec_light"}, "regularize": {"early_stopping": 2},
                        "track": {"tracker": "none"}},
           "variants": {"mean_pool": {"model.params.pool": "mean"}},
           "seeds": 1, "split": {"name": "excerpt", "folds": 4}, "budget": {"epochs": 2}}


def test_packed_ast_on_rendered_spectrograms_agrees_with_local(tmp_path):
    """Real renders (midirenderer, log-mel), shared device spectrograms, dropout, SpecAugment."""
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(AST_EXP))
    exp = load_experiment(path)
    run_experiment(exp, root=tmp_path / "local", tracker="none", echo=lambda s: None)
    run_experiment(exp, root=tmp_path / "packed", tracker="none", echo=lambda s: None, backend="packed")
    local, packed = _cells(exp, tmp_path / "local"), _cells(exp, tmp_path / "packed")
    for key, frame in local.items():
        pred_cols = [c for c in frame.columns if c.startswith("pred_")]
        assert np.abs(frame[pred_cols].to_numpy() - packed[key][pred_cols].to_numpy()).max() < 1e-5, key


def test_keyed_dropout_rate_and_independence():
    from pianolab.models.noise import KeyedDropout, noise_key

    drop = KeyedDropout(0.25).train()
    x = torch.ones(400, 500)
    with noise_key(3, torch.tensor(7)):
        a, second_call = drop(x), drop(x)
    with noise_key(3, torch.tensor(7)):
        again = drop(x)
    with noise_key(3, torch.tensor(8)):
        next_step = drop(x)
    assert torch.equal(a, again)  # same seed, step, layer and call: same mask
    assert (a == 0).float().mean().item() == pytest.approx(0.25, abs=0.005)
    assert a[a > 0].unique().tolist() == pytest.approx([1 / 0.75])
    for other in (second_call, next_step):  # a layer's second call, the next step: independent masks
        assert ((a == 0) & (other == 0)).float().mean().item() == pytest.approx(0.25 ** 2, abs=0.005)


def test_compiled_hash_gives_the_eager_bits():
    from pianolab.models import noise

    compiled = torch.compile(noise._uniform, dynamic=True)  # what CUDA training runs, fused
    base = noise._fmix32(torch.tensor(12345, dtype=torch.int64))
    for n in (1000, 4097):
        assert torch.equal(compiled(base, n, torch.device("cpu")), noise._uniform(base, n, torch.device("cpu")))


def test_int32_safe_hash_constant_keeps_the_bits():
    """The compiled hash multiplies by 0x9E3779B1 - 2**32 (an int32 literal for Triton): after the
    32-bit mask it is the same hash as 0x9E3779B1, for small and beyond-int32 element indices."""
    from pianolab.models import noise

    idx = torch.cat([torch.arange(5000, dtype=torch.int64), torch.tensor([2**31 - 1, 2**31, 2**32 + 5, 2**40])])
    base = noise._fmix32(torch.tensor(987654321, dtype=torch.int64))
    want = noise._fmix32((idx ^ base) * 0x9E3779B1 + base)
    assert torch.equal(noise._fmix32((idx ^ base) * noise._GOLDEN_SIGNED + base), want)
    assert torch.equal(noise._uniform(base, 5000, torch.device("cpu")), (want[:5000] >> 8).float() / (1 << 24))


def test_compiled_dropout_keeps_the_hash_out_of_index_arithmetic():
    """Inductor must not fold the hash's multiply into the index (on CUDA an int32 expression, where the
    constant times a stride overflows): the generated code multiplies a value, never an index variable."""
    import re

    from torch._inductor.utils import run_and_get_code

    from pianolab.models import noise

    drop = noise.KeyedDropout(0.1).train()

    def step(x, count):
        with noise.noise_key(3, count):
            return drop(x * 2 + 1)

    _, codes = run_and_get_code(torch.compile(step, dynamic=True), torch.randn(4, 7, 16), torch.tensor(5))
    code = "\n".join(codes)
    assert "1640531535" in code  # the hash is in the kernel...
    assert not re.search(r"1640531535L?\)?\s*\*\s*[xr]\d", code)  # ...multiplying no index variable
