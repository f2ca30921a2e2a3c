"""Prometheus metrics of the streaming scorer (served on ``MLOPS_STREAM_METRICS_PORT``)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

#: decision latency buckets, seconds: fine around the 50 ms a decision should take
DECISION_BUCKETS = (
    0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
)  # fmt: skip


class ScorerMetrics:
    """Counters and gauges of one streaming scorer."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.decisions = Counter(
            "mlops_stream_decisions",
            "Decisions sent, by decision (flagged, cleared, rejected).",
            ["decision"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlops_stream_decision_latency_seconds",
            "From a transaction's message time (when it was produced) to its decision.",
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        )
        self.passes = Counter(
            "mlops_stream_scoring_passes", "Scoring passes.", registry=self.registry
        )
        self.held = Gauge(
            "mlops_stream_held_transactions",
            "Transactions waiting for the other partitions to reach their time.",
            registry=self.registry,
        )
        self.history_rows = Gauge(
            "mlops_stream_history_rows",
            "Rows in the rolling account history.",
            registry=self.registry,
        )
        self.model_version = Gauge(
            "mlops_stream_model_version",
            "Version of the registered model scoring the stream (0: none).",
            registry=self.registry,
        )

    def scored(
        self, pending: list[Any], decisions: np.ndarray, model: Any, _finished: float
    ) -> None:
        now_ms = time.time() * 1000.0
        self.passes.inc()
        flagged = int(np.count_nonzero(decisions))
        self.decisions.labels("flagged").inc(flagged)
        self.decisions.labels("cleared").inc(len(pending) - flagged)
        for item in pending:
            if item.message.timestamp_ms is not None:
                self.latency.observe(max(0.0, now_ms - item.message.timestamp_ms) / 1000.0)
        self.model_version.set(int(model.version))

    def serve(self, port: int, host: str = "0.0.0.0") -> Any:
        return start_http_server(port, addr=host, registry=self.registry)
