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
        self.in_scorer = Histogram(
            "mlops_stream_scoring_seconds",
            "From a transaction read by the scorer to its decision (waiting for the other "
            "partitions, its pass).",
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        )
        self.pass_seconds = Histogram(
            "mlops_stream_pass_seconds",
            "Time of one scoring pass (features, model, decisions sent).",
            buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 1),
            registry=self.registry,
        )
        self.pass_rows = Histogram(
            "mlops_stream_pass_transactions",
            "Transactions decided together in one scoring pass.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 512, 2048, 5000),
            registry=self.registry,
        )
        self.model_version = Gauge(
            "mlops_stream_model_version",
            "Version of the registered model scoring the stream (0: none).",
            registry=self.registry,
        )

    def scored(
        self, pending: list[Any], decisions: np.ndarray, model: Any, finished: float
    ) -> None:
        now_ms = time.time() * 1000.0
        self.passes.inc()
        self.pass_rows.observe(len(pending))
        for item in pending:
            self.in_scorer.observe(max(0.0, finished - item.received))
        flagged = int(np.count_nonzero(decisions))
        self.decisions.labels("flagged").inc(flagged)
        self.decisions.labels("cleared").inc(len(pending) - flagged)
        for item in pending:
            if item.message.timestamp_ms is not None:
                self.latency.observe(max(0.0, now_ms - item.message.timestamp_ms) / 1000.0)
        self.model_version.set(int(model.version))

    def summary(self) -> str:
        """Where a decision's time went (quantiles from the histograms' buckets)."""
        parts = []
        for name, histogram in (
            ("message -> decision", self.latency),
            ("read -> decision", self.in_scorer),
            ("pass seconds", self.pass_seconds),
            ("transactions per pass", self.pass_rows),
        ):
            parts.append(
                f"{name} p50 {_quantile(histogram, 0.5):g} p99 {_quantile(histogram, 0.99):g}"
            )
        return "; ".join(parts)

    def serve(self, port: int, host: str = "0.0.0.0") -> Any:
        return start_http_server(port, addr=host, registry=self.registry)


def _quantile(histogram: Histogram, q: float) -> float:
    """The upper bound of the bucket holding quantile ``q`` (0 when empty)."""
    buckets = [
        (float(sample.labels["le"]), sample.value)
        for metric in histogram.collect()
        for sample in metric.samples
        if sample.name.endswith("_bucket")
    ]
    total = buckets[-1][1] if buckets else 0
    for bound, count in buckets:
        if total and count >= q * total:
            return bound
    return 0.0
