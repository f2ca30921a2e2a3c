"""Preparing a cluster and registry for the streaming path (idempotent): the topics exist, the
platform's subjects have their compatibility rule, and the repository's schemas are registered.

Run by ``mlops-assets stream-setup``, the demo and the tests; in production once per cluster
(a Kubernetes Job, or by hand), with topics sized by the operator beforehand if preferred:
existing topics are never changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlops_assets.resources.kafka import KafkaCluster, SchemaRegistry
from mlops_assets.stream.codec import AvroCodec, WriterSchema, subject_for
from mlops_assets.stream.schemas import decision_schema, transaction_schema


@dataclass(frozen=True)
class StreamSetup:
    """What the setup found or did."""

    created_topics: list[str]
    transaction_schema: WriterSchema
    decision_schema: WriterSchema
    compatibility: str

    def summary(self) -> str:
        created = ", ".join(self.created_topics) or "none (all existed)"
        return (
            f"topics created: {created}; schemas registered: transaction as id "
            f"{self.transaction_schema.schema_id}, decision as id "
            f"{self.decision_schema.schema_id} ({self.compatibility} compatibility)"
        )


def transaction_codec(registry: SchemaRegistry, client: Any = None) -> AvroCodec:
    """A codec of transactions (reading any registered writer schema of them)."""
    return AvroCodec(client or registry.client(), transaction_schema(), registry.url)


def decision_codec(registry: SchemaRegistry, client: Any = None) -> AvroCodec:
    return AvroCodec(client or registry.client(), decision_schema(), registry.url)


def setup_stream(kafka: KafkaCluster, registry: SchemaRegistry) -> StreamSetup:
    """Create the missing topics, set the subjects' compatibility, register the schemas."""
    created = kafka.ensure_topics(
        [kafka.transactions_topic, kafka.dead_letter_topic, kafka.decisions_topic]
    )
    client = registry.client()
    for topic in (kafka.transactions_topic, kafka.decisions_topic):
        client.set_compatibility(subject_for(topic), registry.compatibility)
    transactions = transaction_codec(registry, client).register(
        subject_for(kafka.transactions_topic)
    )
    decisions = decision_codec(registry, client).register(subject_for(kafka.decisions_topic))
    return StreamSetup(created, transactions, decisions, registry.compatibility)
