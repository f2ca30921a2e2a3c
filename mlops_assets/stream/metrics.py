"""Prometheus metrics of the bronze ingestion (served on ``MLOPS_STREAM_METRICS_PORT``)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from mlops_assets.stream.bronze_rows import MessageBatch

WRITE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class IngestMetrics:
    """Counters and gauges of one ingestion process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.messages = Counter(
            "mlops_stream_messages",
            "Messages written into bronze, by topic.",
            ["topic"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "mlops_stream_dead_letters",
            "Messages sent to the dead-letter topic, by kind (undecodable, contract, "
            "out_of_range).",
            ["kind"],
            registry=self.registry,
        )
        self.batches = Counter(
            "mlops_stream_batches", "Bronze commits (micro-batches).", registry=self.registry
        )
        self.write_seconds = Histogram(
            "mlops_stream_batch_seconds",
            "Time from a batch's last message to its bronze commit (read, dead letters, write).",
            buckets=WRITE_BUCKETS,
            registry=self.registry,
        )
        self.next_offset = Gauge(
            "mlops_stream_committed_offset",
            "Next offset to read of each partition, as committed with the bronze rows.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "mlops_stream_consumer_lag_messages",
            "Messages of each partition not yet in bronze: the partition's end (as last fetched) "
            "minus the next offset committed with the bronze rows.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.last_version = Gauge(
            "mlops_stream_bronze_version",
            "Delta version of the last bronze commit.",
            registry=self.registry,
        )
        self.failures = Counter(
            "mlops_stream_retries",
            "Retried failures, by step (reading, sending, the).",
            ["step"],
            registry=self.registry,
        )

    def written(self, batch: MessageBatch, version: int, seconds: float) -> None:
        self.batches.inc()
        self.write_seconds.observe(seconds)
        self.last_version.set(version)
        for (topic, partition), (_first, last, count) in batch.offsets.items():
            self.messages.labels(topic).inc(count)
            self.next_offset.labels(topic, str(partition)).set(last + 1)
        for kind, count in batch.dead_letters_by_kind.items():
            self.dead_letters.labels(kind).inc(count)

    def observe_lag(self, consumer: Any, committed: list[Any]) -> None:
        """The lag of the partitions just committed, from the end offsets the consumer last
        fetched (no broker round trip)."""
        for position in committed:
            try:
                _low, high = consumer.get_watermark_offsets(position, cached=True)
            except Exception:  # a partition revoked meanwhile: keep the last figure
                continue
            if high is not None and high >= 0:
                lag = max(high - position.offset, 0)
                self.lag.labels(position.topic, str(position.partition)).set(lag)

    def serve(self, port: int, host: str = "0.0.0.0") -> Any:
        """Serve ``/metrics`` on ``port`` from a background thread."""
        return start_http_server(port, addr=host, registry=self.registry)
