"""The report figures are readable: numeric levels sorted as numbers, a colour scale centred on 0 that one
outlier does not squash, full dimension names, every label inside the figure, nothing wider than a page."""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from pianolab.data.percepiano import DIMENSIONS
from pianolab.evaluate import plots
from pianolab.evaluate.error_analysis import dataset_metadata, error_analysis, errors_figure

PAGE_PX = plots.MAX_WIDTH_IN * plots.DPI


def texts_outside(fig) -> list[str]:
    """Every tick label, axis label, title and legend text that is cut by the figure's edges."""
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    texts = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
        texts += [t for t in ax.get_xticklabels() if x0 <= t.get_position()[0] <= x1]  # ticks drawn, not all
        texts += [t for t in ax.get_yticklabels() if y0 <= t.get_position()[1] <= y1]
        texts += [ax.xaxis.label, ax.yaxis.label, ax.title, *(ax.get_legend().get_texts() if ax.get_legend() else ())]
    out = []
    for t in texts:
        if t.get_visible() and t.get_text():
            b = t.get_window_extent(renderer)
            if b.x0 < -1 or b.y0 < -1 or b.x1 > width + 1 or b.y1 > height + 1:
                out.append(t.get_text())
    return out


def test_natural_order():
    assert plots.natural_order(["10", "2", "0", "1", "11"]) == ["0", "1", "2", "10", "11"]
    assert plots.natural_order([16, 4, 8]) == [4, 8, 16]
    assert plots.natural_order(["Schubert", "Beethoven"]) == ["Beethoven", "Schubert"]
    assert plots.natural_order(["deadpan", "12", "3"]) == ["3", "12", "deadpan"]


def test_symmetric_limit_not_squashed_by_one_outlier():
    values = np.r_[np.linspace(-0.02, 0.03, 40), 0.5]
    lim = plots.symmetric_limit(values)
    assert 0.025 <= lim < 0.1  # the outlier saturates instead of squashing the other 40 cells into white
    assert plots.symmetric_limit(values, floor=0.2) == 0.2
    assert plots.symmetric_limit([0.0, 0.0]) == 1.0


def test_dimension_heatmap_readable(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.normal(0, 0.02, (19, 3))
    values[0, 0] = 0.4
    marks = np.zeros_like(values, bool)
    marks[2, 1] = True
    fig = plots.dimension_heatmap(values, ["a_long_variant_name", "b", "c"], DIMENSIONS, "Δ pearson", marks=marks)
    ax = fig.axes[0]
    low, high = ax.images[0].get_clim()
    assert low == -high and 0.02 < high < 0.2
    assert [t.get_text() for t in ax.get_yticklabels()] == [plots.short_name(d) for d in DIMENSIONS]
    assert all(len(plots.short_name(d)) < 45 and ":" in plots.short_name(d) for d in DIMENSIONS)
    cells = [t.get_text() for t in ax.texts]
    assert len(cells) == 57 and f"{values[2, 1]:+.3f}*" in cells
    assert not texts_outside(fig)
    assert Image.open(plots.save(fig, tmp_path, "heat")).width <= PAGE_PX


def test_error_panels_sorted_numerically_and_inside_the_page(dataset, tmp_path):
    rng = np.random.default_rng(0)
    y = dataset.labels
    rep = error_analysis(y, y + rng.normal(0, 0.05, y.shape), dataset_metadata(dataset), out_dir=tmp_path)
    fig = errors_figure(rep.by)
    performer = next(ax for ax in fig.axes if ax.get_title() == "MAE by performer")
    labels = [t.get_text() for t in performer.get_xticklabels()]
    assert labels[-1] == "deadpan" and labels[:-1] == sorted(labels[:-1], key=int)
    assert len(labels) == len(rep.by["performer"]) > 10
    assert not texts_outside(fig)
    assert Image.open(rep.plots[0]).width <= PAGE_PX
