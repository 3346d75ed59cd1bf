"""The HTTP server: `create_app(Settings)` -> a FastAPI application (OpenAPI docs at /docs).

Bad input is refused at the door with one JSON error `{"error": ..., "status": ...}` and a 4xx code:
413 over the size limit, 400 empty, 415 not a MIDI/audio file by its content, 422 a file that cannot
be read or predicted, 408 over the time limit, 503 when every prediction slot is busy. Predictions run
in a bounded thread pool; a shadow model predicts after the answer has been sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import BackgroundTasks, FastAPI, File, Header, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from pianolab.data.percepiano import DIMENSIONS
from pianolab.errors import PianolabError
from pianolab.serve.deploy import Deployment
from pianolab.serve.model import SCALE, ServedModel
from pianolab.serve.registry import ModelRegistry
from pianolab.serve.sniff import SUFFIX, sniff, sniff_score
from pianolab.serve.store import PredictionLog, new_request_id

CHUNK = 1 << 16


@dataclass
class Settings:
    registry: Path
    log: Path
    model: str = "champion"
    challenger: str = "challenger"
    deployment: Deployment = field(default_factory=Deployment)
    max_bytes: int = 20 * 2**20
    timeout_s: float = 30.0
    workers: int = 2
    keep_inputs: bool = False


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Feedback(BaseModel):
    """Ratings that arrived later for a served performance: name it by `request_id` or `input_hash`;
    `ratings` maps each of the 19 dimensions to a value on `scale` ('unit': 0..1, 'rating': 0..7)."""

    request_id: str | None = None
    input_hash: str | None = None
    ratings: dict[str, float]
    scale: str = "unit"
    group: str | None = None


class Server:
    """The models, the log and the worker pool behind the routes."""

    def __init__(self, s: Settings):
        self.s = s
        self.registry = ModelRegistry(s.registry)
        self.log = PredictionLog(s.log)
        self.models = {"champion": ServedModel(*self.registry.resolve(s.model))}
        if s.deployment.mode != "champion":
            self.models["challenger"] = ServedModel(*self.registry.resolve(s.challenger))
        self.explainers: dict[str, object] = {}
        self.pool = ThreadPoolExecutor(max_workers=s.workers, thread_name_prefix="predict")
        self.slots = asyncio.Semaphore(s.workers)

    async def run(self, fn, *args):
        """fn(*args) in the pool within the time limit (408), waiting at most that long for a slot (503)."""
        start = time.monotonic()
        try:
            await asyncio.wait_for(self.slots.acquire(), self.s.timeout_s)
        except TimeoutError:
            raise ApiError(503, "server busy: every prediction slot is taken, retry later") from None
        fut = asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        fut.add_done_callback(lambda _: self.slots.release())  # the slot stays taken until the work ends
        try:
            left = max(self.s.timeout_s - (time.monotonic() - start), 0.0)
            return await asyncio.wait_for(asyncio.shield(fut), left)
        except TimeoutError:
            raise ApiError(408, f"prediction took longer than the {self.s.timeout_s:g} s limit") from None

    def explanations(self, model: ServedModel):
        """SHAP for estimator runs, integrated gradients for neural runs on vector features (cached)."""
        from pianolab.serve.gradients import explanations_for

        if model.name not in self.explainers:
            self.explainers[model.name] = explanations_for(model)
        return self.explainers[model.name]


async def _read_upload(upload: UploadFile, limit: int) -> bytes:
    chunks, size = [], 0
    while chunk := await upload.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"{upload.filename}: larger than the {limit / 2**20:g} MB limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _stem(name: str | None) -> str:
    stem = Path(name or "performance").stem
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:100] or "performance"


def _predict_one(model: ServedModel, path: Path, kind: str, score: Path | None = None):
    """(prediction, latency ms); a bad file is an ApiError 422, whatever failed inside."""
    start = time.perf_counter()
    try:
        pred = model.predict(path, kind, score)
    except PianolabError as e:
        message = str(e)
    except Exception as e:  # noqa: BLE001 - a file that breaks a reader is still the file's fault here
        message = f"{path.name}: could not be processed ({e.__class__.__name__}: {e})"
    else:
        return pred, 1000 * (time.perf_counter() - start)
    raise ApiError(422, message.replace(f"{path.parent}/", ""))  # the server's temporary folder stays private


def _ratings(values: np.ndarray) -> list[dict]:
    return [{"dimension": d, "value": round(float(v), 5), "rating": round(7 * float(v), 4)}
            for d, v in zip(DIMENSIONS, values, strict=True)]


def create_app(settings: Settings) -> FastAPI:
    server = Server(settings)
    app = FastAPI(title="pianolab", version="1", description="Ratings of piano performances on the 19 "
                  "PercePiano dimensions, with explanations, from a registered model.")
    app.state.server = server

    def client_of(request: Request, header: str | None) -> str:
        return header or (request.client.host if request.client else "unknown")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        server.log.log_rejected(client_of(request, request.headers.get("x-client-id")), e.status, e.message,
                                int(request.headers.get("content-length") or 0) or None)
        return JSONResponse({"error": e.message, "status": e.status}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        where = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return await api_error(request, ApiError(422, f"invalid request ({where})"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return JSONResponse({"error": str(e.detail), "status": e.status_code}, status_code=e.status_code)

    @app.get("/health")
    def health() -> dict:
        """Liveness, the models loaded and the deployment mode."""
        return {"status": "ok", "models": {alias: m.name for alias, m in server.models.items()},
                "mode": settings.deployment.mode, "share": settings.deployment.share}

    @app.get("/model")
    def model_card(alias: str = "champion") -> dict:
        """The model card of the model behind `alias`, with its registry entry (the offline verdict)."""
        if alias not in server.models:
            raise ApiError(404, f"no model loaded as {alias!r}; loaded: {', '.join(server.models)}")
        m = server.models[alias]
        return {**m.card, "alias": alias, "registry": server.registry.entry(m.name)}

    @app.post("/predict")
    async def predict(
        request: Request, background: BackgroundTasks,
        performance: Annotated[UploadFile, File(description="performance: MIDI (or a recording)")],
        score: Annotated[UploadFile | None, File(description="optional score MIDI of the excerpt")] = None,
        explain: Annotated[bool, Query(description="add the reasons behind each rating (SHAP for tree and linear "
                                       "models, integrated gradients for neural ones)")] = False,
        x_client_id: Annotated[str | None, Header(description="sticky client id for the traffic split")] = None,
    ) -> dict:
        """The 19 ratings of one performance (0..1 and 1..7), the model that made them, and on request
        the features that raised and lowered each rating."""
        declared = int(request.headers.get("content-length") or 0)
        if declared > settings.max_bytes + CHUNK:
            raise ApiError(413, f"request of {declared} bytes is over the {settings.max_bytes / 2**20:g} MB limit")
        data = await _read_upload(performance, settings.max_bytes)
        if not data:
            raise ApiError(400, f"{performance.filename}: empty file")
        kind = sniff(data)
        if kind is None:
            raise ApiError(415, f"{performance.filename}: not a MIDI file or a WAV/FLAC/OGG/MP3 recording "
                                "(judged by its content, not its name)")
        score_data = None if score is None else await _read_upload(score, settings.max_bytes)
        score_suffix = None if score_data is None else sniff_score(score_data)
        if score_data is not None and score_suffix is None:
            raise ApiError(415, f"{score.filename}: the score is not a MIDI or MusicXML file (by its content)")
        client = client_of(request, x_client_id)
        answer, shadows = settings.deployment.route(client, "challenger" in server.models)
        folder = Path(tempfile.mkdtemp(prefix="pianolab-serve-"))
        path = folder / (_stem(performance.filename) + SUFFIX[kind])
        path.write_bytes(data)
        score_path = None if score_data is None else folder / f"{path.stem}.score{score_suffix}"
        if score_path is not None:
            score_path.write_bytes(score_data)
        request_id, digest = new_request_id(), hashlib.sha256(data).hexdigest()
        base = {"request_id": request_id, "input_hash": digest, "client": client, "kind": kind,
                "file_name": performance.filename or "", "data": data if settings.keep_inputs else None}
        model = server.models[answer]
        try:
            pred, latency = await server.run(_predict_one, model, path, kind, score_path)
        except ApiError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        server.log.log_prediction(**base, model=model.name, role="answer", latency_ms=latency,
                                  values=pred.values, features=pred.features, quality=pred.quality)
        out = {"request_id": request_id, "input_hash": digest, "model": model.name, "alias": answer,
               "scale": SCALE, "ratings": _ratings(pred.values), "latency_ms": round(latency, 2)}
        if pred.quality is not None:
            out["transcription_quality"] = pred.quality
        if explain:
            try:
                explainer = server.explanations(model)
                out["explain_method"] = explainer.method
                if pred.vector is None:
                    raise PianolabError("explanations need a MIDI performance (a recording's reasons are not "
                                        "computed)")
                out["explanations"] = await server.run(lambda: explainer.reasons(
                    pred.vector, pred.features, **model.explain_context(path, kind, score_path)))
            except PianolabError as e:
                out["explanations"], out["explain_error"] = None, str(e)
        background.add_task(_shadow, server, [server.models[a] for a in shadows], path, kind, score_path, base,
                            folder)
        return out

    @app.get("/predictions/{request_id}.html", response_class=HTMLResponse)
    def page(request_id: str) -> HTMLResponse:
        """The HTML page of a served performance: its ratings against the training distribution, and why."""
        from pianolab.serve.page import render_page

        rows = server.log.predictions_of(request_id)
        if not rows:
            raise ApiError(404, f"no served prediction {request_id}")
        row = rows[0]
        model = next((m for m in server.models.values() if m.name == row["model"]), None)
        reasons, why = None, ""
        if model is None:
            why = f"model {row['model']} is no longer loaded"
        else:
            try:
                x = model.vector_from_features(row["features"])
                reasons = server.explanations(model).reasons(x, row["features"])
            except PianolabError as e:
                why = str(e)
        return HTMLResponse(render_page(row["file_name"] or request_id, row["model"], row["values"], reasons,
                                        None if model is None else model.labels, why))

    @app.post("/feedback")
    def feedback(body: Feedback) -> dict:
        """Ratings for a performance served earlier (by request id or input hash), for live accuracy."""
        if not body.request_id and not body.input_hash:
            raise ApiError(422, "name the served performance: request_id or input_hash")
        rows = server.log.find(request_id=body.request_id, input_hash=body.input_hash)
        if not rows:
            raise ApiError(404, f"no served prediction for {body.request_id or body.input_hash}")
        if body.scale not in ("unit", "rating"):
            raise ApiError(422, f"scale {body.scale!r}: use 'unit' (0..1) or 'rating' (0..7)")
        missing = [d for d in DIMENSIONS if d not in body.ratings]
        unknown = sorted(set(body.ratings) - set(DIMENSIONS))
        if missing or unknown:
            raise ApiError(422, f"ratings: missing {', '.join(missing) or 'none'}; "
                                f"unknown {', '.join(unknown) or 'none'}")
        scale = 7.0 if body.scale == "rating" else 1.0
        values = np.array([body.ratings[d] for d in DIMENSIONS], dtype=float) / scale
        if not np.all((values >= 0) & (values <= 1)):
            raise ApiError(422, f"ratings outside the {body.scale} scale")
        fid = server.log.add_feedback(rows[0]["input_hash"], body.request_id, values, body.group)
        return {"feedback_id": fid, "input_hash": rows[0]["input_hash"], "models": sorted({r["model"] for r in rows})}

    return app


def _shadow(server: Server, models: list[ServedModel], path: Path, kind: str, score: Path | None, base: dict,
            folder: Path) -> None:
    """Predictions of the shadow models, logged and never returned; the upload's folder removed after."""
    try:
        for model in models:
            try:
                pred, latency = _predict_one(model, path, kind, score)
            except ApiError as e:
                server.log.log_rejected(base["client"], e.status, f"shadow {model.name}: {e.message}", None)
                continue
            server.log.log_prediction(**base, model=model.name, role="shadow", latency_ms=latency,
                                      values=pred.values, features=pred.features, quality=pred.quality)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
