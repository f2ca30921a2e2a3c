"""Kafka and its schema registry as resources: where they are, how to authenticate, and which
topics and consumer groups the platform uses.

Secrets are read by reference: a setting names a file (a mounted Kubernetes Secret), whose
content is read when a client is built and never stored in the resource, so the Dagster UI and
the logs only ever show the file's path.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

log = logging.getLogger(__name__)


def read_secret(path: str | None, what: str) -> str | None:
    """The content of a secret file (stripped of a final newline); a clear error naming the
    setting when the file cannot be read."""
    if not path:
        return None
    try:
        return Path(path).expanduser().read_text().rstrip("\r\n")
    except OSError as error:
        raise ValueError(f"{what}: cannot read the secret file {path}: {error}") from error


class KafkaCluster(dg.ConfigurableResource):
    """The Kafka cluster of the streaming path, its topics and the platform's consumer groups."""

    bootstrap_servers: str = Field(description="host:port of the brokers, comma-separated.")
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password_file: str | None = Field(None, description="File holding the SASL password.")
    ssl_ca_file: str | None = None
    ssl_certificate_file: str | None = None
    ssl_key_file: str | None = None
    ssl_key_password_file: str | None = None
    transactions_topic: str = "transactions"
    dead_letter_topic: str = "transactions.dead-letter"
    decisions_topic: str = "transaction-decisions"
    ingest_group: str = "mlops-assets-bronze"
    scorer_group: str = "mlops-assets-scorer"
    topic_partitions: int = 3
    topic_replication: int = 1
    session_timeout_ms: int = 10_000

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka configuration of a client of this cluster (``extra`` on top); librdkafka's
        own log lines go to the ``mlops_assets.kafka`` Python logger, not to stderr."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "logger": logging.getLogger("mlops_assets.kafka"),
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        password = read_secret(self.sasl_password_file, "MLOPS_KAFKA_SASL_PASSWORD_FILE")
        if password is not None:
            config["sasl.password"] = password
        for key, path in (
            ("ssl.ca.location", self.ssl_ca_file),
            ("ssl.certificate.location", self.ssl_certificate_file),
            ("ssl.key.location", self.ssl_key_file),
        ):
            if path:
                config[key] = str(Path(path).expanduser())
        key_password = read_secret(self.ssl_key_password_file, "MLOPS_KAFKA_SSL_KEY_PASSWORD_FILE")
        if key_password is not None:
            config["ssl.key.password"] = key_password
        config.update(extra)
        return config

    def consumer(self, group: str, instance_id: str | None = None, **extra: Any) -> Any:
        """A consumer in ``group`` that commits nothing on its own and reads committed data;
        with ``instance_id``, a static member of the group (a restart takes its partitions
        back at once)."""
        from confluent_kafka import Consumer

        config = {
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": self.session_timeout_ms,
            **extra,
        }
        if instance_id:
            config["group.instance.id"] = instance_id
        return Consumer(self.client_config(**config))

    def producer(self, **extra: Any) -> Any:
        """An idempotent producer (no duplicates or reordering from its own retries)."""
        from confluent_kafka import Producer

        return Producer(self.client_config(**{"enable.idempotence": True, "acks": "all", **extra}))

    def admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient(self.client_config())

    def end_offsets(self, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
        """Each partition's (low, high) watermark: its first and its next offset."""
        from confluent_kafka import TopicPartition

        consumer = self.consumer(f"{self.ingest_group}.monitor")
        try:
            metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if metadata is None or metadata.error is not None:
                raise RuntimeError(
                    f"topic {topic} is not on {self.bootstrap_servers}"
                    + (f": {metadata.error}" if metadata is not None else "")
                )
            return {
                partition: consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout
                )
                for partition in sorted(metadata.partitions)
            }
        finally:
            consumer.close()

    def ensure_topics(self, topics: list[str], timeout: float = 30.0) -> list[str]:
        """Create the topics that do not exist yet (``topic_partitions`` partitions each);
        returns those created."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import NewTopic

        admin = self.admin()
        existing = set(admin.list_topics(timeout=timeout).topics)
        missing = [topic for topic in topics if topic not in existing]
        if not missing:
            return []
        futures = admin.create_topics(
            [NewTopic(t, self.topic_partitions, self.topic_replication) for t in missing],
            operation_timeout=timeout,
        )
        created = []
        for topic, future in futures.items():
            try:
                future.result(timeout)
                created.append(topic)
            except KafkaException as error:
                if "TOPIC_ALREADY_EXISTS" not in str(error):
                    raise
        return created


class SchemaRegistry(dg.ConfigurableResource):
    """A Confluent-compatible schema registry (Confluent's, or Apicurio's ``/apis/ccompat/v7``)."""

    url: str
    username: str | None = None
    password_file: str | None = Field(None, description="File holding the basic-auth password.")
    ca_file: str | None = None
    compatibility: str = "BACKWARD"

    def client(self) -> Any:
        """A ``confluent_kafka.schema_registry.SchemaRegistryClient`` of this registry."""
        from confluent_kafka.schema_registry import SchemaRegistryClient

        config: dict[str, Any] = {"url": self.url}
        password = read_secret(self.password_file, "MLOPS_SCHEMA_REGISTRY_PASSWORD_FILE")
        if self.username:
            config["basic.auth.user.info"] = f"{self.username}:{password or ''}"
        if self.ca_file:
            config["ssl.ca.location"] = str(Path(self.ca_file).expanduser())
        return SchemaRegistryClient(config)
