"""Training throughput: pianolab's Trainer vs a plain PyTorch loop of the same model, same process.

Both use bf16 autocast, torch.compile (when --compile), fused AdamW and data resident on the device;
inputs are random spectrograms of the real shape (1 x 128 mel x 1000 frames = 10 s at 100 fps),
750 items (one training fold). Prints samples/s per AST size and stride, and the ratio.

    python benchmarks/train_throughput.py [--epochs 3] [--compile] [--sizes ast_ultra_tiny,...]
"""

from __future__ import annotations

import argparse
import time

import torch

from pianolab.config import config_from_dict
from pianolab.models import create_model, parameter_count
from pianolab.train.trainer import Tensors, Trainer

N_ITEMS, N_FREQ, N_FRAMES, BATCH = 750, 128, 1000, 32


def plain_loop(model, spec, target, epochs: int, compile_: bool) -> float:
    """The reference: the loop anyone would write, timed over `epochs` after one warm-up epoch."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    fwd = torch.compile(model) if compile_ else model

    def epoch():
        perm = torch.randperm(N_ITEMS, device=spec.device)
        for s in range(0, N_ITEMS - BATCH + 1, BATCH):
            idx = perm[s:s + BATCH]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = torch.nn.functional.mse_loss(fwd({"spec": spec[idx]}).float(), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    epoch()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(epochs):
        epoch()
    torch.cuda.synchronize()
    return epochs * (N_ITEMS // BATCH) * BATCH / (time.perf_counter() - t0)


def pianolab_loop(name, stride, spec, target, epochs: int, compile_: bool) -> float:
    cfg = config_from_dict({"model": {"name": name}, "train": {"batch_size": BATCH, "epochs": epochs + 1,
                                                               "compile": compile_},
                            "optim": {"lr": 1e-4, "schedule": "constant"}})
    torch.manual_seed(0)
    model = create_model(name, n_freq=N_FREQ, n_frames=N_FRAMES, patch=16, stride=stride).cuda()
    tr = Trainer(cfg, model, torch.device("cuda"), steps_per_epoch=N_ITEMS // BATCH)
    data = Tensors({"spec": spec}, target)
    tr.train_epoch(data)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(epochs):
        tr.train_epoch(data)
    torch.cuda.synchronize()
    return epochs * (N_ITEMS // BATCH) * BATCH / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--sizes", default="ast_ultra_tiny,ast_tiny,ast_small,ast_medium")
    ap.add_argument("--strides", default="16,10")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    gen = torch.Generator(device="cuda").manual_seed(0)
    spec = torch.randn(N_ITEMS, 1, N_FREQ, N_FRAMES, device="cuda", generator=gen)
    target = torch.randn(N_ITEMS, 19, device="cuda", generator=gen)
    print(f"GPU {torch.cuda.get_device_name(0)}, torch {torch.__version__}, compile={args.compile}, "
          f"{N_ITEMS} items of 1x{N_FREQ}x{N_FRAMES}, batch {BATCH}")
    print("| model | stride | params | plain samples/s | pianolab samples/s | ratio |")
    print("|---|---|---|---|---|---|")
    for name in args.sizes.split(","):
        for stride in map(int, args.strides.split(",")):
            torch.manual_seed(0)
            ref_model = create_model(name, n_freq=N_FREQ, n_frames=N_FRAMES, patch=16, stride=stride).cuda()
            plain = plain_loop(ref_model, spec, target, args.epochs, args.compile)
            ours = pianolab_loop(name, stride, spec, target, args.epochs, args.compile)
            print(f"| {name} | {stride} | {parameter_count(ref_model) / 1e6:.2f} M | {plain:.0f} | {ours:.0f} "
                  f"| {ours / plain:.2f} |", flush=True)
            del ref_model
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
