"""`pianolab serve` on a free loopback port with real requests: ratings, explanations, the model card,
bad uploads refused with 4xx JSON errors, and the prediction log."""

from __future__ import annotations

import json
import sqlite3

import httpx
import numpy as np
import pandas as pd
import pytest
from serve_support import MIDI, Server, make_registry, trained_models

from pianolab.data.percepiano import DIMENSIONS

PERFORMANCE = MIDI / "Beethoven_WoO80_thema_8bars_11_1.mid"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    verdict = tmp_path_factory.mktemp("offline") / "report.md"
    verdict.write_text("# offline A/B: forest better\n")
    reg = make_registry(tmp_path_factory.mktemp("registry"), "forest", "ridge", verdict)
    srv = Server("--registry", str(reg), "--max-mb", "0.25", "--workers", "2")
    yield srv
    srv.stop()


def test_predicts_a_midi_file_like_pianolab_predict(server):
    from pianolab.predict import predict_files

    r = server.post_midi(PERFORMANCE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "forest" and body["alias"] == "champion"
    assert [x["dimension"] for x in body["ratings"]] == list(DIMENSIONS)
    values = np.array([x["value"] for x in body["ratings"]])
    assert np.allclose([x["rating"] for x in body["ratings"]], 7 * values, atol=1e-3)
    offline, errors = predict_files([PERFORMANCE], trained_models()["forest"])
    assert not errors
    assert np.allclose(values, offline[list(DIMENSIONS)].to_numpy()[0], atol=1e-4)
    assert len(body["input_hash"]) == 64 and "rating / 7" in body["scale"]


def test_explanations_name_features_in_musical_words(server):
    from pianolab.serve.words import describe

    body = server.post_midi(PERFORMANCE, explain=True).json()
    expl = body["explanations"]
    assert [e["dimension"] for e in expl] == list(DIMENSIONS)
    for e, rating in zip(expl, body["ratings"], strict=True):
        assert e["value"] == pytest.approx(rating["value"], abs=1e-4)  # SHAP: base + contributions
        assert e["raised"] or e["lowered"]
        raised = [f["effect"] for f in e["raised"]]
        assert all(x > 0 for x in raised) and raised == sorted(raised, reverse=True)
        assert all(f["effect"] < 0 for f in e["lowered"])
        for f in e["raised"] + e["lowered"]:
            assert f["words"] == describe(f["feature"]) and ":" not in f["words"]
            assert "feature_value" in f


def test_page_shows_ratings_against_training_and_reasons(server):
    body = server.post_midi(PERFORMANCE).json()
    page = httpx.get(f"{server.url}/predictions/{body['request_id']}.html", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.count('class="dimension"') == 19
    assert "212 held-out ratings" in page.text  # the holdout split's test fold, from predictions.parquet
    assert 'class="up"' in page.text and "No reasons" not in page.text
    missing = httpx.get(f"{server.url}/predictions/nope.html", timeout=10)
    assert missing.status_code == 404 and missing.json()["status"] == 404


def test_model_card_health_and_docs(server):
    card = httpx.get(server.url + "/model", timeout=10).json()
    assert card["name"] == "forest" and card["dimensions"] == list(DIMENSIONS)
    assert card["config"]["model"]["name"] == "random_forest" and card["meta"]["split"].startswith("holdout")
    assert httpx.get(server.url + "/health", timeout=10).json()["models"] == {"champion": "forest"}
    assert httpx.get(server.url + "/model", params={"alias": "challenger"}, timeout=10).status_code == 404
    assert "/predict" in httpx.get(server.url + "/openapi.json", timeout=10).json()["paths"]
    assert httpx.get(server.url + "/docs", timeout=10).status_code == 200


@pytest.mark.parametrize("name, data, status, words", [
    ("notes.mid", b"these are not MIDI bytes", 415, "not a MIDI file"),
    ("cut.mid", PERFORMANCE.read_bytes()[:120], 422, "truncated MIDI"),
    ("empty.mid", b"", 400, "empty file"),
    ("big.mid", b"MThd" + bytes(300_000), 413, "limit"),
    ("fake.wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40), 422, "fake.wav: "),  # a broken recording
])
def test_bad_uploads_get_one_json_error(server, name, data, status, words):
    r = server.post_midi(MIDI / name, data=data)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "status"} and body["status"] == status and words in body["error"]
    assert "pianolab-serve" not in body["error"]  # the server's temporary folder is not shown


def test_malformed_requests_are_4xx_and_logged(server):
    r = httpx.post(server.url + "/predict", timeout=10)
    assert r.status_code == 422 and "performance" in r.json()["error"]
    r = httpx.post(server.url + "/predict", files={"performance": ("x.mid", PERFORMANCE.read_bytes()),
                                                   "score": ("s.mid", b"not a score")}, timeout=10)
    assert r.status_code == 415 and "score" in r.json()["error"]
    assert server.post_midi(PERFORMANCE).status_code == 200  # the server is still fine


def test_prediction_log_has_hash_features_model_latency_and_no_raw_input(server):
    good = server.post_midi(PERFORMANCE).json()
    db = sqlite3.connect(server.log_path)
    row = db.execute("SELECT input_hash, model, role, latency_ms, features, input FROM predictions WHERE "
                     "request_id = ?", (good["request_id"],)).fetchone()
    assert row[0] == good["input_hash"] and row[1:3] == ("forest", "answer") and row[3] > 0
    assert '"symbolic:vel_mean"' in row[4] and row[5] is None
    reasons = {r[0] for r in db.execute("SELECT reason FROM rejected")}
    assert any("truncated MIDI" in r for r in reasons)


def test_time_limit_gives_408(tmp_path):
    reg = make_registry(tmp_path / "registry", "ridge")
    srv = Server("--registry", str(reg), "--timeout", "0.001")
    try:
        r = srv.post_midi(PERFORMANCE)
        assert r.status_code == 408 and "limit" in r.json()["error"]
    finally:
        srv.stop()


def test_predict_explain_writes_reasons_and_pages(tmp_path):
    from serve_support import cli

    out = tmp_path / "ratings.csv"
    res = cli("predict", str(PERFORMANCE), "--model", str(trained_models()["ridge"]), "--out", str(out), "--explain")
    assert res.returncode == 0, res.stderr
    reasons = json.loads(out.with_suffix(".explain.json").read_text())
    (entry,) = reasons.values()
    assert [r["dimension"] for r in entry["reasons"]] == list(DIMENSIONS)
    predicted = pd.read_csv(out)
    assert np.allclose([r["value"] for r in entry["reasons"]], predicted[list(DIMENSIONS)].to_numpy()[0], atol=1e-4)
    page = (tmp_path / "ratings_pages" / f"{PERFORMANCE.stem}.html").read_text()
    assert page.count('class="dimension"') == 19 and "held-out ratings" in page


def test_shap_is_additive_for_every_tree_and_linear_estimator():
    """base + SHAP values = the prediction, per dimension, for each estimator kind pianolab fits."""
    from sklearn.ensemble import ExtraTreesRegressor, HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import Ridge
    from sklearn.multioutput import MultiOutputRegressor

    from pianolab.advanced.ensembles import MeanEnsemble
    from pianolab.serve.explain import explainer_for

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6))
    y = np.stack([x[:, 0] - 2 * x[:, 1], x[:, 2] * x[:, 3], np.sin(x[:, 4])], axis=1) + rng.normal(0, .1, (120, 3))
    models = [RandomForestRegressor(20, random_state=0), ExtraTreesRegressor(20, random_state=0), Ridge(1.0),
              MultiOutputRegressor(HistGradientBoostingRegressor(max_iter=20)),
              MeanEnsemble([RandomForestRegressor(10, random_state=0), Ridge(1.0)], weights=[2, 1])]
    for model in models:
        model.fit(x, y)
        values, base = explainer_for(model, 6)(x[:5])
        assert values.shape == (5, 6, 3)
        assert np.allclose(base + values.sum(axis=1), model.predict(x[:5]), atol=1e-6), type(model).__name__


