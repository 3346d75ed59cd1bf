"""A small self-contained HTML page per performance: the 19 ratings against the distribution of the
run's held-out labels, and the reasons (SHAP) behind each rating."""

from __future__ import annotations

import numpy as np
import pandas as pd
from jinja2 import Environment, select_autoescape

from pianolab.data.percepiano import DIMENSIONS

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pianolab: {{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1em;max-width:70em}
table{border-collapse:collapse;width:100%} td,th{padding:.25em .4em;border-bottom:1px solid #ddd;vertical-align:top}
td,h1{overflow-wrap:anywhere} td.up,td.down{font-size:.9em}
.up{color:#1b7f3b}.down{color:#b3261e} small{color:#666}
</style></head><body>
<h1>{{ title }}</h1>
<p>Model <b>{{ model }}</b>. Ratings on the PercePiano 1..7 scale (value x 7).
{% if reference %}Grey bar: 5th-95th percentile of the {{ reference }} held-out ratings, line: their median;
dot: this performance.{% else %}This run has no held-out ratings to compare with.{% endif %}</p>
<table id="ratings"><tr><th>dimension</th><th>rating</th><th></th><th>raised by</th><th>lowered by</th></tr>
{% for r in rows %}<tr class="dimension" data-dimension="{{ r.dimension }}">
<td>{{ r.dimension.replace("_", " ") }}</td><td>{{ "%.2f"|format(r.rating) }}</td>
<td><svg width="220" height="18" viewBox="0 0 220 18">
<line x1="10" y1="9" x2="210" y2="9" stroke="#ccc"/>
{% if r.lo is not none %}<rect x="{{ r.lo }}" y="4" width="{{ r.hi - r.lo }}" height="10" fill="#ddd"/>
<line x1="{{ r.mid }}" y1="2" x2="{{ r.mid }}" y2="16" stroke="#888"/>{% endif %}
<circle cx="{{ r.x }}" cy="9" r="5" fill="#1f4e9c"/></svg></td>
<td class="up">{% for f in r.raised %}{{ f.words }} <small>(+{{ "%.2f"|format(f.effect) }})</small><br>{% endfor %}</td>
<td class="down">{% for f in r.lowered %}{{ f.words }}
<small>({{ "%.2f"|format(f.effect) }})</small><br>{% endfor %}</td>
</tr>{% endfor %}</table>
{% if not explained %}<p><small>No reasons: {{ why }}</small></p>{% endif %}
</body></html>
"""


def _x(value: float) -> float:
    """Position of a 0..1 value on the 200-pixel scale (1..7 ratings map to 1/7..1)."""
    return round(10 + 200 * float(np.clip(value, 0, 1)), 1)


def render_page(title: str, model: str, values: np.ndarray, reasons: list[dict] | None,
                labels: pd.DataFrame | None, why: str = "") -> str:
    """The page of one performance. `labels`: a run's predictions.parquet (its true_* columns)."""
    rows = []
    for j, dim in enumerate(DIMENSIONS):
        row = {"dimension": dim, "rating": 7 * float(values[j]), "x": _x(values[j]), "lo": None,
               "raised": reasons[j]["raised"] if reasons else [], "lowered": reasons[j]["lowered"] if reasons else []}
        if labels is not None and f"true_{dim}" in labels:
            lo, mid, hi = np.nanpercentile(labels[f"true_{dim}"], [5, 50, 95])
            row.update(lo=_x(lo), mid=_x(mid), hi=_x(hi))
        rows.append(row)
    env = Environment(autoescape=select_autoescape(default=True))
    n = None if labels is None else len(labels)
    return env.from_string(TEMPLATE).render(title=title, model=model, rows=rows, reference=n,
                                            explained=bool(reasons), why=why)
