"""Figure helpers: matplotlib's object API (no pyplot, so no global backend state), PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def figure(nrows: int = 1, ncols: int = 1, panel: tuple[float, float] = (4.5, 3.2)):
    """A Figure with an (nrows, ncols) array of axes (always 2-D)."""
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save(fig: Figure, out_dir: str | Path, name: str) -> Path:
    """Write `fig` to `out_dir/name.png` (folders created) and return the path."""
    path = Path(out_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def grid_shape(n: int) -> tuple[int, int]:
    """Rows and columns for n panels, at most 4 columns."""
    cols = min(4, max(1, n))
    return int(np.ceil(n / cols)), cols
