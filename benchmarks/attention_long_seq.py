"""Time and memory of one attention layer (forward + backward) per kind at long sequences, as ratios
against full attention measured in the same run.

Tokens are laid out as the AST's: [CLS] + an 8-row patch grid of L / 8 time steps (N = L + 1). Kinds:
full (`vanilla`, SDPA: flash on CUDA), `local` (window 4) and `sparse` (block 4, stride 4) through
FlexAttention block masks on CUDA from 1024 tokens (the dense masked kernel below and on the CPU: no
saving there, by design),
`performer` (128 features) and `linformer` (proj_len 64). Memory is the CUDA peak above the inputs
(n/a on the CPU). Usage:

    python benchmarks/attention_long_seq.py                   # CUDA: L = 512 .. 8192
    python benchmarks/attention_long_seq.py --quick           # CPU-sized: L = 128 .. 512
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

from pianolab.models.attention import ATTENTION, PatternAttention

KINDS = {"full": ("vanilla", {}), "local": ("local", {"window": 4}),
         "sparse": ("sparse", {"block": 4, "sparse_stride": 4}), "performer": ("performer", {"n_features": 128}),
         "linformer": ("linformer", {"proj_len": 64})}
ROWS = 8  # frequency rows of the patch grid


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(kind: str, length: int, args, device: torch.device) -> tuple[float, float | None, str]:
    """(median ms of forward + backward, peak MiB above the inputs or None, kernel path)."""
    name, options = KINDS[kind]
    n, grid = length + 1, (ROWS, length // ROWS)
    torch.manual_seed(0)
    layer = ATTENTION.get(name)(args.dim, args.heads, tokens=n, **options).to(device).train()
    x = torch.randn(args.batch, n, args.dim, device=device, requires_grad=True)
    flexed = device.type == "cuda" and n >= PatternAttention.FLEX_FROM
    path = ("flex" if flexed else "dense masked") if isinstance(layer, PatternAttention) else \
        {"vanilla": "sdpa", "performer": "random features", "linformer": "projected"}[name]

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            out = layer(x, grid)
        out.float().sum().backward()

    for _ in range(args.warmup):  # compiles FlexAttention on the first call
        step()
    _sync(device)
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times), peak, path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", help="sequence lengths L (multiples of 8)")
    parser.add_argument("--quick", action="store_true", help="small sizes for the CPU: L = 128 256 512")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (as training on CUDA)")
    parser.add_argument("--flex-from", type=int, default=PatternAttention.FLEX_FROM,
                        help="tokens from which local/sparse use FlexAttention on CUDA (default: the models')")
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths = args.lengths or [128, 256, 512]
        args.batch, args.repeats, args.warmup = min(args.batch, 2), min(args.repeats, 3), 1
    lengths = args.lengths or [512, 1024, 2048, 4096, 8192]
    if any(n % ROWS for n in lengths):
        print(f"error: --lengths: each must be a multiple of {ROWS}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    PatternAttention.FLEX_FROM = args.flex_from
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"# {' '.join(sys.argv)}\n# device {gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, dim {args.dim}, heads {args.heads}, {'bf16' if args.bf16 else 'fp32'}, "
          f"median of {args.repeats} forward+backward passes")
    print("| L | kind | kernel | ms | time / full | peak MiB | memory / full |\n|---|---|---|---|---|---|---|")
    for length in lengths:
        # each length compiles FlexAttention anew (a model trains at one length): past dynamo's recompile
        # limit it would fall back to the unfused kernel that materialises every score
        torch._dynamo.reset()
        full = None
        for kind in KINDS:
            try:
                ms, mib, path = measure(kind, length, args, device)
            except torch.OutOfMemoryError:
                print(f"| {length} | {kind} | | out of memory | | | |")
                torch.cuda.empty_cache()
                continue
            if kind == "full":
                full = (ms, mib)
            t_ratio = f"{ms / full[0]:.2f}" if full else "n/a"
            m_ratio = f"{mib / full[1]:.2f}" if full and mib is not None and full[1] else "n/a"
            print(f"| {length} | {kind} | {path} | {ms:.1f} | {t_ratio} | "
                  f"{'n/a' if mib is None else f'{mib:.0f}'} | {m_ratio} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
