"""How long torch.compile takes for a packed model's forward and backward (issue 8: compilation is on
the critical path of every packed variant).

    python benchmarks/compile_time.py [--members 2] [--device cpu|cuda]

Builds the grouped ultra_tiny AST of `--members` members (small input: 32 x 64 bins; compile time hardly
depends on sizes), with keyed dropout and bf16 autocast as packed training runs it, from empty Inductor
and Triton caches, and prints the time of the first forward + backward (compilation included) and of a
second one.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

for variable in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):  # compiled from nothing
    os.environ[variable] = tempfile.mkdtemp(prefix=f"compile-time-{variable.lower()}-")

import torch  # noqa: E402
from torch.func import functional_call, stack_module_state  # noqa: E402

from pianolab.models import create_model  # noqa: E402
from pianolab.models.grouped import grouped_copy  # noqa: E402
from pianolab.models.noise import assign_salts, noise_key  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    m, device = args.members, torch.device(args.device)
    members = []
    for seed in range(m):
        torch.manual_seed(seed)
        members.append(assign_salts(create_model("ast_ultra_tiny", n_freq=32, n_frames=64)).train().to(device))
    params = {k: v.detach().requires_grad_() for k, v in stack_module_state(members)[0].items()}
    grouped = grouped_copy(members[0])

    def losses(spec, target, seeds, steps):
        with noise_key(seeds, steps), torch.autocast(device.type, dtype=torch.bfloat16):
            pred = functional_call(grouped, params, ({"spec": spec},))
        return ((pred.float().unflatten(0, (m, -1)) - target) ** 2).mean((1, 2))

    compiled = torch.compile(losses)
    spec, target = torch.randn(4 * m, 1, 32, 64, device=device), torch.randn(m, 4, 19, device=device)
    seeds, steps = torch.arange(m, device=device), torch.zeros(m, dtype=torch.int64, device=device)
    for label in ("first (compiles)", "second"):
        t0 = time.perf_counter()
        torch.autograd.grad(compiled(spec, target, seeds, steps).sum(), list(params.values()))
        if device.type == "cuda":
            torch.cuda.synchronize()
        print(f"{label} forward + backward: {time.perf_counter() - t0:.1f} s "
              f"({m} members, {device.type}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
