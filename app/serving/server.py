"""The HTTP server: scoring routes, health, readiness, the served models and Prometheus metrics.

`create_app()` reads its settings from the environment (`ServeConfig.from_env`), so that every
uvicorn worker process builds the same app: each worker holds its own model cache, poller and
prediction-log writer (metrics are per worker too).
"""

from __future__ import annotations

import gc
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool

from app.serving.batching import Batcher, Outputs
from app.serving.fleet import Fleet, Loaded, Slot
from app.serving.payload import RequestError, read_request
from app.serving.predlog import PredictionLog, log_rows
from tasks.scoring.model import PREDICTION

log = logging.getLogger("conveyor.serving")

VERSION_HEADER = "X-Conveyor-Model-Version"
ROUTE_HEADER = "X-Conveyor-Route"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SHADOW_BACKLOG = 1000
_INLINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class ServeConfig:
    models: list[str] | None = None
    max_body_mb: float = 10.0
    cache_mb: float = 2048.0
    poll_seconds: float = 1.0
    log_seconds: float = 2.0

    @classmethod
    def from_env(cls) -> ServeConfig:
        names = [n.strip() for n in os.environ.get("CONVEYOR_SERVE_MODELS", "").split(",") if n.strip()]
        return cls(
            models=names or None,
            max_body_mb=float(os.environ.get("CONVEYOR_SERVE_MAX_BODY_MB", 10)),
            cache_mb=float(os.environ.get("CONVEYOR_SERVE_CACHE_MB", 2048)),
            poll_seconds=float(os.environ.get("CONVEYOR_SERVE_POLL_SECONDS", 1.0)),
            log_seconds=float(os.environ.get("CONVEYOR_SERVE_LOG_SECONDS", 2.0)),
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("model", "version", "route")
        self.requests = Counter(
            "conveyor_serving_requests", "Requests answered", labels, registry=self.registry
        )  # fmt: skip
        self.rows = Counter("conveyor_serving_rows", "Rows scored", labels, registry=self.registry)
        self.errors = Counter(
            "conveyor_serving_errors", "Requests refused or failed", ("model", "status"), registry=self.registry
        )
        self.latency = Histogram(
            "conveyor_serving_request_seconds",
            "Time to answer a scoring request",
            ("model", "version"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.loaded = Gauge("conveyor_serving_models_loaded", "Models loaded", registry=self.registry)
        self.switches = Gauge("conveyor_serving_switches", "Champion switches seen", registry=self.registry)
        self.logged = Gauge(
            "conveyor_serving_logged_rows", "Rows written to the prediction log", registry=self.registry
        )
        self.batches = Gauge("conveyor_serving_batches", "predict calls for batched requests", registry=self.registry)
        self.batched = Gauge("conveyor_serving_batched_requests", "Requests scored in batches", registry=self.registry)
        self.shadow_dropped = Counter(
            "conveyor_serving_shadow_dropped", "Shadow scorings skipped (backlog full)", registry=self.registry
        )


def _outputs_json(outputs: dict[str, pa.Array]) -> dict[str, Any]:
    """`predictions`, `probabilities` (one {class: p} per row) and any other output by its name."""
    result: dict[str, Any] = {"predictions": outputs[PREDICTION].to_pylist()}
    probabilities = {n.removeprefix("proba_"): a.to_pylist() for n, a in outputs.items() if n.startswith("proba_")}
    if probabilities:
        classes = list(probabilities)
        rows = zip(*probabilities.values(), strict=True)
        result["probabilities"] = [dict(zip(classes, row, strict=True)) for row in rows]
    for name, array in outputs.items():
        if name != PREDICTION and not name.startswith("proba_"):
            result[name] = array.to_pylist()  # e.g. `served_by` of a segmented model
    return result


def _v2_outputs(outputs: dict[str, pa.Array]) -> list[dict[str, Any]]:
    tensors = []
    for name, array in outputs.items():
        kind = "FP64" if pa.types.is_floating(array.type) else "BYTES"
        values = array.to_pylist()
        tensors.append({"name": name, "shape": [len(values)], "datatype": kind, "data": values})
    return tensors


def _error(exc: RequestError) -> Response:
    return Response(orjson.dumps(exc.body()), status_code=exc.status, media_type="application/json")


def create_app(config: ServeConfig | None = None) -> FastAPI:
    """The serving app; its fleet starts with the app's lifespan and stops with it."""
    config = config or ServeConfig.from_env()
    fleet = Fleet(config.models, cache_mb=config.cache_mb, poll_seconds=config.poll_seconds)
    prediction_log = PredictionLog(flush_seconds=config.log_seconds)
    metrics = Metrics()
    limit = int(config.max_body_mb * 2**20)
    shadows = ThreadPoolExecutor(1, "serve-shadow")
    backlog = threading.BoundedSemaphore(_SHADOW_BACKLOG)
    batcher = Batcher()

    def start_and_freeze() -> None:
        fleet.start()
        if fleet.preloaded.wait(timeout=600):
            # Start-up's objects (MLflow, scikit-learn, the loaded models) out of the collector's
            # reach: under load a full collection over them paused every request for about 0.2 s.
            gc.collect()
            gc.freeze()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        prediction_log.start()
        # Listen at once (/health answers, /ready says 503 until the champions are loaded).
        threading.Thread(target=start_and_freeze, name="serve-start", daemon=True).start()
        try:
            yield
        finally:
            fleet.stop()
            shadows.shutdown(wait=True)
            prediction_log.close()

    app = FastAPI(title="Conveyor serving", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.fleet, app.state.log, app.state.config = fleet, prediction_log, config
    app.add_exception_handler(RequestError, lambda _, exc: _error(exc))  # type: ignore[arg-type]

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise RequestError(413, f"the body holds {int(length)} bytes, over the limit of {limit} bytes")
        parts, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"the body is over the limit of {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def slot_for(name: str) -> Slot:
        slot = fleet.get(name)
        return slot if slot is not None else await run_in_threadpool(fleet.ensure, name)

    def shadow(challenger: Loaded, table: pa.Table, frame: Any) -> None:
        try:
            outputs = challenger.predict(frame)
            rows = log_rows(
                table, challenger.model.features, challenger.spec.data.id_column, outputs,
                challenger.version, datetime.now(UTC), "shadow",
            )  # fmt: skip
            prediction_log.add(challenger.name, rows)
            metrics.rows.labels(challenger.name, challenger.version, "shadow").inc(table.num_rows)
        except Exception as exc:
            log.warning("shadow scoring by %s v%s failed: %s", challenger.name, challenger.version, exc)
        finally:
            backlog.release()

    def prepare(slot: Slot, body: bytes, content_type: str) -> tuple[Loaded, str, pa.Table, Any]:
        """Pick who answers (the champion, or the canary), read and check the rows."""
        answering, route = slot.champion, "champion"
        if slot.challenger is not None and slot.canary and random.random() < slot.canary:
            answering, route = slot.challenger, "canary"
        table = read_request(body, content_type, answering.contract)
        frame = table.select(list(answering.model.features)).to_pandas(use_threads=False)  # threads cost more here
        return answering, route, table, frame

    def refused(answering: Loaded, exc: Exception) -> RequestError:
        return RequestError(400, f"model {answering.name} v{answering.version} cannot score these rows: {exc}")

    def finish(slot: Slot, answering: Loaded, route: str, table: pa.Table, frame: Any, outputs: Outputs) -> None:
        """Log the answered rows; queue the shadow scoring."""
        rows = log_rows(
            table, answering.model.features, answering.spec.data.id_column, outputs, answering.version,
            datetime.now(UTC), route,
        )  # fmt: skip
        prediction_log.add(answering.name, rows)
        if slot.shadow and route == "champion" and slot.challenger is not None:
            if backlog.acquire(blocking=False):
                shadows.submit(shadow, slot.challenger, table, frame)
            else:
                metrics.shadow_dropped.inc()

    def score(slot: Slot, body: bytes, content_type: str) -> tuple[Loaded, str, Outputs]:
        """A large body, off the event loop: check, answer, log, queue the shadow."""
        answering, route, table, frame = prepare(slot, body, content_type)
        try:
            outputs = answering.predict(frame)
        except (ValueError, TypeError) as exc:
            raise refused(answering, exc) from None
        finish(slot, answering, route, table, frame, outputs)
        return answering, route, outputs

    async def score_batched(slot: Slot, body: bytes, content_type: str) -> tuple[Loaded, str, Outputs]:
        """A small body, on the event loop: its rows scored with the requests that arrive beside it."""
        answering, route, table, frame = prepare(slot, body, content_type)
        try:
            outputs = await batcher.predict(answering, frame)
        except (ValueError, TypeError) as exc:
            raise refused(answering, exc) from None
        finish(slot, answering, route, table, frame, outputs)
        return answering, route, outputs

    async def answer(name: str, request: Request, v2: bool) -> Response:
        started = time.perf_counter()
        try:
            slot = await slot_for(name)
            body = await read_body(request)
            content_type = request.headers.get("content-type", "application/json").lower()
            if len(body) > _INLINE_BYTES:  # a large body must not hold up the other requests
                answering, route, outputs = await run_in_threadpool(score, slot, body, content_type)
            else:  # a small one is answered faster without a thread hop, batched with its neighbours
                answering, route, outputs = await score_batched(slot, body, content_type)
        except RequestError as exc:
            metrics.errors.labels(name, str(exc.status)).inc()
            return _error(exc)
        except Exception as exc:  # a bug, not the client: say so, keep serving
            log.exception("scoring %s failed", name)
            metrics.errors.labels(name, "500").inc()
            return _error(RequestError(500, f"internal error scoring {name}: {type(exc).__name__}"))
        version = answering.version
        if v2:
            document: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": _v2_outputs(outputs)}
        else:
            document = {**_outputs_json(outputs), "model": name, "version": version}
        rows = len(outputs[PREDICTION])
        metrics.requests.labels(name, version, route).inc()
        metrics.rows.labels(name, version, route).inc(rows)
        metrics.latency.labels(name, version).observe(time.perf_counter() - started)
        headers = {VERSION_HEADER: version, ROUTE_HEADER: route}
        return Response(orjson.dumps(document), media_type="application/json", headers=headers)

    @app.post("/models/{name}/invocations")
    async def invocations(name: str, request: Request) -> Response:
        """Score rows in MLflow's formats (JSON dataframe_split/records, instances, inputs; CSV)."""
        return await answer(name, request, v2=False)

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        """Open Inference Protocol v2: one named 1-d tensor per column in, one per output out."""
        return await answer(name, request, v2=True)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        is_ready, waiting = fleet.ready()
        return JSONResponse({"ready": is_ready, "waiting": waiting}, status_code=200 if is_ready else 503)

    @app.get("/models")
    async def models() -> dict[str, Any]:
        return {"models": fleet.describe()}

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.loaded.set(len(fleet.slots))
        metrics.switches.set(fleet.switches)
        metrics.logged.set(prediction_log.written)
        metrics.batches.set(batcher.batches)
        metrics.batched.set(batcher.requests)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/flush")
    async def flush(request: Request) -> dict[str, int]:
        """Write the queued prediction-log rows now (tests, and before reading the log)."""
        if request.client is None or request.client.host not in ("127.0.0.1", "::1"):
            raise RequestError(403, "only from this machine")
        return {"rows": await run_in_threadpool(prediction_log.flush)}

    return app
