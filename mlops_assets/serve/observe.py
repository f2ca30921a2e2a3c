"""What the model service sees of every request, as pure ASGI middleware: a request id, the
body limit, unhandled errors turned into a JSON 500, the metrics, and one log line.

Every request gets an id: the caller's ``X-Request-ID`` when it is a sane token (at most 128
letters, digits, ``.``, ``_``, ``-``), else a new one; it is sent back in ``X-Request-ID`` and
named by the request's log line (``request_id``, endpoint, status, ``latency_ms``, and the
``model_version`` and transaction count the endpoint recorded in the request's state). With
``MLOPS_LOG_FORMAT=json`` that line is one JSON object.

Pure ASGI rather than ``@app.middleware("http")``, whose per-request overhead is a measurable
share of a single prediction.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from fastapi.responses import JSONResponse

from mlops_assets.serve.service_metrics import ServiceMetrics

log = logging.getLogger("mlops_assets.serve.requests")
_errors = logging.getLogger(__name__)

KNOWN_PATHS = frozenset(
    {"/predict", "/predict/batch", "/health", "/ready", "/model-info", "/reload", "/metrics"}
)
#: paths answered without a log line (probes and scrapes, several a second)
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    """The service's error body: ``{"detail": {"message": ..., **extra}}``."""
    return JSONResponse(status_code=status, content={"detail": {"message": message, **extra}})


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-ID`` if it is a sane token, else a new random id."""
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class ObserveRequests:
    """ASGI middleware (see the module doc)."""

    def __init__(self, app: Any, metrics: ServiceMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in KNOWN_PATHS else "other"
        started = time.perf_counter()
        status = 500
        response_started = False
        request_id = request_id_of(scope["headers"])
        request_state = scope.setdefault("state", {})
        request_state["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("ascii"))

        async def observed_send(message: Any) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, observed_send)
            else:
                await self.app(scope, receive, observed_send)
        except Exception:  # never let a request take the worker down
            _errors.exception("unhandled error on %s (request %s)", path, request_id)
            if response_started:
                raise
            await error_response(500, "internal error", request_id=request_id)(
                scope, receive, observed_send
            )
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(elapsed)
            if endpoint not in QUIET_PATHS and log.isEnabledFor(logging.INFO):
                self._log(scope["method"], endpoint, status, elapsed, request_state)

    @staticmethod
    def _log(
        method: str, endpoint: str, status: int, elapsed: float, request_state: dict[str, Any]
    ) -> None:
        extra = {
            "request_id": request_state.get("request_id"),
            "endpoint": endpoint,
            "status": status,
            "latency_ms": round(elapsed * 1000.0, 3),
        }
        for key in ("model_version", "transactions"):
            if request_state.get(key) is not None:
                extra[key] = request_state[key]
        log.info("%s %s %d", method, endpoint, status, extra=extra)

    def _refusal(self, scope: Any) -> JSONResponse | None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return error_response(400, "invalid Content-Length")
                if length > self.max_body_bytes:
                    return error_response(
                        413,
                        f"request body over {self.max_body_bytes} bytes",
                        limit=self.max_body_bytes,
                    )
        return None
