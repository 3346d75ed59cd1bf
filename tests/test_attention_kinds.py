"""Attention kinds do what their names promise: each is its own algorithm, local and sparse are the
masked softmax they claim and skip the empty tiles on FlexAttention, performer approximates softmax
attention, linformer attends over projected keys and values, and packing refuses what it cannot run."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch.func import functional_call, stack_module_state

from pianolab.config import config_from_dict
from pianolab.errors import PianolabError
from pianolab.models import attention_kinds, create_model
from pianolab.models.attention import ATTENTION, _block_mask, _strided_order
from pianolab.models.grouped import grouped_copy, grouping_problem
from pianolab.train.packed import unpackable_reason
from pianolab.train.trainer import Trainer

pytestmark = pytest.mark.filterwarnings("ignore:.*flex_attention called without torch.compile")

DIM, HEADS = 32, 2
GRID = (3, 10)  # 3 frequency rows x 10 time steps behind [CLS]: N = 31
N = 1 + GRID[0] * GRID[1]
OPTIONS = {"local": {"window": 1}, "sparse": {"block": 2, "sparse_stride": 3}, "linformer": {"tokens": N}}


def _layer(kind: str, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ATTENTION.get(kind)(DIM, HEADS, **{**OPTIONS.get(kind, {}), **kw}).eval()


def _x(n: int = N, b: int = 2) -> torch.Tensor:
    return torch.randn(b, n, DIM, generator=torch.Generator().manual_seed(1))


def _pattern(kind: str) -> torch.Tensor:
    """The patterns from their definitions, token by token: (N, N) True where query i sees key j."""
    f, t = GRID
    allowed = torch.ones(N, N, dtype=torch.bool)
    for i in range(1, N):
        for j in range(1, N):
            (ti, fi), (tj, fj) = divmod(i - 1, f), divmod(j - 1, f)
            if kind == "local":
                allowed[i, j] = abs(ti - tj) <= 1
            else:
                allowed[i, j] = ti // 2 == tj // 2 or (fi == fj and (ti - tj) % 3 == 0)
    return allowed


def _masked_softmax(q, k, v, allowed):
    scores = (q @ k.transpose(-2, -1)) / q.shape[-1] ** 0.5
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


def test_every_kind_is_its_own_algorithm():
    names = ATTENTION.names()
    assert {"vanilla", "local", "sparse", "linear", "performer", "linformer"} == set(names)
    outs = {}
    for kind in names:
        out = _layer(kind)(_x(), GRID)
        assert out.shape == (2, N, DIM) and torch.isfinite(out).all()
        outs[kind] = out
    for a in names:
        for b in names:
            if a < b:
                assert (outs[a] - outs[b]).abs().max() > 1e-3, (a, b)


def test_linear_no_longer_takes_a_favor_kernel():
    """FAVOR+ is `performer`; a `kernel` option on `linear` would be a second name for it."""
    with pytest.raises(PianolabError, match="does not accept kernel"):
        create_model("ast_ultra_tiny", attention="linear", kernel="favor")


@pytest.mark.parametrize("kind", ["local", "sparse"])
def test_local_and_sparse_are_masked_softmax_on_both_paths(kind):
    """The CPU path (dense masked kernel) and the FlexAttention path (run eagerly here, compiled on
    CUDA; FlexAttention has no backward on the CPU) equal softmax attention over the pattern as defined."""
    layer = _layer(kind)
    assert torch.equal(layer.mask(GRID, torch.device("cpu")), _pattern(kind))
    with torch.no_grad():
        q, k, v = layer._qkv(_x())
        ref = _masked_softmax(q, k, v, _pattern(kind))
        torch.testing.assert_close(layer._mix(q, k, v, GRID), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer.flex_mix(q, k, v, GRID, compiled=False), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled FlexAttention runs on CUDA")
@pytest.mark.parametrize("kind", ["local", "sparse"])
def test_local_and_sparse_flex_forward_and_backward_on_cuda(kind):
    layer = _layer(kind).cuda().train()
    q, k, v = (t.detach().requires_grad_() for t in layer._qkv(_x().cuda()))
    out = layer.flex_mix(q, k, v, GRID)  # compiled (`_mix` takes it from FLEX_FROM tokens)
    ref = _masked_softmax(q, k, v, _pattern(kind).cuda())
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-3)
    for g, r in zip(torch.autograd.grad((out * v).sum(), (q, k, v)),
                    torch.autograd.grad((ref * v).sum(), (q, k, v)), strict=True):
        torch.testing.assert_close(g, r, atol=2e-3, rtol=2e-3)


def test_flex_block_masks_skip_most_tiles_at_long_sequences():
    """On an 8 x 512 grid (N = 4097) FlexAttention computes the 128 x 128 tiles the block masks keep:
    local (window 4) and sparse (block 4, stride 4: two passes) keep under a fifth of full attention's."""
    grid, n = (8, 512), 1 + 8 * 512
    local = _block_mask(("local", 8, 4), n, "cpu")
    block = _block_mask(("block", 8, 4), n, "cpu")
    strided = _block_mask(("strided", grid, 4, 4), n - 1, "cpu")
    tiles = (-(-n // 128)) ** 2
    assert kept(local) < tiles / 5
    assert kept(block) + kept(strided) < tiles / 5
    order = _strided_order(grid, 4, torch.device("cpu"))
    assert sorted(order.tolist()) == list(range(n - 1))


def kept(block_mask) -> int:
    """Tiles FlexAttention computes for a block mask (partial and full ones)."""
    full = block_mask.full_kv_num_blocks
    return int(block_mask.kv_num_blocks.sum() + (0 if full is None else full.sum()))


def _softmax_weight_error(kind: str, **kw) -> float:
    """Mean relative error of a kernel kind's implied attention matrix against softmax's, 3 draws."""
    errors = []
    for seed in range(3):
        layer = _layer(kind, seed, **kw)
        g = torch.Generator().manual_seed(10 + seed)
        q, k = (0.5 * torch.randn(2, HEADS, N, DIM // HEADS, generator=g) for _ in range(2))
        fq, fk = layer._features(q, k)
        approx = fq @ fk.transpose(-2, -1)
        approx = approx / approx.sum(-1, keepdim=True)
        exact = ((q @ k.transpose(-2, -1)) / (DIM // HEADS) ** 0.5).softmax(-1)
        errors.append(float(((approx - exact).abs().sum(-1) / exact.abs().sum(-1)).mean()))
    return sum(errors) / len(errors)


def test_performer_approximates_softmax_better_with_more_features():
    errors = [_softmax_weight_error("performer", n_features=m) for m in (8, 64, 512)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.5 * _softmax_weight_error("linear")  # elu + 1 is another kernel, not softmax's


def test_performer_redraws_its_features_when_asked():
    fixed, redrawn = _layer("performer").train(), _layer("performer", redraw=2).train()
    before = redrawn.features.clone()
    redrawn(_x(), GRID)
    assert torch.equal(redrawn.features, before)  # call 1: not due
    redrawn(_x(), GRID)
    assert not torch.allclose(redrawn.features, before)  # call 2: new directions
    after = redrawn.features.clone()
    redrawn.eval()(_x(), GRID)
    redrawn(_x(), GRID)
    assert torch.equal(redrawn.features, after)  # evaluation never redraws
    start = fixed.features.clone()
    for _ in range(3):
        fixed(_x(), GRID)
    assert torch.equal(fixed.features, start)
    # rows orthogonal within each block of d_head directions (FAVOR+'s orthogonal random features)
    w = fixed.features[: DIM // HEADS]
    gram = (w / w.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(gram, torch.eye(DIM // HEADS), atol=1e-5, rtol=0)


def test_linformer_attends_over_projected_keys_and_values():
    layer = _layer("linformer", proj_len=5)
    q, k, v = layer._qkv(_x())
    e, f = layer.project_k.weight, layer.project_v.weight  # (5, N)
    ref = ((q @ (e @ k).transpose(-2, -1)) / q.shape[-1] ** 0.5).softmax(-1) @ (f @ v)
    torch.testing.assert_close(layer._mix(q, k, v, GRID), ref, atol=1e-5, rtol=1e-5)
    assert layer.weights(_x(), GRID).shape == (2, HEADS, N, N)
    short = _x(n=N - 6)  # a shorter input uses the projections' first columns
    q, k, v = layer._qkv(short)
    ref = ((q @ (e[:, :-6] @ k).transpose(-2, -1)) / q.shape[-1] ** 0.5).softmax(-1) @ (f[:, :-6] @ v)
    torch.testing.assert_close(layer._mix(q, k, v, GRID), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(PianolabError, match="built for 31 tokens, got 40"):
        layer(_x(n=40), GRID)


def test_linformer_packs_as_a_grouped_model():
    members = [create_model("ast_ultra_tiny", n_freq=32, n_frames=48, depth=1, dim=32, heads=2, patch=8,
                            attention="linformer", proj_len=8, dropout=0.0, drop_path=0.0).eval()
               for _ in range(2)]
    assert grouping_problem(members[0]) is None
    params, _ = stack_module_state(members)
    specs = torch.randn(2, 3, 1, 32, 48, generator=torch.Generator().manual_seed(3))
    pred = functional_call(grouped_copy(members[0]), params, ({"spec": specs.flatten(0, 1)},))
    for i, member in enumerate(members):
        torch.testing.assert_close(pred.unflatten(0, (2, 3))[i], member({"spec": specs[i]}), atol=1e-5, rtol=1e-5)


def test_packed_training_refuses_a_performer_that_redraws():
    """Redrawing changes a buffer in place from torch's generator: a packed member could not draw what it
    draws alone, so the packed backend refuses it (its cells then run one at a time)."""
    cfg = config_from_dict({"model": {"name": "ast_ultra_tiny"}, "train": {"epochs": 1, "device": "cpu"}})

    def reason(**kw):
        model = create_model("ast_ultra_tiny", n_freq=32, n_frames=48, depth=1, dim=32, heads=2, patch=8,
                             attention="performer", **kw)
        return unpackable_reason(Trainer(cfg, model, torch.device("cpu"), steps_per_epoch=2))

    assert reason() is None
    assert reason(redraw=10) == "performer attention redraws its random features (redraw > 0)"


def test_attention_option_ranges_are_checked():
    for kind, kw in (("local", {"window": -1}), ("sparse", {"block": 0}), ("performer", {"n_features": 0}),
                     ("linformer", {"proj_len": 0})):
        with pytest.raises(PianolabError, match=kind):
            _layer(kind, **kw)


def test_b3_compares_the_kinds_by_their_names():
    exp = yaml.safe_load((Path(__file__).resolve().parents[1] / "experiments" / "b3_attention_kinds.yaml").read_text())
    kinds = {name: change["model.params.attention"] for name, change in exp["variants"].items()}
    assert all(name == kind and kind in attention_kinds() for name, kind in kinds.items())
    assert {"local", "sparse", "performer", "linformer"} <= set(kinds)


def test_long_sequence_benchmark_prints_ratios_against_full():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "attention_long_seq.py"
    run = subprocess.run([sys.executable, str(script), "--quick", "--lengths", "32", "64", "--batch", "1",
                          "--dim", "32", "--heads", "2"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = [line.split(" | ") for line in run.stdout.splitlines() if line.startswith(("| 32 ", "| 64 "))]
    assert [r[1] for r in rows] == ["full", "local", "sparse", "performer", "linformer"] * 2
    assert all(r[4] == "1.00" for r in rows if r[1] == "full") and all(float(r[4]) >= 0 for r in rows)
    assert {r[2] for r in rows if r[1] in ("local", "sparse")} == {"dense masked"}  # said, not hidden
    bad = subprocess.run([sys.executable, str(script), "--lengths", "30"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --lengths: each must be a multiple of 8"
