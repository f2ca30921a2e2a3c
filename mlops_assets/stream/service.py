"""The streaming processes as the settings describe them: the bronze ingestion (``mlops-assets
consume``) built from the same resources as the Dagster code location, with logging, signals
and its metrics endpoint."""

from __future__ import annotations

import logging
import signal
from typing import Any

from mlops_assets.settings import Settings


def configure_logging(level: int = logging.INFO) -> None:
    """The platform's own lines at ``level`` in ``MLOPS_LOG_FORMAT``; the clients' HTTP and
    librdkafka chatter only from warnings up."""
    from mlops_assets import logs

    logs.configure_logging(level, Settings().log_format)


def stop_on_signals(stop: Any) -> None:
    """Call ``stop()`` on SIGTERM and SIGINT (a Deployment's rollout, Ctrl-C)."""
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop())


def build_ingestion(settings: Settings, resources: dict[str, Any] | None = None) -> Any:
    """The bronze ingestion of the settings' topic into the settings' lake."""
    from mlops_assets.environment import build_resources
    from mlops_assets.stream.bronze_writer import BronzeWriter
    from mlops_assets.stream.dead_letters import DeadLetterProducer
    from mlops_assets.stream.ingest import BronzeIngestion
    from mlops_assets.stream.metrics import IngestMetrics
    from mlops_assets.stream.setup import transaction_codec

    resources = resources or build_resources(settings)
    kafka = resources["kafka"]
    return BronzeIngestion(
        consumer_factory=lambda: kafka.consumer(
            kafka.ingest_group, instance_id=settings.kafka_group_instance_id
        ),
        codec=transaction_codec(resources["schema_registry"]),
        writer=BronzeWriter(
            resources["lake"], compact_every=settings.stream_compact_every, group=kafka.ingest_group
        ),
        dead_letters=DeadLetterProducer(kafka.producer(), kafka.dead_letter_topic),
        topic=kafka.transactions_topic,
        first_day=settings.partitions_start,
        batch_rows=settings.stream_batch_rows,
        batch_seconds=settings.stream_batch_seconds,
        metrics=IngestMetrics(),
    )


def run_ingestion(
    settings: Settings, until_caught_up: bool = False, idle_seconds: float = 2.0
) -> Any:
    """Run the bronze ingestion until stopped (or caught up); its statistics."""
    ingestion = build_ingestion(settings)
    stop_on_signals(ingestion.stop)
    if settings.stream_metrics_port and ingestion.metrics is not None:
        ingestion.metrics.serve(settings.stream_metrics_port)
    return ingestion.run(stop_when_caught_up=until_caught_up, idle_seconds=idle_seconds)
