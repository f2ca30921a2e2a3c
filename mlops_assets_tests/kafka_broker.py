"""A real Kafka broker (KRaft, one node) and a real Confluent-compatible schema registry for
tests, one of each per session, on loopback; each test gets topics of its own.

Both are the project's local servers (``stream/local_kafka.py``, ``stream/local_registry.py``):
Kafka's own server jars and Apicurio Registry, from the caches ``scripts/_bootstrap.sh`` fills
(``mlops-assets fetch-kafka-jars``, ``fetch-schema-registry``). When a cache is empty the
fixture fills it (Maven), and fails, saying how, when that cannot work: a skipped streaming
test would be a silent hole.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from mlops_assets.resources.kafka import KafkaCluster, SchemaRegistry
from mlops_assets.settings import Settings
from mlops_assets.stream.local_kafka import LocalKafka, fetch_kafka_jars, start_local_kafka
from mlops_assets.stream.local_registry import (
    LocalRegistry,
    fetch_schema_registry,
    start_local_registry,
)
from mlops_assets.stream.setup import StreamSetup, setup_stream

_TOPICS = itertools.count(1)


@dataclass(frozen=True)
class StreamWorld:
    """A test's own topics on the session's broker and registry."""

    kafka: KafkaCluster
    registry: SchemaRegistry
    setup: StreamSetup
    broker: LocalKafka
    registry_server: LocalRegistry

    def env(self) -> dict[str, str]:
        """The settings (environment) a subprocess needs to use these topics."""
        return {
            "MLOPS_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "MLOPS_KAFKA_TRANSACTIONS_TOPIC": self.kafka.transactions_topic,
            "MLOPS_KAFKA_DEAD_LETTER_TOPIC": self.kafka.dead_letter_topic,
            "MLOPS_KAFKA_DECISIONS_TOPIC": self.kafka.decisions_topic,
            "MLOPS_KAFKA_INGEST_GROUP": self.kafka.ingest_group,
            "MLOPS_KAFKA_SCORER_GROUP": self.kafka.scorer_group,
            "MLOPS_SCHEMA_REGISTRY_URL": self.registry.url,
        }

    def read_all(self, topic: str, timeout: float = 20.0) -> list[Any]:
        """Every message of ``topic`` now (read with a consumer group of its own)."""
        from confluent_kafka import TopicPartition

        consumer = self.kafka.consumer(f"reader-{next(_TOPICS)}")
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            ends = {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions
            }
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            messages: list[Any] = []
            wanted = sum(ends.values())
            deadline = time.monotonic() + timeout
            while len(messages) < wanted and time.monotonic() < deadline:
                for message in consumer.consume(num_messages=10_000, timeout=0.5):
                    if message.error() is None:
                        messages.append(message)
            return messages
        finally:
            consumer.close()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    settings = Settings()
    fetch_kafka_jars(settings.kafka_jars_dir)
    broker = start_local_kafka(tmp_path_factory.mktemp("kafka"), settings.kafka_jars_dir)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def schema_registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    settings = Settings()
    fetch_schema_registry(settings.schema_registry_dir)
    registry = start_local_registry(
        tmp_path_factory.mktemp("schema-registry"), settings.schema_registry_dir
    )
    yield registry
    registry.stop()


def stream_world(
    broker: LocalKafka, registry_server: LocalRegistry, name: str, partitions: int = 3
) -> StreamWorld:
    """Topics ``<name>-<n>...`` of their own on the session's broker, set up like production."""
    prefix = f"{name}-{next(_TOPICS)}"
    kafka = KafkaCluster(
        bootstrap_servers=broker.bootstrap_servers,
        transactions_topic=f"{prefix}.transactions",
        dead_letter_topic=f"{prefix}.dead-letter",
        decisions_topic=f"{prefix}.decisions",
        ingest_group=f"{prefix}.bronze",
        scorer_group=f"{prefix}.scorer",
        topic_partitions=partitions,
    )
    registry = SchemaRegistry(url=registry_server.url)
    return StreamWorld(kafka, registry, setup_stream(kafka, registry), broker, registry_server)


@pytest.fixture
def stream(
    kafka_broker: LocalKafka, schema_registry_server: LocalRegistry, request: pytest.FixtureRequest
) -> StreamWorld:
    """A test's own topics (3 partitions), subjects and schemas on the session's servers."""
    name = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:40]
    return stream_world(kafka_broker, schema_registry_server, name)
