"""Safe deployment on real loopback servers: shadow mode logs both models (clients see the champion only),
the traffic split is sticky per client id, `/feedback` then `pianolab ab live` on a small simulated stream,
`pianolab promote` moves the alias and the registry links the offline verdict."""

from __future__ import annotations

import json
import sqlite3

import httpx
import numpy as np
import pytest
from serve_support import MIDI, Server, cli, make_registry, wait_for

from pianolab.data.percepiano import DIMENSIONS
from pianolab.serve.deploy import bucket

FILES = sorted(MIDI.glob("*.mid"))[::40][:24]  # 24 performances of different excerpts


def _rows(srv) -> dict[str, dict[str, tuple[str, list]]]:
    """request id -> {model: (role, predictions)} from the server's log."""
    out = {}
    with sqlite3.connect(srv.log_path) as db:
        for rid, model, role, pred in db.execute("SELECT request_id, model, role, predictions FROM predictions"):
            out.setdefault(rid, {})[model] = (role, json.loads(pred))
    return out


@pytest.fixture(scope="module")
def shadow(tmp_path_factory):
    verdict = tmp_path_factory.mktemp("offline") / "report.md"
    verdict.write_text("# offline A/B: forest vs ridge\n")
    reg = make_registry(tmp_path_factory.mktemp("registry"), "ridge", "forest", verdict)
    srv = Server("--registry", str(reg), "--mode", "shadow")
    answers = [srv.post_midi(f, client=f"client{i}").json() for i, f in enumerate(FILES)]
    wait_for(lambda: all(len(_rows(srv).get(a["request_id"], {})) == 2 for a in answers))
    yield srv, reg, verdict, answers
    srv.stop()


def test_shadow_mode_logs_both_models_and_answers_with_the_champion(shadow):
    srv, _, _, answers = shadow
    assert {a["model"] for a in answers} == {"ridge"} and {a["alias"] for a in answers} == {"champion"}
    rows = _rows(srv)
    for a in answers:
        assert {m: role for m, (role, _) in rows[a["request_id"]].items()} == {"ridge": "answer", "forest": "shadow"}
        assert np.allclose(rows[a["request_id"]]["ridge"][1], [r["value"] for r in a["ratings"]], atol=1e-4)
    assert "forest" not in json.dumps(answers)  # the challenger's predictions never reach a client


def _feedback(srv, answers, truth_model: str, noise: float, seed: int, by: str):
    """Simulated later ratings: one model's predictions plus rater noise, sent by request id or input hash."""
    rows, rng = _rows(srv), np.random.default_rng(seed)
    for a in answers:
        truth = np.clip(np.array(rows[a["request_id"]][truth_model][1]) + rng.normal(0, noise, 19), 0, 1)
        r = httpx.post(srv.url + "/feedback", json={by: a[by], "ratings": dict(zip(DIMENSIONS, truth, strict=True)),
                                                     "group": a["input_hash"][:8]}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["models"] == ["forest", "ridge"]


def test_ab_live_on_feedback_then_promote(shadow):
    srv, reg, verdict, answers = shadow
    _feedback(srv, answers, "forest", 0.01, 0, "request_id")  # raters agree with the challenger
    out = cli("ab", "live", "--registry", str(reg))
    assert out.returncode == 0, out.stderr
    assert f"{len(answers)} rated performances predicted by both" in out.stdout
    assert "promotion supported" in out.stdout and "sign-flip permutation" in out.stdout
    _feedback(srv, answers, "ridge", 0.01, 1, "input_hash")  # newer ratings replace them: now the champion's
    res = json.loads(cli("ab", "live", "--registry", str(reg), "--json").stdout)
    assert res["n_pairs"] == len(answers) and res["mse_challenger"] > res["mse_champion"]
    assert not res["supported"] and "challenger is worse" in res["verdict"]

    card = httpx.get(srv.url + "/model", params={"alias": "challenger"}, timeout=10).json()
    assert card["name"] == "forest" and card["registry"]["verdict"] == str(verdict.resolve())
    out = cli("promote", "--registry", str(reg), "--reason", "live A/B")
    assert out.returncode == 0 and "champion ridge -> forest" in out.stdout
    data = json.loads((reg / "registry.json").read_text())
    assert data["aliases"] == {"champion": "forest"} and data["history"][-2]["reason"] == "live A/B"
    out = cli("promote", "--registry", str(reg))
    assert out.returncode == 2 and "no challenger to promote" in out.stderr and len(out.stderr.splitlines()) == 1


def test_feedback_errors_are_4xx(shadow):
    srv, _, _, answers = shadow
    ok = dict.fromkeys(DIMENSIONS, 0.5)
    for body, status in [({"request_id": "nope", "ratings": ok}, 404), ({"ratings": ok}, 422),
                         ({"request_id": answers[0]["request_id"], "ratings": {"timbre_soft_loud": 0.5}}, 422),
                         ({"request_id": answers[0]["request_id"], "ratings": dict.fromkeys(DIMENSIONS, 9)}, 422)]:
        r = httpx.post(srv.url + "/feedback", json=body, timeout=10)
        assert r.status_code == status and r.json()["status"] == status


def test_split_is_sticky_per_client_and_logs_who_answered(tmp_path):
    reg = make_registry(tmp_path / "registry", "ridge", "forest")
    srv = Server("--registry", str(reg), "--mode", "split", "--share", "0.5")
    try:
        clients = [f"user-{i}" for i in range(12)]
        first = {c: srv.post_midi(FILES[i], client=c).json() for i, c in enumerate(clients)}
        again = {c: srv.post_midi(FILES[-1], client=c).json() for c in clients[:6]}
        expected = {c: "forest" if bucket(c) < 0.5 else "ridge" for c in clients}
        assert {c: a["model"] for c, a in first.items()} == expected
        assert all(again[c]["model"] == first[c]["model"] for c in again)  # sticky
        assert set(expected.values()) == {"forest", "ridge"}
        ids = [a["request_id"] for a in [*first.values(), *again.values()]]
        wait_for(lambda: all(len(_rows(srv).get(i, {})) == 2 for i in ids))
        rows = _rows(srv)
        for a in [*first.values(), *again.values()]:
            roles = {m: role for m, (role, _) in rows[a["request_id"]].items()}
            assert roles[a["model"]] == "answer" and sorted(roles.values()) == ["answer", "shadow"]
    finally:
        srv.stop()


def test_bucket_shares_and_bad_deployment_options():
    share = np.mean([bucket(f"client-{i}") < 0.2 for i in range(4000)])
    assert abs(share - 0.2) < 0.02 and bucket("a") == bucket("a") != bucket("b")
    out = cli("serve", "--mode", "split")
    assert out.returncode == 2 and "split mode needs --share" in out.stderr
