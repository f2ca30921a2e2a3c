"""The HTTP API of the online model service (FastAPI).

``POST /predict`` scores one transaction, ``POST /predict/batch`` a bounded list, with the
features computed by the batch feature SQL over the history snapshot and the champion's
threshold. ``/health``, ``/ready``, ``/model-info``, ``POST /reload`` and ``/metrics``
(Prometheus) operate it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool

from mlops_assets.serve.model_holder import LoadedModel, ModelHolder
from mlops_assets.serve.online_features import (
    ContractViolation,
    HistorySnapshot,
    OnlineFeatures,
    load_history,
    parse_transaction,
)

log = logging.getLogger(__name__)
_KNOWN_PATHS = {
    "/predict",
    "/predict/batch",
    "/health",
    "/ready",
    "/model-info",
    "/reload",
    "/metrics",
}


@dataclass(frozen=True)
class ServeConfig:
    """How the service runs (see ``create_app_from_settings`` for the settings they map to)."""

    model_name: str = "fraud_detector"
    model_alias: str = "champion"
    max_batch_size: int = 1000
    max_body_bytes: int = 1_000_000
    history_days: int = 2
    load_on_startup: bool = True


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlops_serve_requests",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlops_serve_request_latency_seconds",
            "Request latency by endpoint.",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.scores = Histogram(
            "mlops_serve_fraud_score",
            "Fraud scores returned.",
            buckets=tuple(np.round(np.linspace(0.05, 1.0, 20), 2)),
            registry=self.registry,
        )
        self.predictions = Counter(
            "mlops_serve_predictions",
            "Transactions scored, by decision.",
            ["decision"],
            registry=self.registry,
        )
        self.model_version = Gauge(
            "mlops_serve_model_version",
            "Version of the registered model being served (0: none loaded).",
            ["model_name", "alias"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "mlops_serve_reloads", "Model reloads by outcome.", ["outcome"], registry=self.registry
        )
        self.history_rows = Gauge(
            "mlops_serve_history_rows",
            "Rows in the account-history snapshot.",
            registry=self.registry,
        )


class ServiceState:
    """What the app holds: the model, the features over the history snapshot, the metrics."""

    def __init__(
        self,
        holder: ModelHolder,
        history_loader: Callable[[], HistorySnapshot],
        config: ServeConfig,
    ) -> None:
        self.holder = holder
        self.history_loader = history_loader
        self.features = OnlineFeatures()
        self.config = config
        self.metrics = _Metrics()
        self.metrics.model_version.labels(config.model_name, config.model_alias).set(0)
        self.history_error: str | None = None
        self.history_loaded = False
        self._history_lock = threading.Lock()

    def refresh_history(self) -> dict[str, Any]:
        with self._history_lock:
            try:
                snapshot = self.history_loader()
            except Exception as error:  # the old snapshot keeps serving
                self.history_error = f"{type(error).__name__}: {error}"
                log.exception("history snapshot failed to load")
                return {"ok": False, "error": self.history_error}
            self.features.replace_history(snapshot)
            self.history_error = None
            self.history_loaded = True
            self.metrics.history_rows.set(snapshot.rows)
            return {"ok": True, **self.history_info()}

    def history_info(self) -> dict[str, Any]:
        snapshot = self.features.history
        return {
            "days": [d.isoformat() for d in snapshot.days],
            "rows": snapshot.rows,
            "delta_version": snapshot.delta_version,
            "loaded_at": snapshot.loaded_at.isoformat(),
            "error": self.history_error,
        }

    def reload_model(self, force: bool = False) -> dict[str, Any]:
        outcome = self.holder.reload(force=force)
        self.metrics.reloads.labels("ok" if outcome.ok else "failed").inc()
        current = self.holder.current
        if current is not None:
            self.metrics.model_version.labels(self.config.model_name, self.config.model_alias).set(
                int(current.version)
            )
        return outcome.as_dict()

    def score(self, rows: list[dict[str, Any]]) -> tuple[LoadedModel, list[dict[str, Any]]]:
        loaded = self.holder.current  # this request keeps this model whatever reloads do
        if loaded is None:
            raise _NotReady
        features = self.features.compute(rows)
        raw = np.asarray(loaded.scorer(features))
        # decide as batch does: in the scorer's own dtype (float32 for the MLP)
        decisions = raw >= loaded.threshold
        scores = raw.astype(np.float64)
        predictions = []
        for transaction_id, row, score, decision in zip(
            features["transaction_id"], rows, scores, decisions, strict=True
        ):
            flagged = bool(decision)
            self.metrics.scores.observe(float(score))
            self.metrics.predictions.labels("fraud" if flagged else "legit").inc()
            predictions.append(
                {
                    "transaction_id": row.get("transaction_id") or transaction_id,
                    "fraud_score": float(score),
                    "is_fraud_predicted": flagged,
                }
            )
        return loaded, predictions


class _NotReady(Exception):
    pass


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": {"message": message, **extra}})


def create_app(
    holder: ModelHolder,
    history_loader: Callable[[], HistorySnapshot],
    config: ServeConfig | None = None,
) -> FastAPI:
    """The service over a model holder and a history loader (called at start and on reload)."""
    config = config or ServeConfig()
    state = ServiceState(holder, history_loader, config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if config.load_on_startup:
            await run_in_threadpool(state.refresh_history)
            await run_in_threadpool(state.reload_model)
        yield

    app = FastAPI(title="mlops_assets fraud scoring", lifespan=lifespan)
    app.state.service = state

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[..., Any]) -> Response:
        path = request.url.path
        endpoint = path if path in _KNOWN_PATHS else "other"
        started = time.perf_counter()
        length = request.headers.get("content-length")
        try:
            too_large = length is not None and int(length) > config.max_body_bytes
        except ValueError:
            too_large = False
            response: Response = _error(400, "invalid Content-Length")
        else:
            if too_large:
                response = _error(
                    413,
                    f"request body over {config.max_body_bytes} bytes",
                    limit=config.max_body_bytes,
                )
            else:
                try:
                    response = await call_next(request)
                except Exception:  # never let a request take the worker down
                    log.exception("unhandled error")
                    response = _error(500, "internal error")
        state.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        state.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    async def read_json(request: Request) -> Any:
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > config.max_body_bytes:
                raise _BodyTooLarge
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as error:
            raise ContractViolation("body", f"not valid JSON ({error})") from None

    async def handle(request: Request, batch: bool) -> JSONResponse:
        started = time.perf_counter()
        try:
            payload = await read_json(request)
            if batch:
                items = payload.get("transactions") if isinstance(payload, dict) else payload
                if not isinstance(items, list):
                    raise ContractViolation("transactions", "a JSON list of transactions")
                if not items:
                    raise ContractViolation("transactions", "at least one transaction")
                if len(items) > config.max_batch_size:
                    return _error(
                        413,
                        f"batch of {len(items)} transactions over the limit of "
                        f"{config.max_batch_size}",
                        field="transactions",
                        limit=config.max_batch_size,
                    )
                rows = [parse_transaction(item, i) for i, item in enumerate(items)]
            else:
                rows = [parse_transaction(payload)]
            loaded, predictions = await run_in_threadpool(state.score, rows)
        except _BodyTooLarge:
            return _error(413, f"request body over {config.max_body_bytes} bytes")
        except ContractViolation as violation:
            return JSONResponse(status_code=422, content={"detail": violation.detail()})
        except _NotReady:
            return _error(503, "no model loaded", error=state.holder.last_error)
        common = {
            "model_name": loaded.model.name,
            "model_version": int(loaded.version),
            "model_alias": loaded.model.alias,
            "threshold": loaded.threshold,
            "latency_ms": (time.perf_counter() - started) * 1000.0,
        }
        if batch:
            return JSONResponse({"predictions": predictions, "count": len(predictions), **common})
        return JSONResponse({**predictions[0], **common})

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        """Score one transaction (the validated shape; ``transaction_id`` optional)."""
        return await handle(request, batch=False)

    @app.post("/predict/batch")
    async def predict_batch(request: Request) -> JSONResponse:
        """Score ``{"transactions": [...]}`` (at most ``max_batch_size``)."""
        return await handle(request, batch=True)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> JSONResponse:
        current = state.holder.current
        body = {
            "ready": current is not None,
            "model_version": current.version if current else None,
            "history_loaded": state.history_loaded,
            "error": state.holder.last_error,
        }
        return JSONResponse(status_code=200 if current is not None else 503, content=body)

    @app.get("/model-info")
    def model_info() -> JSONResponse:
        current = state.holder.current
        if current is None:
            return _error(503, "no model loaded", error=state.holder.last_error)
        return JSONResponse(
            {
                **current.info(),
                "last_reload": state.holder.last_reload.as_dict()
                if state.holder.last_reload
                else None,
                "last_error": state.holder.last_error,
                "history": state.history_info(),
            }
        )

    @app.post("/reload")
    async def reload(force: bool = False, history: bool = True) -> JSONResponse:
        """Resolve the alias again and swap in its version (the old one serves until then and
        stays when the new one fails to load); refresh the history snapshot too."""
        history_outcome = await run_in_threadpool(state.refresh_history) if history else None
        model_outcome = await run_in_threadpool(state.reload_model, force)
        status = 200 if model_outcome["ok"] else 500
        return JSONResponse(
            status_code=status, content={"model": model_outcome, "history": history_outcome}
        )

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


class _BodyTooLarge(Exception):
    pass


def create_app_from_resources(
    lake: Any, mlflow_tracking: Any, config: ServeConfig | None = None
) -> FastAPI:
    """The service over the project's ``DeltaLake`` and ``MlflowTracking`` resources."""
    config = config or ServeConfig()
    holder = ModelHolder(mlflow_tracking.client, config.model_name, config.model_alias)
    return create_app(holder, lambda: load_history(lake, config.history_days), config)


def create_app_from_settings(settings: Any = None, **overrides: Any) -> FastAPI:
    """The service for the platform settings (``MLOPS_*``), as ``mlops-assets serve`` runs it."""
    from mlops_assets.environment import build_resources
    from mlops_assets.settings import Settings

    settings = settings or Settings()
    resources = build_resources(settings)
    values = {
        "model_name": settings.model_name,
        "model_alias": settings.model_alias,
        "max_batch_size": settings.serve_max_batch_size,
        "max_body_bytes": settings.serve_max_body_bytes,
        "history_days": settings.serve_history_days,
    }
    config = ServeConfig(**{**values, **overrides})
    return create_app_from_resources(resources["lake"], resources["mlflow_tracking"], config)
