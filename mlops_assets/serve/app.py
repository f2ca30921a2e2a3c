"""The HTTP API of the online model service (FastAPI).

``POST /predict`` scores one transaction, ``POST /predict/batch`` a bounded list, with the
features computed from the one feature definition over the history snapshot (in process,
``features/online_engine.py``) and the champion's threshold. ``/health``, ``/ready``,
``/model-info``, ``POST /reload`` and ``/metrics`` (Prometheus) operate it.

Requests are scored by one scoring thread in passes (``scoring.py``); every prediction is
appended to the ``served_predictions`` Delta table in micro-batches (``prediction_log.py``); in
shadow mode the challenger scores the same rows off the request path (``shadow.py``); a thread
polls the alias and the validated table every ``refresh_seconds`` (``refresh.py``).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from mlops_assets.features.online_engine import prepare as prepare_online_features
from mlops_assets.serve.access import AccessControl, RateLimits
from mlops_assets.serve.auth import Authenticator, authenticator_from_settings
from mlops_assets.serve.canary import CanarySlo
from mlops_assets.serve.canary_control import CanaryController, CanaryRecorder, RegistryRecorder
from mlops_assets.serve.explain import explain_requested
from mlops_assets.serve.model_holder import ModelHolder
from mlops_assets.serve.observe import ObserveRequests, error_response
from mlops_assets.serve.online_features import (
    ContractViolation,
    HistorySnapshot,
    OnlineFeatures,
    load_history,
    parse_transaction,
    request_ids,
)
from mlops_assets.serve.prediction_log import PredictionLog, ServedRecord
from mlops_assets.serve.refresh import PeriodicRefresh
from mlops_assets.serve.scoring import NotReady, ScoredPass, ScoringWorker
from mlops_assets.serve.service_metrics import ServiceMetrics
from mlops_assets.serve.shadow import ShadowScorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    """How the service runs (see ``create_app_from_settings`` for the settings they map to)."""

    model_name: str = "fraud_detector"
    model_alias: str = "champion"
    max_batch_size: int = 1000
    max_body_bytes: int = 1_000_000
    history_days: int = 2
    load_on_startup: bool = True
    refresh_seconds: float = 60.0  # 0: no polling (POST /reload only)
    log_flush_rows: int = 5000
    log_flush_seconds: float = 5.0
    log_max_pending_rows: int = 100_000
    log_compact_every: int = 50
    shadow: bool = False
    shadow_alias: str = "challenger"
    canary: bool = True  # route a share of accounts to the canary alias while it exists
    canary_alias: str = "canary"
    canary_share: float = 0.05  # when the canary version carries no canary.share tag
    canary_slo: CanarySlo = field(default_factory=CanarySlo)
    canary_judge_seconds: float = 0.25
    runtime: str = "native"  # native | onnx: what the holders' loaders score with
    # threads per model call: a pass holds a few rows, and a team of OpenMP (or onnxruntime)
    # threads on cores that another process holds turns a 0.6 ms one-row prediction into
    # 40-80 ms at p99 (measured with a busy machine; one thread: p99 about 5 ms, and faster for
    # batches of 100 too)
    model_threads: int = 1
    explain_method: str = "treeshap"  # XGBoost's explanations: treeshap | saabas
    rate_limit: str | None = None  # per client, e.g. "300/second" (None: no limit)
    failed_auth_limit: str = "30/minute"  # per address, requests with bad credentials
    request_timeout_seconds: float = 10.0  # longest wait for a scoring pass (503 beyond)


class ServiceState:
    """What the app holds: the model(s), the features over the history snapshot, the scoring
    thread, the prediction log, the shadow scorer and the metrics."""

    def __init__(
        self,
        holder: ModelHolder,
        history_loader: Callable[[], HistorySnapshot],
        config: ServeConfig,
        history_version: Callable[[], int | None] | None = None,
        log_writer: Callable[[pa.Table], int | None] | None = None,
        shadow_holder: ModelHolder | None = None,
        canary_holder: ModelHolder | None = None,
        canary_recorder: CanaryRecorder | None = None,
    ) -> None:
        self.holder = holder
        self.history_loader = history_loader
        self.history_version = history_version
        self.features = OnlineFeatures()
        self.config = config
        self.metrics = ServiceMetrics()
        self.metrics.model_version.labels(config.model_name, config.model_alias).set(0)
        self.metrics.model_loaded.labels(config.model_name, config.model_alias).set_function(
            lambda: 1.0 if self.holder.current is not None else 0.0
        )
        self.history_error: str | None = None
        self.history_loaded = False
        self._history_lock = threading.Lock()
        metrics = self.metrics
        self.log = (
            PredictionLog(
                log_writer,
                flush_rows=config.log_flush_rows,
                flush_seconds=config.log_flush_seconds,
                max_pending_rows=config.log_max_pending_rows,
                on_written=lambda rows: metrics.logged.labels("written").inc(rows),
                on_dropped=lambda rows: metrics.logged.labels("dropped").inc(rows),
            )
            if log_writer is not None
            else None
        )
        metrics.log_pending.set_function(lambda: self.log.pending_rows if self.log else 0)
        self.shadow_holder = shadow_holder if config.shadow else None
        self.shadow = (
            ShadowScorer(
                self.shadow_holder,
                self._to_log,
                on_compared=self._shadow_compared,
                on_skipped=lambda rows: metrics.shadow_rows.labels("skipped").inc(rows),
            )
            if self.shadow_holder is not None
            else None
        )
        if self.shadow_holder is not None:
            metrics.model_version.labels(config.model_name, config.shadow_alias).set(0)
        self.canary = (
            CanaryController(
                canary_holder,
                holder,
                config.canary_slo,
                config.canary_share,
                recorder=canary_recorder,
                judge_seconds=config.canary_judge_seconds,
                on_rollback=lambda version, rule: metrics.canary_rollbacks.labels(
                    version, rule
                ).inc(),
                on_rows=lambda outcome, rows: metrics.canary_rows.labels(outcome).inc(rows),
            )
            if config.canary and canary_holder is not None
            else None
        )
        if self.canary is not None:
            canary = self.canary
            metrics.model_version.labels(config.model_name, config.canary_alias).set_function(
                lambda: float(canary.route.model.version) if canary.route else 0.0
            )
            metrics.canary_share.set_function(lambda: canary.route.share if canary.route else 0.0)
        self.worker = ScoringWorker(
            holder,
            self.features,
            max_rows=config.max_batch_size,
            on_scored=self._on_scored,
            canary=self.canary,
        )
        self.refresher = (
            PeriodicRefresh(self.poll, config.refresh_seconds)
            if config.refresh_seconds > 0
            else None
        )

    # --- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        prepare_online_features()
        self.worker.start()
        if self.config.load_on_startup:
            self.refresh_history()
            self.reload_model()
        # what is loaded now lives as long as the service: out of the garbage collector's
        # sight, a full collection no longer walks the libraries, model and history (a
        # stall of tens of milliseconds on a request when it ran)
        gc.freeze()
        if self.log is not None:
            self.log.start()
        if self.shadow is not None:
            self.shadow.start()
        if self.canary is not None:
            self.canary.start()
        if self.refresher is not None:
            self.refresher.start()

    def stop(self) -> None:
        """Stop polling, score what is queued, let the shadow finish, write the log."""
        if self.refresher is not None:
            self.refresher.stop()
        if self.canary is not None:
            self.canary.stop()
        self.worker.stop()
        if self.shadow is not None:
            self.shadow.stop()
        if self.log is not None:
            self.log.stop()

    # --- scored requests go to the shadow, then the log -----------------------------------
    def _on_scored(self, scored: ScoredPass) -> None:
        self.metrics.pass_requests.observe(len(scored.sizes))
        if self.shadow is not None:
            self.shadow.submit(scored)
        else:
            self._to_log([ServedRecord(scored)])

    def _to_log(self, records: list[ServedRecord]) -> None:
        if self.log is not None:
            self.log.add(records)

    def _shadow_compared(self, rows: int, disagreements: int) -> None:
        self.metrics.shadow_rows.labels("compared").inc(rows)
        self.metrics.shadow_disagreements.inc(disagreements)

    # --- history and models ---------------------------------------------------------------
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
        if outcome.changed:
            was = f" (was v{outcome.previous_version})" if outcome.previous_version else ""
            log.info("serving %s v%s%s", self.holder.name, outcome.version, was)
        elif not outcome.ok:
            serving = (
                f"v{current.version} keeps serving" if current is not None else "nothing is serving"
            )
            log.error(
                "reload of %s@%s failed, %s: %s",
                self.holder.name,
                self.holder.alias,
                serving,
                outcome.error,
            )
        result = outcome.as_dict()
        if self.shadow_holder is not None:
            result["shadow"] = self.reload_shadow(force)
        if self.canary is not None:
            result["canary"] = self.canary.reload(force)
        return result

    def reload_shadow(self, force: bool = False) -> dict[str, Any]:
        assert self.shadow_holder is not None
        outcome = self.shadow_holder.reload(force=force)
        current = self.shadow_holder.current
        if current is not None:
            self.metrics.model_version.labels(self.config.model_name, self.config.shadow_alias).set(
                int(current.version)
            )
        if outcome.changed:
            log.info(
                "shadow %s@%s is v%s",
                self.shadow_holder.name,
                self.shadow_holder.alias,
                outcome.version,
            )
        return outcome.as_dict()

    def poll(self) -> None:
        """One scheduled round: a newer validated table refreshes the history snapshot, and a
        moved alias swaps the model (both cheap when nothing changed)."""
        if self.history_version is not None:
            version = self.history_version()
            if version is not None and version != self.features.history.delta_version:
                outcome = self.refresh_history()
                log.info("history snapshot refreshed to Delta version %s: %s", version, outcome)
        self.reload_model()

    def info(self) -> dict[str, Any]:
        """What /model-info adds about the shadow and the prediction log."""
        shadow = None
        if self.shadow_holder is not None:
            current = self.shadow_holder.current
            shadow = {
                "alias": self.shadow_holder.alias,
                "version": current.version if current else None,
                "error": self.shadow_holder.last_error,
                "compared_rows": self.shadow.compared_rows if self.shadow else 0,
                "skipped_rows": self.shadow.skipped_rows if self.shadow else 0,
            }
        prediction_log = None
        if self.log is not None:
            prediction_log = {
                "written_rows": self.log.written_rows,
                "pending_rows": self.log.pending_rows,
                "dropped_rows": self.log.dropped_rows,
                "last_version": self.log.last_version,
                "last_error": self.log.last_error,
            }
        canary = self.canary.info() if self.canary is not None else None
        return {"shadow": shadow, "canary": canary, "prediction_log": prediction_log}


def create_app(
    holder: ModelHolder,
    history_loader: Callable[[], HistorySnapshot],
    config: ServeConfig | None = None,
    history_version: Callable[[], int | None] | None = None,
    log_writer: Callable[[pa.Table], int | None] | None = None,
    shadow_holder: ModelHolder | None = None,
    canary_holder: ModelHolder | None = None,
    canary_recorder: CanaryRecorder | None = None,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """The service over a model holder and a history loader (called at start, on reload and
    when ``history_version`` moves); ``log_writer`` appends the prediction log's micro-batches
    (none: no log); ``shadow_holder`` holds the shadow model when ``config.shadow`` is on;
    ``canary_holder`` the canary when ``config.canary`` is on, whose outcomes go to
    ``canary_recorder``; ``authenticator`` decides who may call what (None: anyone, logged as
    a warning)."""
    config = config or ServeConfig()
    state = ServiceState(
        holder,
        history_loader,
        config,
        history_version,
        log_writer,
        shadow_holder,
        canary_holder,
        canary_recorder,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(state.start)
        try:
            yield
        finally:
            await run_in_threadpool(state.stop)

    app = FastAPI(title="mlops_assets fraud scoring", lifespan=lifespan)
    app.state.service = state

    if authenticator is None:
        log.warning(
            "authentication is off: anyone who can reach the service may score, reload the "
            "model and read its lineage"
        )
    limits = (
        RateLimits(config.rate_limit, config.failed_auth_limit)
        if config.rate_limit or authenticator is not None
        else None
    )
    # the last added runs first: requests are observed (counted, logged), then let in or not
    app.add_middleware(AccessControl, authenticator=authenticator, limits=limits)
    app.add_middleware(ObserveRequests, metrics=state.metrics, max_body_bytes=config.max_body_bytes)

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
            explain = explain_requested(request.query_params)
            payload = await read_json(request)
            if batch:
                items = payload.get("transactions") if isinstance(payload, dict) else payload
                if not isinstance(items, list):
                    raise ContractViolation("transactions", "a JSON list of transactions")
                if not items:
                    raise ContractViolation("transactions", "at least one transaction")
                if len(items) > config.max_batch_size:
                    return error_response(
                        413,
                        f"batch of {len(items)} transactions over the limit of "
                        f"{config.max_batch_size}",
                        field="transactions",
                        limit=config.max_batch_size,
                    )
                rows = [parse_transaction(item, i) for i, item in enumerate(items)]
            else:
                rows = [parse_transaction(payload)]
            for row, transaction_id in zip(rows, request_ids(rows), strict=True):
                row["transaction_id"] = transaction_id
            # shielded: a request that stops waiting leaves its pass to finish (and be logged)
            scored = await asyncio.wait_for(
                asyncio.shield(
                    asyncio.wrap_future(
                        state.worker.submit(rows, "predict/batch" if batch else "predict", explain)
                    )
                ),
                config.request_timeout_seconds,
            )
        except _BodyTooLarge:
            return error_response(413, f"request body over {config.max_body_bytes} bytes")
        except ContractViolation as violation:
            return JSONResponse(status_code=422, content={"detail": violation.detail()})
        except NotReady:
            return error_response(503, "no model loaded", error=state.holder.last_error)
        except TimeoutError:
            response = error_response(
                503,
                f"scoring did not finish within {config.request_timeout_seconds:g} s; retry",
                timeout_seconds=config.request_timeout_seconds,
            )
            response.headers["Retry-After"] = "1"
            return response
        predictions = scored.predictions()
        if explain:  # computed in the scoring pass, by each row's deciding model
            explanations = scored.explanations or [None] * len(predictions)
            for prediction, explanation in zip(predictions, explanations, strict=True):
                prediction["explanation"] = explanation
                if scored.explain_error is not None:
                    prediction["explanation_error"] = scored.explain_error
        for prediction in predictions:
            state.metrics.scores.observe(prediction["fraud_score"])
            state.metrics.predictions.labels(
                "fraud" if prediction["is_fraud_predicted"] else "legit"
            ).inc()
        loaded = scored.model
        request.state.transactions = len(predictions)
        if batch:  # each prediction names its version; the champion's is the batch's
            request.state.model_version = int(loaded.version)
            common = {
                "model_name": loaded.model.name,
                "model_version": int(loaded.version),
                "model_alias": loaded.model.alias,
                "threshold": loaded.threshold,
                "latency_ms": (time.perf_counter() - started) * 1000.0,
            }
            return JSONResponse({"predictions": predictions, "count": len(predictions), **common})
        request.state.model_version = predictions[0]["model_version"]
        latency_ms = (time.perf_counter() - started) * 1000.0
        return JSONResponse(
            {**predictions[0], "model_name": loaded.model.name, "latency_ms": latency_ms}
        )

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
            return error_response(503, "no model loaded", error=state.holder.last_error)
        return JSONResponse(
            {
                **current.info(),
                "runtime": getattr(current.scorer, "runtime", config.runtime),
                "last_reload": state.holder.last_reload.as_dict()
                if state.holder.last_reload
                else None,
                "last_error": state.holder.last_error,
                "history": state.history_info(),
                **state.info(),
            }
        )

    @app.post("/reload")
    async def reload(force: bool = False, history: bool = True) -> JSONResponse:
        """Resolve the alias again and swap in its version (the old one serves until then and
        stays when the new one fails to load); refresh the history snapshot too."""
        history_outcome = await run_in_threadpool(state.refresh_history) if history else None
        model_outcome = await run_in_threadpool(state.reload_model, force)
        content: dict[str, Any] = {"model": model_outcome, "history": history_outcome}
        if model_outcome["ok"]:
            return JSONResponse(content)
        # the alias could not be loaded: a state of the registry, not a fault of the service
        current = state.holder.current
        alias = f"{state.holder.name}@{state.holder.alias}"
        if current is None:  # nothing to serve: unavailable until the alias can be loaded
            message = f"{alias} could not be loaded and no model is serving"
            return JSONResponse(status_code=503, content={**content, "message": message})
        message = f"{alias} could not be loaded; v{current.version} keeps serving"
        return JSONResponse(status_code=409, content={**content, "message": message})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


class _BodyTooLarge(Exception):
    pass


def create_app_from_resources(
    lake: Any,
    mlflow_tracking: Any,
    config: ServeConfig | None = None,
    log_predictions: bool = True,
    log_lake: Any = None,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """The service over the project's ``DeltaLake`` and ``MlflowTracking`` resources: the
    history from ``validated_transactions``, the prediction log in ``served_predictions`` (of
    ``log_lake`` when given, else of ``lake``)."""
    from mlops_assets.registry.champion import load_scorer
    from mlops_assets.tables import SERVED_PREDICTIONS, VALIDATED_TRANSACTIONS

    config = config or ServeConfig()
    loader = functools.partial(
        load_scorer,
        threads=config.model_threads,
        runtime=config.runtime,
        explain_method=config.explain_method,
    )
    holder = ModelHolder(mlflow_tracking.client, config.model_name, config.model_alias, loader)
    shadow = ModelHolder(mlflow_tracking.client, config.model_name, config.shadow_alias, loader)
    canary = ModelHolder(mlflow_tracking.client, config.model_name, config.canary_alias, loader)
    log_target = log_lake or lake
    return create_app(
        holder,
        lambda: load_history(lake, config.history_days),
        config,
        history_version=lambda: lake.version(VALIDATED_TRANSACTIONS),
        log_writer=log_target.appender(SERVED_PREDICTIONS, config.log_compact_every)
        if log_predictions
        else None,
        shadow_holder=shadow if config.shadow else None,
        canary_holder=canary if config.canary else None,
        canary_recorder=RegistryRecorder(mlflow_tracking.client),
        authenticator=authenticator,
    )


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
        "refresh_seconds": settings.serve_refresh_seconds,
        "log_flush_rows": settings.serve_log_flush_rows,
        "log_flush_seconds": settings.serve_log_flush_seconds,
        "log_max_pending_rows": settings.serve_log_max_pending_rows,
        "log_compact_every": settings.serve_log_compact_every,
        "shadow": settings.serve_shadow,
        "shadow_alias": settings.serve_shadow_alias,
        "canary": settings.serve_canary,
        "canary_alias": settings.serve_canary_alias,
        "canary_share": settings.serve_canary_share,
        "canary_slo": settings.canary_slo(),
        "runtime": settings.serve_runtime,
        "explain_method": settings.explain_method,
        "rate_limit": settings.serve_rate_limit or None,
        "failed_auth_limit": settings.serve_failed_auth_limit,
        "request_timeout_seconds": settings.serve_request_timeout_seconds,
    }
    config = ServeConfig(**{**values, **overrides})
    return create_app_from_resources(
        resources["lake"],
        resources["mlflow_tracking"],
        config,
        log_predictions=settings.serve_log_predictions,
        authenticator=authenticator_from_settings(settings),
    )
