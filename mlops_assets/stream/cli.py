"""The streaming commands of ``mlops-assets``: fetch and run a local broker and registry,
prepare topics and schemas, produce delivered files to the topic, run the bronze ingestion and
the streaming scorer."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from mlops_assets.settings import load_settings


def _fetch_kafka_jars(_args: argparse.Namespace) -> int:
    from mlops_assets.stream.local_kafka import fetch_kafka_jars, kafka_jar_dir

    settings = load_settings()
    try:
        jars = fetch_kafka_jars(settings.kafka_jars_dir)
    except RuntimeError as error:
        print(f"Could not fetch the Kafka server jars: {error}", file=sys.stderr)
        return 1
    print(f"Kafka broker: {len(jars)} jars in {kafka_jar_dir(settings.kafka_jars_dir)}")
    return 0


def _fetch_schema_registry(_args: argparse.Namespace) -> int:
    from mlops_assets.stream.local_registry import fetch_schema_registry

    settings = load_settings()
    try:
        launcher = fetch_schema_registry(settings.schema_registry_dir)
    except RuntimeError as error:
        print(f"Could not build the schema registry: {error}", file=sys.stderr)
        return 1
    print(f"Schema registry: {launcher.parent.parent}")
    return 0


def _kafka_local(args: argparse.Namespace) -> int:
    """A broker and a registry in the foreground until Ctrl-C (their data under the home)."""
    from mlops_assets.resources.jvm import JavaServerError
    from mlops_assets.stream.local_kafka import start_local_kafka
    from mlops_assets.stream.local_registry import start_local_registry

    settings = load_settings()
    root = settings.home_path / "kafka"
    try:
        broker = start_local_kafka(root / "broker", settings.kafka_jars_dir, port=args.port)
        try:
            registry = start_local_registry(
                root / "registry", settings.schema_registry_dir, port=args.registry_port
            )
        except JavaServerError:
            broker.stop()
            raise
    except JavaServerError as error:
        print(f"Could not start the local Kafka broker and registry: {error}", file=sys.stderr)
        return 1
    print(
        f"Kafka broker on {broker.bootstrap_servers} (data in {root / 'broker'}), schema "
        f"registry on {registry.url} (in memory). In another shell:\n"
        f"  export MLOPS_KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}\n"
        f"  export MLOPS_SCHEMA_REGISTRY_URL={registry.url}\n"
        "  mlops-assets stream-setup && mlops-assets produce <file> && mlops-assets consume\n"
        "Ctrl-C stops both.",
        flush=True,
    )
    try:
        while broker.server.running() and registry.server.running():
            time.sleep(1)
        print("A server stopped on its own: see its log under " + str(root), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        registry.stop()
        broker.stop()


def _resources() -> tuple[Any, dict[str, Any]]:
    from mlops_assets.environment import build_resources

    settings = load_settings()
    return settings, build_resources(settings)


def _stream_setup(_args: argparse.Namespace) -> int:
    from mlops_assets.stream.setup import setup_stream

    _settings, resources = _resources()
    try:
        done = setup_stream(resources["kafka"], resources["schema_registry"])
    except Exception as error:
        print(f"Stream setup failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(done.summary())
    return 0


def _produce(args: argparse.Namespace) -> int:
    from mlops_assets.resources.landing import LandingFile
    from mlops_assets.stream.codec import IncompatibleSchema, RegistryUnavailable, subject_for
    from mlops_assets.stream.producer import produce_records, typed_records
    from mlops_assets.stream.setup import transaction_codec
    from mlops_assets.uris import read_bytes

    settings, resources = _resources()
    kafka, registry = resources["kafka"], resources["schema_registry"]
    topic = args.topic or kafka.transactions_topic
    codec = transaction_codec(registry)
    try:
        writer = codec.register(subject_for(topic))
    except (IncompatibleSchema, RegistryUnavailable) as error:
        print(f"Not producing: {error}", file=sys.stderr)
        return 2
    producer = kafka.producer(**{"linger.ms": 5, "compression.type": "lz4"})
    status = 0
    for location in args.files:
        uri = location if "://" in location else str(Path(location).expanduser().resolve())
        name = uri.rsplit("/", 1)[-1]
        try:
            content = read_bytes(uri, settings.object_store_options)
            file = LandingFile(uri=uri, name=name, size=len(content), mtime_ns=0)
            records = typed_records(file, content, settings.paysim_epoch, list(writer.fields))
            report = produce_records(
                producer, topic, codec.encoder(writer), records, writer.schema_id, rate=args.rate
            )
        except Exception as error:  # a malformed or missing file: say which, go on
            print(f"{name}: not produced: {error}", file=sys.stderr)
            status = 1
            continue
        print(f"{name}: {report.summary()}")
        status = status or (1 if report.failed else 0)
    return status


def _consume(args: argparse.Namespace) -> int:
    from mlops_assets.stream.service import configure_logging, run_ingestion

    configure_logging()
    settings = load_settings()
    stats = run_ingestion(
        settings, until_caught_up=args.until_caught_up, idle_seconds=args.idle_seconds
    )
    print(
        f"bronze ingestion: {stats.messages:,} message(s) in {stats.batches} write(s), "
        f"dead letters {stats.dead_letters or 0}, last Delta version {stats.last_version}, "
        f"next offsets {dict(sorted(stats.next_offsets.items()))}",
        flush=True,
    )
    return 0


def _score_stream(args: argparse.Namespace) -> int:
    # a pass scores a few transactions: one thread each for polars avoids hand-offs between
    # cores (set before polars is imported; an explicit setting wins)
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    from mlops_assets.serve.stream_service import run_scorer
    from mlops_assets.stream.service import configure_logging

    configure_logging()
    scorer = run_scorer(
        load_settings(), until_caught_up=args.until_caught_up, idle_seconds=args.idle_seconds
    )
    print(
        f"streaming scorer: {scorer.decided:,} transaction(s) scored, {scorer.rejected:,} "
        f"rejected, {scorer.replayed:,} replayed into the history",
        flush=True,
    )
    return 0


def add_stream_commands(commands: Any) -> None:
    """Register the streaming commands on the ``mlops-assets`` parser."""
    fetch = commands.add_parser(
        "fetch-kafka-jars", help="fetch the Kafka server jars (local broker) with Maven"
    )
    fetch.set_defaults(handler=_fetch_kafka_jars)
    registry = commands.add_parser(
        "fetch-schema-registry",
        help="build the local schema registry (Apicurio, Confluent API) with Maven",
    )
    registry.set_defaults(handler=_fetch_schema_registry)

    local = commands.add_parser(
        "kafka-local", help="run a local Kafka broker (KRaft) and schema registry until Ctrl-C"
    )
    local.add_argument("--port", type=int, default=9092, help="broker port (default 9092)")
    local.add_argument("--registry-port", type=int, default=8081, help="registry port (8081)")
    local.set_defaults(handler=_kafka_local)

    setup = commands.add_parser(
        "stream-setup", help="create the topics, set the subjects' compatibility, register schemas"
    )
    setup.set_defaults(handler=_stream_setup)

    produce = commands.add_parser(
        "produce", help="send delivered transaction files to the topic as Avro messages"
    )
    produce.add_argument("files", nargs="+", help="CSV or Parquet files (paths or URIs)")
    produce.add_argument("--topic", help="default MLOPS_KAFKA_TRANSACTIONS_TOPIC")
    produce.add_argument("--rate", type=float, help="messages per second (default: as fast)")
    produce.set_defaults(handler=_produce)

    consume = commands.add_parser(
        "consume", help="run the bronze ingestion: the topic into raw_transactions, exactly once"
    )
    consume.add_argument(
        "--until-caught-up",
        action="store_true",
        help="stop once every partition is read to its end (default: run until stopped)",
    )
    consume.add_argument(
        "--idle-seconds", type=float, default=2.0, help="quiet time before 'caught up' (2)"
    )
    consume.set_defaults(handler=_consume)

    score = commands.add_parser(
        "score-stream",
        help="run the streaming scorer: decide every transaction on the topic with the champion",
    )
    score.add_argument(
        "--until-caught-up", action="store_true", help="stop once every partition is decided"
    )
    score.add_argument("--idle-seconds", type=float, default=2.0)
    score.set_defaults(handler=_score_stream)
