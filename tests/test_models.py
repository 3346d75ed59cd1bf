"""Model zoo: every registered model x attention kind trains a step on tiny inputs; options behave."""

import numpy as np
import pytest
import torch

from pianolab.errors import PianolabError
from pianolab.models import attention_kinds, create_model, list_models, parameter_count, parameter_table
from pianolab.models.attention import ATTENTION
from pianolab.models.classic import ESTIMATORS, create_estimator
from pianolab.models.layers import DropPath

N_FEATURES = 12
SPEC_MODELS = [m for m in list_models() if m.startswith(("ast_", "hybrid_"))]
CASES = [(m, a) for m in SPEC_MODELS for a in attention_kinds()] + \
        [(m, None) for m in list_models() if m not in SPEC_MODELS]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster, and immune to a busy second core (OpenMP spin)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(frames: int = 100, b: int = 2, n_freq: int = 128) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"spec": torch.randn(b, 1, n_freq, frames, generator=g),
            "vector": torch.randn(b, N_FEATURES, generator=g)}


def _make(name: str, attention: str | None = None, **kw):
    torch.manual_seed(0)
    if attention is not None:
        kw["attention"] = attention
    return create_model(name, in_features=N_FEATURES, **kw)


@pytest.mark.parametrize(("name", "attention"), CASES, ids=[f"{m}-{a}" for m, a in CASES])
def test_forward_backward(name, attention):
    """Small spectrograms keep this fast; the positional grid (built for 64 frames) is interpolated."""
    model = _make(name, attention, n_freq=64, **({"n_frames": 64} if name in SPEC_MODELS else {}))
    batch = _batch(frames=48, n_freq=64)
    assert set(model.inputs) <= set(batch)
    out = model(batch)
    assert out.shape == (2, 19) and torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.embed(batch).shape[0] == 2


def test_registered_names_and_sizes():
    assert {"ast_ultra_tiny", "ast_tiny", "ast_small", "ast_medium", "symbolic_mlp", "hybrid_concat",
            "hybrid_gated", "hybrid_xattn"} <= set(list_models())
    assert set(attention_kinds()) == {"vanilla", "local", "linear", "sparse", "performer", "linformer",
                                      "multi_scale"}
    for name, (depth, dim, heads) in {"ast_ultra_tiny": (3, 256, 4), "ast_tiny": (4, 320, 5),
                                      "ast_small": (6, 384, 8), "ast_medium": (6, 512, 8)}.items():
        cfg = create_model(name).config
        assert (cfg.depth, cfg.dim, cfg.heads) == (depth, dim, heads)


def test_parameter_table():
    table = parameter_table(((16, 16),))
    print("\n" + table)
    counts = [int(line.split("|")[2].replace(",", "")) for line in table.splitlines()[2:]]
    assert len(counts) == 4 and counts == sorted(counts)
    assert counts[0] == parameter_count(create_model("ast_ultra_tiny"))


@pytest.mark.parametrize("patch", [8, 12, 16, 20, 24, 32])
def test_patch_sizes_and_overlap(patch):
    stride = max(4, patch * 5 // 8)  # overlapping
    model = _make("ast_ultra_tiny", patch=patch, stride=stride, n_frames=100)
    f, t = model.encoder.grid
    assert (f, t) == ((128 - patch) // stride + 1, (100 - patch) // stride + 1)
    assert model.encoder.pos_embed.shape[1] == f * t
    assert model(_batch()).shape == (2, 19)


def test_positional_interpolation_other_length():
    model = _make("ast_tiny", n_frames=100).eval()
    enc = model.encoder
    assert torch.equal(enc._pos(*enc.grid), enc.pos_embed)
    pos = enc._pos(enc.grid[0], 15)
    assert pos.shape == (1, enc.grid[0] * 15, 320)
    for frames in (100, 160, 64):
        out = model(_batch(frames))
        assert out.shape == (2, 19) and torch.isfinite(out).all()


def test_attention_maps_and_local_window():
    model = _make("ast_ultra_tiny", "local", n_frames=100, window=1).eval()
    maps = model.attention_maps(_batch())
    f, t = model.encoder.grid
    assert len(maps) == 3 and maps[0].shape == (2, 4, 1 + f * t, 1 + f * t)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 4, 1 + f * t), atol=1e-5)
    ti = torch.arange(f * t) // f
    far = (ti[:, None] - ti[None, :]).abs() > 1
    assert maps[0][:, :, 1:, 1:][..., far].abs().max() == 0  # nothing outside the window
    for kind in ("linear", "sparse", "vanilla"):
        w = _make("ast_ultra_tiny", kind, n_frames=100).eval().attention_maps(_batch())[-1]
        assert torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)), atol=1e-4)


