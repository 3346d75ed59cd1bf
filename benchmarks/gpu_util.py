"""Sample GPU utilisation with nvidia-smi in a background thread (no-op without nvidia-smi)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time


class GpuSampler:
    """`with GpuSampler() as s: ...` then `s.summary()`: mean and p10 utilisation per GPU (%), of every
    sample or of those taken within a window of Unix times."""

    def __init__(self, interval_ms: int = 200):
        self.interval_ms, self.samples, self._proc = interval_ms, [], None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits",
                 f"-lms={self.interval_ms}"], stdout=subprocess.PIPE, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            idx, util = (x.strip() for x in line.split(","))
            self.samples.append((int(idx), float(util), time.time()))

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()

    def summary(self, window: tuple[float, float] | None = None) -> str:
        samples = [s for s in self.samples if window is None or window[0] <= s[2] <= window[1]]
        if not samples:
            return "GPU utilisation: not sampled (no nvidia-smi)"
        out = []
        for gpu in sorted({s[0] for s in samples}):
            vals = sorted(s[1] for s in samples if s[0] == gpu)
            out.append(f"GPU {gpu}: mean {sum(vals) / len(vals):.0f}%, p10 {vals[len(vals) // 10]:.0f}% "
                       f"({len(vals)} samples)")
        return "GPU utilisation: " + "; ".join(out)


def main(argv: list[str]) -> int:
    """`python benchmarks/gpu_util.py CMD ARGS...`: run CMD, then print its wall time and GPU utilisation."""
    import time

    t0 = time.perf_counter()
    with GpuSampler() as gpu:
        rc = subprocess.call(argv)
    print(f"[{' '.join(argv[:6])} ...] rc {rc}, wall {time.perf_counter() - t0:.1f} s; {gpu.summary()}", flush=True)
    return rc


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
