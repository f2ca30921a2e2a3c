"""A one-node Apache Kafka broker in KRaft mode (no ZooKeeper) on loopback, for the demo, the
tests and trying the streaming path on a laptop; production points at an existing cluster.

The broker is Kafka's own server (``org.apache.kafka:kafka_2.13``), fetched once with Maven into
a versioned cache directory (``mlops-assets fetch-kafka-jars``) and started with Java 17 or
newer: ``kafka.tools.StorageTool format`` prepares the data directory the first time, then
``kafka.Kafka`` runs the combined broker and controller, listening on 127.0.0.1 only. Start-up
takes 3-5 s on a 2-core machine.
"""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from mlops_assets.resources.jvm import (
    HOST,
    JavaServer,
    JavaServerError,
    accepts,
    find_java,
    free_port,
    start_java_server,
    tail,
)
from mlops_assets.resources.maven import cached_jars, fetch_jars

KAFKA_VERSION = "4.1.1"
SCALA_BINARY = "2.13"
#: the broker, and the binding of its SLF4J logging to the log4j2 it ships
KAFKA_ARTIFACTS = (
    f"org.apache.kafka:kafka_{SCALA_BINARY}:{KAFKA_VERSION}",
    "org.apache.logging.log4j:log4j-slf4j-impl:2.24.3",
)
FETCH_COMMAND = "mlops-assets fetch-kafka-jars"
_READY_LINE = "Kafka Server started"
_LOG4J = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.kafka.appenderRef.file.ref = FILE
logger.kafka.additivity = false
"""


def kafka_jar_dir(cache_root: str | Path) -> Path:
    return Path(cache_root).expanduser() / f"kafka-{KAFKA_VERSION}"


def fetch_kafka_jars(cache_root: str | Path, mvn: str = "mvn") -> list[Path]:
    """Fetch the Kafka server jars (about 45 MB) into the cache (idempotent)."""
    return fetch_jars(list(KAFKA_ARTIFACTS), kafka_jar_dir(cache_root), mvn=mvn)


def broker_properties(data_dir: Path, port: int, controller_port: int) -> str:
    """The server.properties of a one-node broker+controller on loopback."""
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{HOST}:{controller_port}",
            f"listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
            f"advertised.listeners=PLAINTEXT://{HOST}:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data_dir / 'log'}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=3",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "",
        ]
    )


@dataclass
class LocalKafka:
    """A running local broker; ``stop`` ends it (its data directory stays)."""

    bootstrap_servers: str
    data_dir: Path
    server: JavaServer

    @property
    def pid(self) -> int:
        return self.server.pid

    @property
    def startup_seconds(self) -> float:
        return self.server.startup_seconds

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> LocalKafka:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start_local_kafka(
    data_dir: str | Path,
    jars_dir: str | Path,
    port: int | None = None,
    heap: str = "512m",
    timeout_seconds: float = 90.0,
) -> LocalKafka:
    """Start a one-node broker keeping its data in ``data_dir`` (formatted on first use),
    listening on 127.0.0.1:``port`` (a free port when None); returns once it serves."""
    jars = cached_jars(kafka_jar_dir(jars_dir))
    if not jars:
        raise JavaServerError(
            f"the Kafka server jars are not in {kafka_jar_dir(jars_dir)}: run `{FETCH_COMMAND}`"
        )
    java = find_java()
    data = Path(data_dir).expanduser().resolve()
    data.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if accepts(port):
        raise JavaServerError(f"port {port} on {HOST} is already in use: cannot start Kafka there")
    controller_port = free_port(avoid=(port,))
    config = data / "server.properties"
    config.write_text(broker_properties(data, port, controller_port))
    log_path = data / "broker.log"
    log_config = data / "log4j2.properties"
    log_config.write_text(_LOG4J.format(log=log_path))
    command = [
        java,
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log_config}",
        "-cp",
        os.pathsep.join(str(jar) for jar in jars),
    ]
    if not (data / "log" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        formatted = subprocess.run(
            [*command, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if formatted.returncode != 0:
            raise JavaServerError(
                f"formatting the Kafka broker's storage in {data} failed:\n"
                f"{formatted.stdout[-2000:]}{formatted.stderr[-2000:]}"
            )
    server = start_java_server(
        "the Kafka broker",
        [*command, "kafka.Kafka", str(config)],
        data / "broker.out",
        ready=lambda: _READY_LINE in tail(log_path, 500_000) and accepts(port),
        timeout_seconds=timeout_seconds,
        logs=(log_path,),
    )
    return LocalKafka(f"{HOST}:{port}", data, server)
