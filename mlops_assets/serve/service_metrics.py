"""The model service's Prometheus metrics (``/metrics``): requests by endpoint and status,
latency, scores and decisions, the model versions served, reloads, the history, the prediction
log and shadow mode. Their names are what the alert rules and dashboards in
``deploy/monitoring/`` query."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Request latency buckets, seconds: fine around the 25 ms a single prediction should take.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.25, 0.5, 1, 2.5, 5, 10,
)  # fmt: skip


class ServiceMetrics:
    """The service's Prometheus metrics, in a registry of its own (one per app)."""

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
            buckets=LATENCY_BUCKETS,
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
        self.model_loaded = Gauge(
            "mlops_serve_model_loaded",
            "1 while a model answers requests for the alias (0: every prediction is refused).",
            ["model_name", "alias"],
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
        self.logged = Counter(
            "mlops_serve_prediction_log_rows",
            "Predictions handled by the prediction log, by outcome (written, dropped).",
            ["outcome"],
            registry=self.registry,
        )
        self.log_pending = Gauge(
            "mlops_serve_prediction_log_pending_rows",
            "Predictions waiting for the next micro-batch write.",
            registry=self.registry,
        )
        self.shadow_rows = Counter(
            "mlops_serve_shadow_rows",
            "Rows the shadow model scored (compared) or could not score (skipped).",
            ["outcome"],
            registry=self.registry,
        )
        self.shadow_disagreements = Counter(
            "mlops_serve_shadow_disagreements",
            "Rows where the shadow model's decision differs from the served one.",
            registry=self.registry,
        )
        self.canary_share = Gauge(
            "mlops_serve_canary_share",
            "Share of origin accounts routed to the canary (0: no canary in traffic).",
            registry=self.registry,
        )
        self.canary_rows = Counter(
            "mlops_serve_canary_rows",
            "Rows routed to the canary, by outcome (served by it, or fallback: its call failed "
            "and the champion's scores were served).",
            ["outcome"],
            registry=self.registry,
        )
        self.canary_rollbacks = Counter(
            "mlops_serve_canary_rollbacks",
            "Canaries taken out of traffic for a broken SLO, by version and rule.",
            ["version", "rule"],
            registry=self.registry,
        )
        self.pass_requests = Histogram(
            "mlops_serve_scoring_pass_requests",
            "Requests scored together in one pass of the scoring thread.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
