"""Throughput of the bronze ingestion (Kafka -> raw_transactions, exactly once) against a floor
measured in the same run: the bare client consuming and decoding the same messages.

A local KRaft broker and the local schema registry are started (``mlops-assets
fetch-kafka-jars`` and ``fetch-schema-registry`` fill their caches); ``--messages`` generated
transactions (default 500,000, as Avro in the Confluent wire format, keyed by account) are
sent to a topic of ``--partitions`` partitions. Then, each with a consumer group of its own:

* floor: confluent-kafka's consumer reading every message in batches and decoding each with the
  codec (``AvroCodec.decode``: the registry lookup cached, fastavro), nothing else;
* ingestion: ``BronzeIngestion`` with the default batch settings, into a new Delta lake, until
  every partition is read to its end: reading the messages into bronze rows, the contract's
  one-row checks, the Delta commit with the offsets.

Both are timed from the first message to the last (the consumer group's join is excluded), and
run ``--repeat`` times (default 3), the best of each kept. Targets (issue 13): the ingestion at
least 50% of the floor, and over 50,000 messages/s. Usage:
``.venv/bin/python bench/stream_ingest_bench.py [--messages 500000] [--strict]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlops_assets.datagen import GeneratorConfig, generate_day  # noqa: E402
from mlops_assets.resources.kafka import KafkaCluster, SchemaRegistry  # noqa: E402
from mlops_assets.resources.lake import DeltaLake  # noqa: E402
from mlops_assets.settings import Settings  # noqa: E402
from mlops_assets.stream.bronze_writer import BronzeWriter  # noqa: E402
from mlops_assets.stream.dead_letters import DeadLetterProducer  # noqa: E402
from mlops_assets.stream.ingest import BronzeIngestion  # noqa: E402
from mlops_assets.stream.local_kafka import fetch_kafka_jars, start_local_kafka  # noqa: E402
from mlops_assets.stream.local_registry import (  # noqa: E402
    fetch_schema_registry,
    start_local_registry,
)
from mlops_assets.stream.setup import setup_stream, transaction_codec  # noqa: E402
from mlops_assets.tables import RAW_TRANSACTIONS  # noqa: E402

TARGET_RATIO = 0.5
TARGET_RATE = 50_000
EPOCH = date(2026, 1, 1)


def records(count: int) -> list[dict[str, Any]]:
    """``count`` generated transactions as Avro records, in time order day after day."""
    result: list[dict[str, Any]] = []
    day = EPOCH + timedelta(days=30)
    while len(result) < count:
        frame = generate_day(day, GeneratorConfig(rows_per_day=100_000, seed=5, epoch=EPOCH))
        frame = frame.with_columns(frame["timestamp"].dt.epoch("us").alias("timestamp"))
        for position, row in enumerate(frame.iter_rows(named=True)):
            row["transaction_id"] = f"bench:{day}:{position}"
            result.append(row)
        day += timedelta(days=1)
    return result[:count]


def produce(kafka: KafkaCluster, registry: SchemaRegistry, count: int) -> float:
    codec = transaction_codec(registry)
    writer = codec.register(f"{kafka.transactions_topic}-value")
    encode = codec.encoder(writer)
    producer = kafka.producer(**{"linger.ms": 20, "batch.size": 1_000_000})
    started = time.perf_counter()
    for record in records(count):
        value = encode(record)
        while True:
            try:
                producer.produce(
                    kafka.transactions_topic, value=value, key=record["nameOrig"].encode()
                )
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0
    return time.perf_counter() - started


def floor(kafka: KafkaCluster, registry: SchemaRegistry, count: int, group: str) -> float:
    """Seconds for the bare client to consume and decode ``count`` messages."""
    codec = transaction_codec(registry)
    consumer = kafka.consumer(group)
    consumer.subscribe([kafka.transactions_topic])
    seen, started = 0, None
    while seen < count:
        messages = consumer.consume(num_messages=10_000, timeout=1.0)
        if messages and started is None:
            started = time.perf_counter()
        for message in messages:
            if message.error() is None:
                codec.decode(message.value())
                seen += 1
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return elapsed


def ingestion(
    kafka: KafkaCluster,
    registry: SchemaRegistry,
    count: int,
    group: str,
    lake_root: Path,
    settings: Settings,
) -> tuple[float, int, int]:
    """Seconds from the first message to the last commit; messages in bronze; commits."""
    lake = DeltaLake(root_uri=str(lake_root))
    ingest = BronzeIngestion(
        consumer_factory=lambda: kafka.consumer(group),
        codec=transaction_codec(registry),
        writer=BronzeWriter(lake, compact_every=settings.stream_compact_every, group=group),
        dead_letters=DeadLetterProducer(kafka.producer(), kafka.dead_letter_topic),
        topic=kafka.transactions_topic,
        first_day=EPOCH,
        batch_rows=settings.stream_batch_rows,
        batch_seconds=settings.stream_batch_seconds,
    )
    first: list[float] = []
    original = ingest._collect

    def timed_collect(consumer: Any) -> Any:
        batch = original(consumer)
        if batch and not first:
            first.append(time.perf_counter())
        return batch

    ingest._collect = timed_collect  # type: ignore[method-assign]
    stats = ingest.run(stop_when_caught_up=True, idle_seconds=0.3)
    finished = time.perf_counter()
    rows = lake.read(RAW_TRANSACTIONS, columns=["_source_offset"]).num_rows
    assert stats.messages == count == rows, (stats.messages, count, rows)
    # the idle wait that ends the run is not ingestion time
    return finished - first[0] - 0.3, rows, stats.batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    fetch_kafka_jars(settings.kafka_jars_dir)
    fetch_schema_registry(settings.schema_registry_dir)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = start_local_kafka(work / "kafka", settings.kafka_jars_dir, heap="1g")
        registry_server = start_local_registry(work / "registry", settings.schema_registry_dir)
        try:
            kafka = KafkaCluster(
                bootstrap_servers=broker.bootstrap_servers, topic_partitions=args.partitions
            )
            registry = SchemaRegistry(url=registry_server.url)
            setup_stream(kafka, registry)
            seconds = produce(kafka, registry, args.messages)
            print(
                f"produced {args.messages:,} messages to {args.partitions} partitions in "
                f"{seconds:.1f}s ({args.messages / seconds:,.0f}/s)",
                flush=True,
            )
            floors, ingests = [], []
            for round_ in range(args.repeat):
                floors.append(floor(kafka, registry, args.messages, f"floor-{round_}"))
                took, _rows, commits = ingestion(
                    kafka,
                    registry,
                    args.messages,
                    f"bronze-{round_}",
                    work / f"lake-{round_}",
                    settings,
                )
                ingests.append(took)
                print(
                    f"  round {round_ + 1}: floor {args.messages / floors[-1]:,.0f}/s, "
                    f"ingestion {args.messages / took:,.0f}/s ({commits} commits)",
                    flush=True,
                )
        finally:
            registry_server.stop()
            broker.stop()
    floor_rate = args.messages / min(floors)
    rate = args.messages / min(ingests)
    ratio = rate / floor_rate
    print(f"\nfloor (consume + decode):   {floor_rate:10,.0f} messages/s")
    print(f"bronze ingestion:           {rate:10,.0f} messages/s")
    print(f"ratio to the floor:         {ratio:10.2f}   (target >= {TARGET_RATIO})")
    print(
        f"rate target:                {TARGET_RATE:10,} messages/s "
        f"({'met' if rate > TARGET_RATE else 'missed'})"
    )
    met = ratio >= TARGET_RATIO and rate > TARGET_RATE
    return 0 if met or not args.strict else 1


if __name__ == "__main__":
    raise SystemExit(main())
