"""The demo's streaming leg: the last day arrives on Kafka instead of as a file.

A local broker (KRaft) and schema registry start under the demo's home; the day's file,
written to ``<home>/outbox`` (not the landing zone), is sent to the transactions topic as Avro;
the bronze ingestion writes it into ``raw_transactions`` exactly once, dead-lettering what it
cannot use; the streaming scorer decides every transaction with the champion; the stream sensor
is asked, and requests the day, which then flows through validation, features and batch scores
like a file day. The leg ends by comparing the streamed decisions with the batch scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from mlops_assets.settings import Settings


@dataclass
class StreamLeg:
    """A local broker and registry, and what the leg did with them."""

    settings: Settings
    say: Callable[[str], None]
    broker: Any = None
    registry_server: Any = None
    kafka: Any = None
    registry: Any = None
    summary: dict[str, Any] = field(default_factory=dict)

    def start(self) -> bool:
        """Start the servers and prepare the topics; False (and why) when they cannot run."""
        from mlops_assets.resources.jvm import JavaServerError
        from mlops_assets.resources.kafka import KafkaCluster, SchemaRegistry
        from mlops_assets.stream.local_kafka import start_local_kafka
        from mlops_assets.stream.local_registry import start_local_registry
        from mlops_assets.stream.setup import setup_stream

        started = time.perf_counter()
        root = self.settings.home_path / "kafka"
        try:
            self.broker = start_local_kafka(root / "broker", self.settings.kafka_jars_dir)
            self.registry_server = start_local_registry(
                root / "registry", self.settings.schema_registry_dir
            )
        except JavaServerError as error:
            self.stop()
            self.say(f"  streaming leg skipped, the day arrives as a file: {error}")
            return False
        self.kafka = KafkaCluster(bootstrap_servers=self.broker.bootstrap_servers)
        self.registry = SchemaRegistry(url=self.registry_server.url)
        setup_stream(self.kafka, self.registry)
        self.say(
            f"    local Kafka broker {self.broker.bootstrap_servers} (KRaft) and schema "
            f"registry up {time.perf_counter() - started:10.1f}s"
        )
        return True

    def send(self, file_path: Path) -> int:
        """Send a delivered file to the topic; the messages sent."""
        from mlops_assets.resources.landing import LandingFile
        from mlops_assets.stream.producer import produce_records, typed_records
        from mlops_assets.stream.setup import transaction_codec

        started = time.perf_counter()
        codec = transaction_codec(self.registry)
        writer = codec.register(f"{self.kafka.transactions_topic}-value")
        content = file_path.read_bytes()
        file = LandingFile(str(file_path), file_path.name, len(content), 0)
        records = typed_records(file, content, self.settings.paysim_epoch, list(writer.fields))
        report = produce_records(
            self.kafka.producer(**{"linger.ms": 5}),
            self.kafka.transactions_topic,
            codec.encoder(writer),
            records,
            writer.schema_id,
        )
        unfit = f" ({len(report.skipped)} rows do not fit the schema: not sent)"
        self.say(
            f"    produced {report.sent:,} Avro messages{unfit if report.skipped else ''}"
            f" {time.perf_counter() - started:6.1f}s"
        )
        self.summary["sent"] = report.sent
        return report.sent

    def ingest(self, resources: dict[str, Any]) -> Any:
        from mlops_assets.stream.service import build_ingestion

        started = time.perf_counter()
        stats = build_ingestion(
            self.settings, {**resources, "kafka": self.kafka, "schema_registry": self.registry}
        ).run(stop_when_caught_up=True, idle_seconds=0.5)
        dead = sum(stats.dead_letters.values())
        self.say(
            f"    bronze ingestion: {stats.messages:,} messages in {stats.batches} Delta "
            f"commit(s) with their offsets, {dead} dead letter(s) "
            f"{time.perf_counter() - started:6.1f}s"
        )
        self.summary["dead_letters"] = dead
        return stats

    def score(self, resources: dict[str, Any]) -> Any:
        from mlops_assets.serve.stream_service import build_scorer

        started = time.perf_counter()
        scorer = build_scorer(
            self.settings, {**resources, "kafka": self.kafka, "schema_registry": self.registry}
        )
        if scorer.prediction_log is not None:
            scorer.prediction_log.start()
        scorer.run(stop_when_caught_up=True, idle_seconds=0.5)
        if scorer.prediction_log is not None:
            scorer.prediction_log.stop()
        self.say(
            f"    streaming scorer: {scorer.decided:,} decided by v{scorer.holder.current.version}"
            f", {scorer.rejected} rejected (contract) {time.perf_counter() - started:6.1f}s"
        )
        self.summary["decided"] = scorer.decided
        return scorer

    def request_day(self, instance: Any, resources: dict[str, Any], day: date) -> bool:
        """Ask the stream sensor (settled at once for the demo); whether it requests ``day``."""
        import dagster as dg

        from mlops_assets.ingest.stream_sensor import stream_sensor

        policy = resources["policy"].model_copy(update={"stream_settle_seconds": 0})
        result = stream_sensor(
            dg.build_sensor_context(instance=instance),
            lake=resources["lake"],
            kafka=self.kafka,
            policy=policy,
        )
        requested = [r.partition_key for r in getattr(result, "run_requests", None) or []]
        self.say(f"    stream sensor: requests raw_transactions for {', '.join(requested)}")
        return day.isoformat() in requested

    def compare(self, resources: dict[str, Any], day: date) -> str:
        """How the streamed decisions compare with the day's batch scores."""
        import polars as pl

        from mlops_assets.stream.setup import decision_codec
        from mlops_assets.tables import SCORED_TRANSACTIONS

        codec = decision_codec(self.registry)
        consumer = self.kafka.consumer("demo-decisions")
        consumer.subscribe([self.kafka.decisions_topic])
        decisions, deadline = [], time.monotonic() + 30
        while len(decisions) < self.summary.get("sent", 0) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                if message.error() is None:
                    decisions.append(codec.decode(message.value())[1])
        consumer.close()
        streamed = pl.DataFrame(decisions).filter(pl.col("decision") != "rejected")
        batch = pl.from_arrow(resources["lake"].read(SCORED_TRANSACTIONS, days=[day]))
        joined = streamed.join(batch, on="transaction_id")  # type: ignore[arg-type]
        gap = float((joined["fraud_score"] - joined["fraud_score_right"]).abs().max() or 0.0)
        self.summary["score_gap"] = gap
        line = (
            f"stream vs batch: {joined.height:,} transactions, largest score difference {gap:.1e}"
        )
        self.say(f"    {line}")
        return line

    def stop(self) -> None:
        for server in (self.registry_server, self.broker):
            if server is not None:
                server.stop()
