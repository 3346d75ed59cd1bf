"""Figure helpers: matplotlib's object API (no pyplot, so no global backend state), PNG files sized to
fit a report page, short display names of the 19 dimensions and a readable per-dimension heatmap."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

DPI = 110
MAX_WIDTH_IN = 9.0  # 990 px at DPI: narrower than the reports' 1100 px page, so never scaled up or cut

SHORT_NAMES = {
    "timing_stable_unstable": "timing: stable–unstable",
    "articulation_short_long": "articulation: short–long",
    "articulation_soft_hard": "articulation: soft–hard",
    "pedal_sparse_saturated": "pedal: sparse–saturated",
    "pedal_clean_blurred": "pedal: clean–blurred",
    "timbre_even_colorful": "timbre: even–colourful",
    "timbre_shallow_rich": "timbre: shallow–rich",
    "timbre_bright_dark": "timbre: bright–dark",
    "timbre_soft_loud": "timbre: soft–loud",
    "dynamic_sophisticated_raw": "dynamics: sophisticated–raw",
    "dynamic_little_large_range": "dynamics: range little–large",
    "music_making_fast_slow": "music: fast–slow",
    "music_making_flat_spacious": "music: flat–spacious",
    "music_making_disproportioned_balanced": "music: disproportioned–balanced",
    "music_making_pure_dramatic": "music: pure–dramatic",
    "emotion_optimistic_dark": "emotion: optimistic–dark",
    "emotion_low_high_energy": "emotion: energy low–high",
    "emotion_honest_imaginative": "emotion: honest–imaginative",
    "interpretation_unsatisfactory_convincing": "interpretation: unsatisfactory–convincing",
}


def short_name(dim: str) -> str:
    """The display name of a PercePiano dimension (the name itself for anything else)."""
    return SHORT_NAMES.get(dim, dim)


def figure(nrows: int = 1, ncols: int = 1, panel: tuple[float, float] = (4.5, 3.2)):
    """A Figure with an (nrows, ncols) array of axes (always 2-D), at most MAX_WIDTH_IN wide."""
    fig = Figure(figsize=(min(panel[0] * ncols, MAX_WIDTH_IN), panel[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save(fig: Figure, out_dir: str | Path, name: str) -> Path:
    """Write `fig` to `out_dir/name.png` (folders created) and return the path."""
    path = Path(out_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def grid_shape(n: int) -> tuple[int, int]:
    """Rows and columns for n panels, at most 2 columns (so that panels stay readable on a page)."""
    cols = min(2, max(1, n))
    return int(np.ceil(n / cols)), cols


def natural_order(levels: Sequence) -> list:
    """Levels with the numeric ones (numbers or numeric strings) first, sorted as numbers (0, 1, 2, 10),
    then the others sorted as text (performers 0 ... 24, then "deadpan")."""
    def key(x) -> tuple:
        try:
            return (0, float(x), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(x))

    return sorted(levels, key=key)


def symmetric_limit(values, floor: float = 0.0, quantile: float = 95.0) -> float:
    """A colour limit for a scale centred on 0: the `quantile` of |values| (so one outlier does not
    squash the rest; larger values saturate), at least `floor`, rounded up to 2 significant digits."""
    finite = np.abs(np.asarray(values, dtype=float))
    finite = finite[np.isfinite(finite)]
    lim = max(float(np.percentile(finite, quantile)) if finite.size else 0.0, floor)
    if lim <= 0:
        return 1.0
    step = 10 ** (math.floor(math.log10(lim)) - 1)
    return math.ceil(lim / step - 1e-9) * step


def dimension_heatmap(values, columns: Sequence[str], dims: Sequence[str], label: str, floor: float = 0.0,
                      marks=None, cmap: str = "RdBu"):
    """A (dimension x column) heatmap with dimensions as rows (short names, horizontal), a colour scale
    symmetric around 0 (`symmetric_limit`), each cell's value written in it (`*` where `marks` is true)."""
    values = np.asarray(values, dtype=float)
    lim = symmetric_limit(values, floor)
    width = min(MAX_WIDTH_IN, 3.6 + 1.0 * len(columns) + 1.3)
    fig, axes = figure(panel=(width, 0.8 + 0.27 * len(dims)))
    ax = axes[0, 0]
    im = ax.imshow(values, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    for (r, c), x in np.ndenumerate(values):
        if np.isfinite(x):
            star = "*" if marks is not None and marks[r, c] else ""
            ax.text(c, r, f"{x:+.3f}{star}", ha="center", va="center", fontsize=7,
                    color="white" if abs(x) > 0.6 * lim else "black")
    ax.set_yticks(range(len(dims)), [short_name(d) for d in dims], fontsize=8)
    ax.set_xticks(range(len(columns)), list(columns), fontsize=8, rotation=20 if len(columns) > 3 else 0,
                  ha="right" if len(columns) > 3 else "center")
    ax.xaxis.tick_top()
    extend = "both" if np.nanmax(np.abs(values), initial=0) > lim else "neither"
    fig.colorbar(im, ax=ax, label=label, extend=extend, shrink=0.8)
    return fig
