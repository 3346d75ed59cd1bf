"""`pianolab monitor` on traffic served by a real loopback server: an undrifted batch passes (exit 0),
time-stretched and transposed batches are flagged (exit 1), with the HTML report; live accuracy from
`/feedback`; the drift measures themselves."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest
from serve_support import Server, cli, make_registry, trained_models

from pianolab.data.percepiano import DIMENSIONS, load_dataset
from pianolab.render.augment import AugmentParams, augment_midi
from pianolab.serve import drift

WINDOW = 40


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    reg = make_registry(tmp_path_factory.mktemp("registry"), "ridge")
    srv = Server("--registry", str(reg))
    # performances of the model's training rows (its reference population), 40 drawn at random
    held_out = set(pd.read_parquet(trained_models()["ridge"] / "predictions.parquet")["stem"])
    items = [it for it in load_dataset().items if it.stem not in held_out]
    picked = [items[i] for i in np.random.default_rng(0).choice(len(items), WINDOW, replace=False)]
    yield srv, reg, picked
    srv.stop()


def _monitor(reg, tmp_path, *args):
    report = tmp_path / "monitor.html"
    out = cli("monitor", "--registry", str(reg), "--last", str(WINDOW), "--report", str(report), *args)
    return out, report


def _post_batch(srv, items, params=None):
    ids = []
    for it in items:
        data = it.midi_path.read_bytes()
        r = srv.post_midi(it.midi_path, data=augment_midi(data, params) if params else data)
        assert r.status_code == 200, r.text
        ids.append(r.json())
    return ids


def test_undrifted_batch_passes_and_live_accuracy_is_tracked(served, tmp_path):
    srv, reg, items = served
    answers = _post_batch(srv, items)
    for it, a in zip(items, answers, strict=True):
        r = httpx.post(srv.url + "/feedback", json={"request_id": a["request_id"], "scale": "rating",
                                                    "ratings": {d: 7 * v for d, v in zip(DIMENSIONS, it.labels,
                                                                                         strict=True)}}, timeout=10)
        assert r.status_code == 200, r.text
    out, report = _monitor(reg, tmp_path, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    analysis = json.loads(out.stdout[: out.stdout.rindex("}") + 1])
    assert analysis["alarms"] == [] and analysis["window"]["requests"] == WINDOW
    assert analysis["accuracy"]["n"] == WINDOW and analysis["accuracy"]["pearson"] > 0.3
    assert set(analysis["latency_ms"]) == {"p50", "p95", "p99"}
    assert "no alarm" in report.read_text()


def test_thresholds_are_options(served):
    """An impossible latency budget and accuracy floor raise alarms; a window below the minimum gives
    no drift verdict (the analysis behind `monitor`, in process)."""
    from pianolab.serve.model import ServedModel
    from pianolab.serve.monitor import Thresholds, analyse
    from pianolab.serve.registry import ModelRegistry
    from pianolab.serve.store import PredictionLog

    srv, reg, _ = served
    model, log = ServedModel(*ModelRegistry(reg).resolve("champion")), PredictionLog(srv.log_path)
    alarms = analyse(log, model, Thresholds(latency_p95_ms=0.001, min_pearson=0.99), last=WINDOW,
                     cache=reg / "references")["alarms"]
    assert any(a.startswith("latency p95") for a in alarms) and any(a.startswith("live accuracy") for a in alarms)
    small = analyse(log, model, Thresholds(min_window=1000), last=WINDOW)
    assert small["alarms"] == [] and "no drift verdict" in small["note"]


@pytest.mark.parametrize("params, moved", [(AugmentParams(stretch=1.5), "symbolic:span_s"),
                                           (AugmentParams(shift=12), "symbolic:pitch_mean")])
def test_drifted_batch_is_flagged(served, tmp_path, params, moved):
    srv, reg, items = served
    _post_batch(srv, items, params)
    out, report = _monitor(reg, tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "ALARM feature drift" in out.stdout and moved in out.stdout
    assert "ALARM" in report.read_text() and moved in report.read_text()


def test_missing_log_is_one_line(served, tmp_path):
    _, reg, _ = served
    out = cli("monitor", "--log", str(tmp_path / "none.sqlite"), "--registry", str(reg))
    assert out.returncode == 2 and out.stderr.strip().startswith("error: ") and "no prediction log" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_drift_measures():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=2000)
    same, moved = rng.normal(size=500), rng.normal(1.0, 1.0, size=500)
    assert drift.psi(ref, same) < 0.05 < 0.25 < drift.psi(ref, moved)
    assert drift.ks(ref, same)[1] > 0.01 > drift.ks(ref, moved)[1]
    assert drift.outside(ref, same) < 0.01 and drift.outside(ref, ref.max() + 1 + np.abs(same)) == 1.0


REPORT_PROBE = """() => ({
  verdict: document.querySelector('#verdict').innerText,
  alarms: [...document.querySelectorAll('li.bad')].map(li => li.innerText),
  drifted: [...document.querySelectorAll('table.drift tr.bad td:first-child')].map(td => td.innerText),
  rows: document.querySelectorAll('table.drift tr').length,
  overflow: document.documentElement.scrollWidth > document.documentElement.clientWidth,
})"""


def test_report_in_a_real_browser(served, tmp_path):
    """The drift report of a transposed batch, opened in headless Chromium at a narrow window."""
    from serve_support import in_chromium

    from pianolab.serve.model import ServedModel
    from pianolab.serve.monitor import Thresholds, analyse
    from pianolab.serve.registry import ModelRegistry
    from pianolab.serve.report import render_report
    from pianolab.serve.store import PredictionLog

    srv, reg, items = served
    _post_batch(srv, items[:WINDOW // 2], AugmentParams(shift=12))
    model = ServedModel(*ModelRegistry(reg).resolve("champion"))
    a = analyse(PredictionLog(srv.log_path), model, Thresholds(), last=WINDOW // 2, cache=reg / "references")
    page = tmp_path / "report.html"
    page.write_text(render_report(a))
    (found,) = in_chromium([page.as_uri()], REPORT_PROBE, width=760)
    assert found["verdict"] == "ALARM" and found["alarms"] == a["alarms"]
    assert "symbolic:pitch_mean" in found["drifted"] and found["rows"] > 70  # 70 features + 19 dimensions
    assert not found["overflow"]