def test_attention_options_and_bf16():
    favor = _make("ast_ultra_tiny", "performer", n_features=16)
    assert favor.encoder.blocks[0].attn.features.shape == (16, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for kind in ATTENTION.names():
            out = _make("ast_ultra_tiny", kind, n_frames=100)(_batch())
            assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("kind", [*attention_kinds(), "hybrid_xattn"])
def test_compiles_without_graph_breaks(kind):
    """fullgraph tracing fails on data-dependent Python control flow and host syncs (.item())."""
    torch._dynamo.reset()
    model = _make("hybrid_xattn") if kind == "hybrid_xattn" else _make("ast_ultra_tiny", kind)
    out = torch.compile(model, backend="eager", fullgraph=True)(_batch())
    assert out.shape == (2, 19)


def test_regularisation_options():
    model = _make("ast_ultra_tiny", spectral_norm=True, drop_path=0.5, dropout=0.2, pool="mean")
    assert hasattr(model.head[-1], "parametrizations")
    model(_batch()).sum().backward()
    torch.manual_seed(0)
    x = DropPath(0.5).train()(torch.ones(1000, 1, 1))
    assert set(x.unique().tolist()) == {0.0, 2.0} and 350 < int((x == 0).sum()) < 650
    assert torch.equal(DropPath(0.5).eval()(torch.ones(4, 3)), torch.ones(4, 3))


def test_hybrid_options():
    m = _make("hybrid_gated", size="small", patch=32, stride=16, ast={"window": 2})
    assert m.ast_config.dim == 384 and m.ast_config.window == 2 and m.embed(_batch()).shape == (2, 384)
    with pytest.raises(PianolabError, match="directly"):
        _make("hybrid_concat", ast={"patch": 8})
    with pytest.raises(PianolabError, match="ultra_tiny"):
        _make("hybrid_concat", size="huge")


def test_helpful_errors():
    with pytest.raises(PianolabError, match="valid: .*ast_tiny"):
        create_model("ast_huge")
    with pytest.raises(PianolabError, match="valid overrides: .*patch"):
        create_model("ast_tiny", layers=3)
    with pytest.raises(PianolabError, match="multi_scale"):
        create_model("ast_tiny", attention="flash")
    with pytest.raises(PianolabError, match="in_features"):
        create_model("symbolic_mlp")
    with pytest.raises(PianolabError, match="valid: .*alpha"):
        create_estimator("ridge", 0, depth=3)


def test_symbolic_batchnorm():
    m = _make("symbolic_mlp", norm="batch", hidden=32, layers=3)
    assert m(_batch(b=4)).shape == (4, 19) and m.embed(_batch(b=4)).shape == (4, 32)


FAST = {"random_forest": {"n_estimators": 20}, "gradient_boosting": {"max_iter": 10, "n_jobs": 1},
        "ridge": {}, "ensemble_rf_gb": {}, "extra_trees": {"n_estimators": 30}, "ensemble_gb_et": {},
        "lightgbm": {"n_estimators": 100, "learning_rate": 0.1}, "xgboost": {"n_estimators": 100, "learning_rate": 0.1},
        "catboost": {"iterations": 100, "learning_rate": 0.1},
        "mlp": {}, "extra_trees_small": {}, "stacking": {"members": ["ridge", "extra_trees_small"]},
        "cross_family": {"members": ["ridge", "mlp"]}, "residual_boost": {"first": "extra_trees_small"}}


@pytest.mark.parametrize("name", [n for n in ESTIMATORS.names() if n != "two_level"])  # [raw, peer] inputs
def test_classic_estimators(name):  # and groups: two_level is tested in tests/test_two_level.py
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8))
    y = np.tile(x[:, [2]], (1, 3)) + 0.1 * rng.normal(size=(120, 3))
    est = create_estimator(name, seed=0, **FAST[name]).fit(x[:80], y[:80])
    pred = est.predict(x[80:])
    assert pred.shape == (40, 3) and np.corrcoef(pred[:, 0], y[80:, 0])[0, 1] > 0.8


def test_top_k_fitted_on_training_data_only():
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(150, 10)), rng.normal(size=(50, 10))
    y_train = np.tile(train[:, [7]], (1, 19)) + 0.05 * rng.normal(size=(150, 19))
    est = create_estimator("ridge", seed=0, top_k=2).fit(train, y_train)
    assert est.selected_[0] == 7 and len(est.selected_) == 2
    before = est.selected_.copy()
    est.predict(test * 100)  # test data never changes the selection
    assert np.array_equal(est.selected_, before)
