"""The prediction log: every served prediction, rejected upload and later rating, in one SQLite file.

`predictions` has one row per model that predicted a request (the model that answered, and a shadow
model that predicted unseen), keyed by `request_id`: input hash (sha256 of the upload), client id,
kind, model, role (`answer` or `shadow`), latency, the 19 predictions and the raw features as JSON,
a recording's transcription-quality signals as JSON (`quality`, `pianolab.transcribe.quality`; a log
written before that column existed gains it when opened); the upload itself only when the server runs
with `--keep-inputs`. `feedback` holds ratings that
arrive later for a request or an input hash; `rejected` the uploads refused at the door.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd

from pianolab.data.percepiano import DIMENSIONS

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
  request_id TEXT NOT NULL, at REAL NOT NULL, input_hash TEXT NOT NULL, client TEXT, kind TEXT,
  file_name TEXT, model TEXT NOT NULL, role TEXT NOT NULL, latency_ms REAL, predictions TEXT NOT NULL,
  features TEXT, input BLOB, quality TEXT, PRIMARY KEY (request_id, model));
CREATE INDEX IF NOT EXISTS predictions_hash ON predictions (input_hash);
CREATE TABLE IF NOT EXISTS feedback (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, input_hash TEXT NOT NULL, request_id TEXT,
  grp TEXT, ratings TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rejected (
  at REAL NOT NULL, client TEXT, status INTEGER NOT NULL, reason TEXT NOT NULL, size INTEGER);
"""


def new_request_id() -> str:
    return uuid.uuid4().hex


class PredictionLog:
    """The log in the SQLite file `path` (WAL mode: the server writes while `monitor` reads)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            if "quality" not in {r[1] for r in db.execute("PRAGMA table_info(predictions)")}:
                db.execute("ALTER TABLE predictions ADD COLUMN quality TEXT")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def log_prediction(self, *, request_id: str, input_hash: str, client: str, kind: str, file_name: str,
                       model: str, role: str, latency_ms: float, values: np.ndarray,
                       features: dict | None, data: bytes | None = None, quality: dict | None = None) -> None:
        row = (request_id, time.time(), input_hash, client, kind, file_name, model, role, latency_ms,
               json.dumps([float(v) for v in values]), None if features is None else json.dumps(features), data,
               None if quality is None else json.dumps(quality))
        with closing(self._connect()) as db, db:
            db.execute("INSERT INTO predictions (request_id, at, input_hash, client, kind, file_name, model, role, "
                       "latency_ms, predictions, features, input, quality) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", row)

    def log_rejected(self, client: str, status: int, reason: str, size: int | None) -> None:
        with closing(self._connect()) as db, db:
            db.execute("INSERT INTO rejected VALUES (?,?,?,?,?)", (time.time(), client, status, reason, size))

    def add_feedback(self, input_hash: str, request_id: str | None, ratings: np.ndarray, group: str | None) -> int:
        with closing(self._connect()) as db, db:
            cur = db.execute("INSERT INTO feedback (at, input_hash, request_id, grp, ratings) VALUES (?,?,?,?,?)",
                             (time.time(), input_hash, request_id, group, json.dumps([float(v) for v in ratings])))
            return int(cur.lastrowid)

    def find(self, *, request_id: str | None = None, input_hash: str | None = None) -> list[dict]:
        """Prediction rows of a request id or an input hash (newest first)."""
        col, val = ("request_id", request_id) if request_id else ("input_hash", input_hash)
        with closing(self._connect()) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(f"SELECT request_id, input_hash, model, role FROM predictions WHERE {col} = ? "
                              "ORDER BY at DESC", (val,)).fetchall()
        return [dict(r) for r in rows]

    def predictions_of(self, request_id: str) -> list[dict]:
        """The rows of one request, the answer first: model, role, file name, values (19,), features."""
        with closing(self._connect()) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT model, role, file_name, predictions, features FROM predictions WHERE "
                              "request_id = ? ORDER BY role = 'shadow'", (request_id,)).fetchall()
        return [{"model": r["model"], "role": r["role"], "file_name": r["file_name"],
                 "values": np.array(json.loads(r["predictions"])),
                 "features": None if r["features"] is None else json.loads(r["features"])} for r in rows]

    def predictions(self, since: float | None = None, last: int | None = None) -> pd.DataFrame:
        """Prediction rows (newest `last` requests, or those since a time), one column per dimension."""
        query, args = "SELECT * FROM predictions", []
        if since is not None:
            query, args = query + " WHERE at >= ?", [since]
        with closing(self._connect()) as db:
            df = pd.read_sql_query(query + " ORDER BY at", db, params=args)
        if last is not None:
            keep = df["request_id"].drop_duplicates().iloc[-last:]
            df = df[df["request_id"].isin(keep)]
        values = np.array([json.loads(p) for p in df["predictions"]]).reshape(len(df), len(DIMENSIONS))
        out = df.drop(columns=["predictions", "input"]).reset_index(drop=True)
        return pd.concat([out, pd.DataFrame(values, columns=list(DIMENSIONS))], axis=1)

    def feedback(self) -> pd.DataFrame:
        """The latest rating per input hash, one column per dimension."""
        with closing(self._connect()) as db:
            df = pd.read_sql_query("SELECT * FROM feedback ORDER BY id", db)
        df = df.drop_duplicates("input_hash", keep="last").reset_index(drop=True)
        values = np.array([json.loads(r) for r in df["ratings"]]).reshape(len(df), len(DIMENSIONS))
        return pd.concat([df.drop(columns=["ratings"]), pd.DataFrame(values, columns=list(DIMENSIONS))], axis=1)

    def table(self, name: str) -> pd.DataFrame:
        with closing(self._connect()) as db:
            return pd.read_sql_query(f"SELECT * FROM {name}", db)
