"""Where a model errs: errors by piece, composer, performer, excerpt length and deadpan vs human,
and the largest misses with their labels and predictions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pianolab.data.percepiano import DIMENSIONS
from pianolab.evaluate import plots
from pianolab.evaluate.metrics import check_arrays, nanmean, pearson_cols

METADATA_COLUMNS = ("stem", "group", "piece", "composer", "performer", "bars", "deadpan")
DEFAULT_BY = ("piece", "composer", "performer", "bars", "deadpan")


def dataset_metadata(dataset, indices: Sequence[int] | None = None) -> pd.DataFrame:
    """Metadata table of a `Dataset` (rows in `indices` order, default all): METADATA_COLUMNS;
    `bars` is the excerpt length, `deadpan` marks the Score renditions."""
    table = pd.DataFrame({c: dataset.column(c) for c in METADATA_COLUMNS})
    return table if indices is None else table.iloc[list(indices)].reset_index(drop=True)


def _summary(yt: np.ndarray, yp: np.ndarray) -> dict[str, float]:
    err = yp - yt
    return {
        "n": len(yt),
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "bias": float(err.mean()),
        "pearson": nanmean(pearson_cols(yt, yp)) if len(yt) >= 3 else float("nan"),
    }


@dataclass(frozen=True)
class ErrorReport:
    """`by`: {column: DataFrame [level, n, mae, rmse, bias, pearson], worst MAE first};
    `misses`: the items with the largest MAE (metadata, mae, worst_dim, label, pred);
    `plots`: PNG paths."""

    by: dict[str, pd.DataFrame]
    misses: pd.DataFrame
    plots: list[Path]


def error_analysis(
    y_true,
    y_pred,
    metadata: pd.DataFrame | Mapping[str, Sequence],
    by: Sequence[str] = DEFAULT_BY,
    top_n: int = 20,
    dims: Sequence[str] = DIMENSIONS,
    out_dir: str | Path | None = None,
) -> ErrorReport:
    """Errors of (items, dims) predictions broken down by metadata columns.

    `metadata` has one row per item (e.g. `dataset_metadata(ds, test_idx)`). Per level: item
    count, MAE, RMSE, bias (mean prediction − label) and mean per-dimension Pearson (NaN under 3
    items). Misses are ranked by item MAE over dimensions; each row names the dimension with the
    largest absolute error and gives its label and prediction.
    """
    yt, yp = check_arrays(y_true, y_pred)
    meta = pd.DataFrame(metadata).reset_index(drop=True)
    if len(meta) != len(yt):
        raise ValueError(f"metadata has {len(meta)} rows, predictions {len(yt)}")
    missing = [c for c in by if c not in meta.columns]
    if missing:
        raise ValueError(f"metadata lacks columns {missing}; has {list(meta.columns)}")
    tables = {}
    for col in by:
        rows = [{"level": lvl, **_summary(yt[idx], yp[idx])}
                for lvl, idx in meta.groupby(col, sort=True).indices.items()]
        tables[col] = pd.DataFrame(rows).sort_values("mae", ascending=False, ignore_index=True)
    abs_err = np.abs(yp - yt)
    item_mae = abs_err.mean(axis=1)
    top = np.argsort(-item_mae, kind="stable")[:top_n]
    worst = abs_err[top].argmax(axis=1)
    misses = meta.iloc[top].reset_index(drop=True).assign(
        mae=item_mae[top],
        worst_dim=[dims[d] for d in worst],
        label=yt[top, worst],
        pred=yp[top, worst],
    )
    paths = [] if out_dir is None else [_plot(tables, out_dir)]
    return ErrorReport(tables, misses, paths)


def _plot(tables: dict[str, pd.DataFrame], out_dir: str | Path) -> Path:
    return plots.save(errors_figure(tables), out_dir, "errors_by_metadata")


def errors_figure(tables: dict[str, pd.DataFrame]):
    """MAE bars, one panel per column, levels in natural order (performers 0, 1, 2, ..., 10), two per row."""
    fig, axes = plots.figure(*plots.grid_shape(len(tables)), panel=(4.5, 3.2))
    for ax, (col, t) in zip(axes.flat, tables.items(), strict=False):
        t = t.set_index("level").loc[plots.natural_order(list(t["level"]))]
        names = [str(v) for v in t.index]
        ax.bar(range(len(names)), t["mae"])
        ax.set(title=f"MAE by {col}", ylabel="MAE", xlim=(-0.6, len(names) - 0.4))
        long = max(map(len, names)) > 4
        ax.set_xticks(range(len(names)), names, fontsize=7, rotation=30 if long else 0,
                      ha="right" if long else "center")
    for ax in list(axes.flat)[len(tables):]:
        ax.set_visible(False)
    return fig
