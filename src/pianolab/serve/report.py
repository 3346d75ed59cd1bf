"""The monitoring report as a self-contained HTML page (Jinja2) and as JSON-ready data."""

from __future__ import annotations

import math

import pandas as pd
from jinja2 import Environment, select_autoescape

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pianolab monitor: {{ a.model }}</title>
<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}
table{border-collapse:collapse;margin-bottom:1.5em}
td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}.bad{color:#b3261e;font-weight:600}.ok{color:#1b7f3b}
.scroll{overflow-x:auto} li{overflow-wrap:anywhere}</style></head><body>
<h1>Monitoring: {{ a.model }}</h1>
<p>{{ a.window.requests }} served requests in the window ({{ a.window.predictions_by_model }} predictions by this
model, answers and shadow); {{ a.rejected }} uploads rejected at the door.</p>
{% if a.note %}<p>{{ a.note }}</p>{% endif %}
<h2 id="verdict" class="{{ 'bad' if a.alarms else 'ok' }}">{{ 'ALARM' if a.alarms else 'no alarm' }}</h2>
<ul>{% for x in a.alarms %}<li class="bad">{{ x }}</li>{% endfor %}</ul>
<h2>Latency and live accuracy</h2>
<div class="scroll"><table>
<tr><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>rated</th><th>mean Pearson r</th><th>MAE (1..7)</th></tr>
<tr>{% for q in ['p50', 'p95', 'p99'] %}<td>{{ fmt(a.latency_ms[q]) if a.latency_ms else '-' }}</td>{% endfor %}
<td>{{ a.accuracy.n }}</td><td>{{ fmt(a.accuracy.pearson) }}</td><td>{{ fmt(a.accuracy.mae_rating) }}</td></tr></table>
</div>
<h2>Transcription quality of recordings</h2>{% set tr = a.transcription %}
{% if tr and tr.recordings %}<p id="transcription">{{ tr.recordings }} recordings, {{ tr.suspect }} with a suspect
transcription ({{ '%.0f%%'|format(100 * tr.suspect_share) }}){% if tr.reasons %}: {% for k, v in tr.reasons.items()
%}{{ k }} {{ v }}x{{ ', ' if not loop.last }}{% endfor %}{% endif %}.</p>
<div class="scroll"><table><tr><th>signal</th><th>p10</th><th>median</th><th>p90</th><th>suspect below</th>
<th>suspect above</th></tr>{% for name, x in tr.signals.items() %}<tr><td>{{ name }}</td><td>{{ fmt(x.p10) }}</td>
<td>{{ fmt(x.median) }}</td><td>{{ fmt(x.p90) }}</td><td>{{ fmt(x.bounds[0]) }}</td><td>{{ fmt(x.bounds[1]) }}</td>
</tr>{% endfor %}</table></div>{% else %}<p id="transcription">no recordings in the window</p>{% endif %}
{% for title, df in [('Predicted dimensions', a.predictions), ('Input features', a.features)] %}
<h2>{{ title }}</h2>{% if df is not none and len(df) %}
<div class="scroll"><table class="drift"><tr><th>column</th><th>PSI</th><th>KS</th><th>p (BH)</th><th>outside range</th>
<th>training median</th><th>served median</th><th>drifted</th></tr>
{% for r in df.itertuples() %}<tr class="{{ 'bad' if r.drifted else '' }}"><td>{{ r.column }}</td>
<td>{{ fmt(r.psi) }}</td>
<td>{{ fmt(r.ks) }}</td><td>{{ fmt(r.p_adjusted) }}</td><td>{{ '%.0f%%'|format(100 * r.outside) }}</td>
<td>{{ fmt(r.ref_median) }}</td><td>{{ fmt(r.served_median) }}</td><td>{{ 'yes' if r.drifted else '' }}</td>
</tr>{% endfor %}
</table></div>{% else %}<p>none</p>{% endif %}{% endfor %}
</body></html>
"""


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3g}"


def render_report(analysis: dict) -> str:
    env = Environment(autoescape=select_autoescape(default=True))
    return env.from_string(TEMPLATE).render(a=analysis, fmt=_fmt, len=len)


def as_json(analysis: dict) -> dict:
    """The analysis with its tables as lists of records."""
    return {k: (v.to_dict("records") if isinstance(v, pd.DataFrame) else v) for k, v in analysis.items()}