PAGE_PROBE = """() => ({
  rows: [...document.querySelectorAll('tr.dimension')].map(tr => {
    const svg = tr.querySelector('svg').getBoundingClientRect();
    const dot = tr.querySelector('circle').getBoundingClientRect();
    const bar = tr.querySelector('rect')?.getBoundingClientRect();
    return {name: tr.dataset.dimension, shown: tr.getBoundingClientRect().height > 0,
            dotInside: dot.left >= svg.left && dot.right <= svg.right, bar: bar ? bar.width : null,
            up: tr.querySelector('td.up').innerText, down: tr.querySelector('td.down').innerText};
  }),
  overflow: document.documentElement.scrollWidth > document.documentElement.clientWidth,
  wide: [...document.body.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right >
    document.documentElement.clientWidth).map(e => `${e.tagName}.${e.className} ${e.getBoundingClientRect().right}`),
  sizes: [document.documentElement.scrollWidth, document.documentElement.clientWidth],
})"""


def test_page_in_a_real_browser(server):
    from serve_support import in_chromium

    body = server.post_midi(PERFORMANCE).json()
    (found,) = in_chromium([f"{server.url}/predictions/{body['request_id']}.html"], PAGE_PROBE, width=760)
    assert [r["name"] for r in found["rows"]] == list(DIMENSIONS)
    assert all(r["shown"] and r["dotInside"] and r["bar"] > 0 for r in found["rows"])
    assert all(r["up"].strip() or r["down"].strip() for r in found["rows"])  # every rating has reasons
    assert not found["overflow"], (found["sizes"], found["wide"][:10])
