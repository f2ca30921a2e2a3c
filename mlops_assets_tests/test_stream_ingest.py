"""The bronze ingestion against a real Kafka broker (KRaft), a real schema registry and real
Delta tables: every message exactly once with its offsets, bad messages dead-lettered and
quarantined with their reason while the stream goes on, compatible and incompatible schema
evolution, writers fenced by the offsets in the table, and a consumer killed with SIGKILL at
random points that loses and duplicates nothing."""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from confluent_kafka import TopicPartition
from deltalake import CommitProperties, Transaction
from deltalake.exceptions import CommitFailedError

from mlops_assets.datagen import GeneratorConfig, write_day
from mlops_assets.ingest.streamed import app_id, committed_offsets, stream_writes, streamed_days
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.landing import LandingZone
from mlops_assets.settings import Settings
from mlops_assets.stream.bronze_rows import read_messages
from mlops_assets.stream.bronze_writer import BronzeWriter, OffsetsMoved
from mlops_assets.stream.codec import IncompatibleSchema, subject_for
from mlops_assets.stream.committer import DeltaCommitter, Handed
from mlops_assets.stream.dead_letters import (
    CONTRACT,
    OUT_OF_RANGE,
    UNDECODABLE,
    DeadLetterProducer,
    read_dead_letter,
)
from mlops_assets.stream.ingest import BronzeIngestion, IngestStats
from mlops_assets.stream.local_registry import start_local_registry
from mlops_assets.stream.messages import StreamMessage
from mlops_assets.stream.producer import ProduceReport, produce_records, typed_records
from mlops_assets.stream.schemas import transaction_schema
from mlops_assets.stream.setup import transaction_codec
from mlops_assets.tables import RAW_TRANSACTIONS
from mlops_assets.validate.rules import apply_contract
from mlops_assets_tests.helpers import free_port
from mlops_assets_tests.kafka_broker import StreamWorld, stream_world

EPOCH = date(2026, 1, 1)
DAY = date(2026, 3, 10)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def produce_day(
    stream: StreamWorld, landing: Path, day: date, rows: int, seed: int = 7, bad: float = 0.0
) -> ProduceReport:
    """Generate ``day`` as a delivered file and send it to the topic, row by row."""
    config = GeneratorConfig(rows_per_day=rows, seed=seed, epoch=EPOCH, bad_row_share=bad)
    write_day(day, config, str(landing))
    zone = LandingZone(uri=str(landing))
    file = next(f for f in zone.list_files() if day.isoformat() in f.name)
    codec = transaction_codec(stream.registry)
    writer = stream.setup.transaction_schema
    records = typed_records(file, zone.read_bytes(file), EPOCH, list(writer.fields))
    producer = stream.kafka.producer(**{"linger.ms": 5})
    report = produce_records(
        producer, stream.kafka.transactions_topic, codec.encoder(writer), records, writer.schema_id
    )
    assert report.failed == 0
    return report


def ingestion(stream: StreamWorld, lake: DeltaLake, batch_rows: int = 2_000) -> BronzeIngestion:
    kafka = stream.kafka
    return BronzeIngestion(
        consumer_factory=lambda: kafka.consumer(kafka.ingest_group),
        codec=transaction_codec(stream.registry),
        writer=BronzeWriter(lake, group=kafka.ingest_group),
        dead_letters=DeadLetterProducer(kafka.producer(), kafka.dead_letter_topic),
        topic=kafka.transactions_topic,
        first_day=EPOCH,
        batch_rows=batch_rows,
        batch_seconds=0.2,
    )


def ingest(stream: StreamWorld, lake: DeltaLake, batch_rows: int = 2_000) -> IngestStats:
    return ingestion(stream, lake, batch_rows).run(stop_when_caught_up=True, idle_seconds=0.5)


def end_offsets(stream: StreamWorld) -> dict[int, int]:
    return {
        p: high
        for p, (_low, high) in stream.kafka.end_offsets(stream.kafka.transactions_topic).items()
    }


def bronze(lake: DeltaLake) -> pl.DataFrame:
    return pl.from_arrow(lake.read(RAW_TRANSACTIONS))  # type: ignore[return-value]


def assert_each_message_once(lake: DeltaLake, ends: dict[int, int]) -> pl.DataFrame:
    """Bronze holds offsets 0..end-1 of every partition, each exactly once."""
    rows = bronze(lake)
    for partition, end in ends.items():
        offsets = rows.filter(pl.col("_source_partition") == partition)["_source_offset"]
        assert offsets.len() == end, (partition, offsets.len(), end)
        assert offsets.n_unique() == end, f"partition {partition} has duplicate offsets"
        assert offsets.min() == 0 and offsets.max() == end - 1, partition
    return rows


def test_a_streamed_day_lands_in_bronze_once_with_its_offsets(
    stream: StreamWorld, tmp_path: Path
) -> None:
    report = produce_day(stream, tmp_path / "landing", DAY, rows=3_000)
    assert report.sent == 3_000
    lake = DeltaLake(root_uri=str(tmp_path / "lake"))
    stats = ingest(stream, lake, batch_rows=700)
    ends = end_offsets(stream)
    assert sum(ends.values()) == 3_000 and len(ends) == 3
    rows = assert_each_message_once(lake, ends)
    assert stats.messages == 3_000 and stats.batches >= 5 and not stats.dead_letters
    # the offsets committed atomically with the rows are the partitions' ends
    assert committed_offsets(lake, stream.kafka.transactions_topic, sorted(ends)) == ends
    # every write is recorded in the Delta log with its offsets, covering every message
    writes = stream_writes(lake.history(RAW_TRANSACTIONS, limit=100))
    assert len(writes) == stats.batches
    assert sum(w["messages"] for w in writes) == 3_000
    covered = {
        (int(key.rsplit("/", 1)[1]), offset)
        for w in writes
        for key, (first, last, _count) in w["offsets"].items()
        for offset in range(first, last + 1)
    }
    assert len(covered) == 3_000
    # rows as delivered: the producer's ids, the file's text, the day from the timestamp
    delivered = pl.read_csv(next((tmp_path / "landing").glob("*.csv")), infer_schema=False)
    by_id = rows.sort("transaction_id")
    expected = (
        delivered.with_row_index("row", offset=1)
        .with_columns(
            (pl.lit(f"transactions_{DAY}:") + pl.col("row").cast(pl.Utf8)).alias("transaction_id")
        )
        .sort("transaction_id")
    )
    for column in ("amount", "oldbalanceOrg", "nameOrig", "type", "step"):
        assert by_id[column].to_list() == expected[column].to_list(), column
    # the timestamp in microseconds, as the message carries it
    assert by_id["timestamp"].str.to_datetime(time_zone="UTC").to_list() == (
        expected["timestamp"].str.to_datetime(time_zone="UTC").to_list()
    )
    assert by_id["timestamp"][0].endswith("Z") and len(by_id["timestamp"][0]) == 27
    assert set(rows["txn_date"].unique().to_list()) == {DAY}
    summary = streamed_days(lake, [DAY])[DAY]
    assert summary.rows == 3_000 and summary.unreadable == 0
    assert sum(o["messages"] for o in summary.offsets.values()) == 3_000


def _bad_messages(stream: StreamWorld) -> dict[str, tuple[bytes, str]]:
    """Named bad message values, and the kind of dead letter each must become."""
    codec = transaction_codec(stream.registry)
    encode = codec.encoder(stream.setup.transaction_schema)
    good = {
        "transaction_id": "bad-test:1",
        "step": 1634,
        "type": "TRANSFER",
        "amount": 181.0,
        "nameOrig": "C1305486145",
        "oldbalanceOrg": 181.0,
        "newbalanceOrig": 0.0,
        "nameDest": "C553264065",
        "oldbalanceDest": 0.0,
        "newbalanceDest": 0.0,
        "isFraud": 1,
        "isFlaggedFraud": 0,
        "timestamp": int(datetime(2026, 3, 10, 9, 30, tzinfo=UTC).timestamp() * 1e6),
    }
    valid = encode(good)
    return {
        "not_avro": (b'{"amount": 12.5}', UNDECODABLE),
        "unknown_schema_id": (struct.pack(">bI", 0, 987_654) + valid[5:], UNDECODABLE),
        "truncated": (valid[:20], UNDECODABLE),
        "negative_amount": (
            encode({**good, "transaction_id": "bad-test:2", "amount": -5.0}),
            CONTRACT,
        ),
        "bad_account": (
            encode({**good, "transaction_id": "bad-test:3", "nameOrig": "X1"}),
            CONTRACT,
        ),
        "from_1999": (
            encode({**good, "transaction_id": "bad-test:4", "timestamp": 946_684_800_000_000}),
            OUT_OF_RANGE,
        ),
    }


def test_bad_messages_are_dead_lettered_and_quarantined_and_the_stream_goes_on(
    stream: StreamWorld, tmp_path: Path
) -> None:
    bad = _bad_messages(stream)
    producer = stream.kafka.producer()
    topic = stream.kafka.transactions_topic
    for name, (value, _kind) in bad.items():
        producer.produce(topic, value=value, key=name.encode())
    producer.flush(30)
    report = produce_day(stream, tmp_path / "landing", DAY, rows=500)
    lake = DeltaLake(root_uri=str(tmp_path / "lake"))
    stats = ingest(stream, lake)
    total = len(bad) + report.sent
    rows = assert_each_message_once(lake, end_offsets(stream))
    assert rows.height == total  # nothing is lost: every message is a bronze row
    assert stats.dead_letters == {UNDECODABLE: 3, CONTRACT: 2, OUT_OF_RANGE: 1}

    letters = [read_dead_letter(m) for m in stream.read_all(stream.kafka.dead_letter_topic)]
    by_key = {letter["key"].decode(): letter for letter in letters}
    assert set(by_key) == set(bad)  # each bad message, and no good one
    for name, (value, kind) in bad.items():
        letter = by_key[name]
        assert letter["kind"] == kind and letter["value"] == value, name
        assert letter["source"].startswith(f"{topic}/")
    assert "Confluent wire format" in by_key["not_avro"]["reason"]
    assert "unknown schema id 987654" in by_key["unknown_schema_id"]["reason"]
    assert "ends before the record" in by_key["truncated"]["reason"]
    assert by_key["negative_amount"]["reason"] == "amount: greater_than(0)"
    assert "outside the daily partitions" in by_key["from_1999"]["reason"]

    # validation quarantines every unreadable and contract-breaking message with its reason:
    # the contract-breaking ones on their transaction's day, the unreadable ones (no readable
    # timestamp) on the day they were sent
    sent_day = datetime.now(UTC).date()
    outcomes = {
        day: apply_contract(rows.filter(pl.col("txn_date") == day).drop("txn_date"), day, EPOCH)
        for day in (DAY, sent_day)
    }
    reasons = [
        rule
        for outcome in outcomes.values()
        for row in outcome.quarantined.iter_rows(named=True)
        for rule in row["_rules"]
    ]
    assert sum(r.startswith("message: not Avro") for r in reasons) == 1
    assert sum(r.startswith("message: unknown schema id 987654") for r in reasons) == 1
    assert sum(r.startswith("message: the Avro payload does not decode") for r in reasons) == 1
    assert "amount: greater_than(0)" in reasons
    assert any(r.startswith("nameOrig: str_matches") for r in reasons)
    unreadable = outcomes[sent_day].quarantined
    assert unreadable.height == 3 and unreadable["_message_value"].null_count() == 0  # kept
    assert outcomes[sent_day].valid.height == 0
    assert outcomes[DAY].valid.height == report.sent
    day_rows = rows.filter(pl.col("txn_date") == DAY).height
    assert outcomes[DAY].valid.height + outcomes[DAY].quarantined.height == day_rows
    # the 1999 message is kept in bronze under its own day, which no partition loads
    assert rows.filter(pl.col("txn_date") == date(2000, 1, 1)).height == 1


def test_a_compatible_schema_is_accepted_and_an_incompatible_producer_refused(
    stream: StreamWorld, tmp_path: Path
) -> None:
    codec = transaction_codec(stream.registry)
    subject = subject_for(stream.kafka.transactions_topic)
    evolved = transaction_schema()
    evolved["fields"].append(
        {"name": "channel", "type": ["null", "string"], "default": None, "doc": "app or web"}
    )
    writer = codec.register(subject, evolved)  # BACKWARD compatible: an optional new field
    assert writer.schema_id != stream.setup.transaction_schema.schema_id
    landing = tmp_path / "landing"
    write_day(DAY, GeneratorConfig(rows_per_day=200, seed=3, epoch=EPOCH), str(landing))
    zone = LandingZone(uri=str(landing))
    file = zone.list_files()[0]
    records = [
        (row, {**record, "channel": "app"} if record else None, why)
        for row, record, why in typed_records(
            file, zone.read_bytes(file), EPOCH, list(writer.fields)
        )
    ]
    report = produce_records(
        stream.kafka.producer(),
        stream.kafka.transactions_topic,
        codec.encoder(writer),
        iter(records),
        writer.schema_id,
    )
    assert report.sent == 200
    lake = DeltaLake(root_uri=str(tmp_path / "lake"))
    ingest(stream, lake)
    rows = bronze(lake)
    assert rows.height == 200
    assert rows["channel"].to_list() == ["app"] * 200  # the new field arrives, as delivered
    assert set(rows["_schema_id"].unique().to_list()) == {writer.schema_id}
    outcome = apply_contract(rows.drop("txn_date"), DAY, EPOCH)
    assert outcome.valid.height == 200  # the contract still holds for them

    incompatible = transaction_schema()
    next(f for f in incompatible["fields"] if f["name"] == "amount")["type"] = "string"
    with pytest.raises(IncompatibleSchema) as refused:
        codec.register(subject, incompatible)
    message = str(refused.value)
    assert subject in message and "not compatible" in message and "BACKWARD" in message
    assert "/fields/3/type" in message  # the registry names the field that breaks it
    # the refused producer did not get a schema id: nothing was sent with it
    assert len(stream.read_all(stream.kafka.transactions_topic)) == 200


def test_a_redelivered_batch_adds_nothing_and_a_stale_writer_is_refused(
    stream: StreamWorld, tmp_path: Path
) -> None:
    produce_day(stream, tmp_path / "landing", DAY, rows=600)
    lake = DeltaLake(root_uri=str(tmp_path / "lake"))
    codec = transaction_codec(stream.registry)
    messages = [
        StreamMessage.from_kafka(m) for m in stream.read_all(stream.kafka.transactions_topic)
    ]
    assert len(messages) == 600
    batch = read_messages(messages, codec, datetime.now(UTC), EPOCH)
    first, stale = BronzeWriter(lake), BronzeWriter(lake)
    stale.committed(stream.kafka.transactions_topic, [0, 1, 2])  # reads the table before
    version = first.write(batch)
    with pytest.raises(OffsetsMoved, match="already in bronze/raw_transactions"):
        first.write(batch)  # the same batch again (a redelivery): refused, nothing added
    with pytest.raises(OffsetsMoved):
        stale.write(batch)  # a zombie writer with the same messages
    assert bronze(lake).height == 600
    assert lake.version(RAW_TRANSACTIONS) == version

    # two writers that both checked before either committed: Delta refuses the second
    racing = [BronzeWriter(lake), BronzeWriter(lake)]
    ids = [app_id(*key) for key in batch.offsets]
    for writer in racing:
        writer.appender.transaction_versions(ids)  # both read the same snapshot
    committed = {app_id(*key): last + 1 for key, (_f, last, _c) in batch.offsets.items()}
    one_row = batch.table.slice(0, 1)
    racing[0].appender(one_row, _offsets_commit(committed), refresh=False)
    with pytest.raises(CommitFailedError, match=r"(?i)concurrent transaction"):
        racing[1].appender(one_row, _offsets_commit(committed), refresh=False)
    assert bronze(lake).height == 601

    # an ingestion resuming with Kafka's group offsets reset to the start reads nothing twice
    consumer = stream.kafka.consumer(stream.kafka.ingest_group)
    consumer.commit(
        offsets=[TopicPartition(stream.kafka.transactions_topic, p, 0) for p in range(3)],
        asynchronous=False,
    )
    consumer.close()
    stats = ingest(stream, lake)
    assert stats.messages == 0
    assert bronze(lake).height == 601


def _offsets_commit(versions: dict[str, int]) -> CommitProperties:
    return CommitProperties(app_transactions=[Transaction(a, v) for a, v in versions.items()])


def _bronze_version(lake_root: Path) -> int:
    lake = DeltaLake(root_uri=str(lake_root))
    try:
        return lake.version(RAW_TRANSACTIONS) or -1
    except Exception:  # a commit being written while we look
        return -1


@pytest.mark.slow
def test_a_consumer_killed_at_random_points_loses_and_duplicates_nothing(
    stream: StreamWorld, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    sent = sum(
        produce_day(stream, landing, day, rows=4_000, seed=11, bad=0.01).sent
        for day in (date(2026, 3, 9), DAY)
    )
    home = tmp_path / "home"
    env = {
        **os.environ,
        **stream.env(),
        "MLOPS_HOME": str(home),
        "MLOPS_STREAM_BATCH_ROWS": "400",
        "MLOPS_STREAM_BATCH_SECONDS": "0.05",
        "MLOPS_PARTITIONS_START": EPOCH.isoformat(),
        # a static member: a restarted consumer takes its partitions back without waiting
        # for the brokers to give up on the killed one
        "MLOPS_KAFKA_GROUP_INSTANCE_ID": "bronze-0",
    }
    command = [sys.executable, "-m", "mlops_assets.cli", "consume"]
    lake_root = home / "lake"
    rng = random.Random(20261202)
    # three kill points among the ~20 writes the messages make (400 a write)
    targets = sorted(rng.sample(range(1, sent // 400 - 2), 3))
    kills = []
    for target in targets:
        log = open(tmp_path / f"consume-{len(kills)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            command,
            env=env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while _bronze_version(lake_root) < target and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / f"consume-{len(kills)}.log").read_text()
            time.sleep(rng.uniform(0.0, 0.02))
        time.sleep(rng.uniform(0.0, 0.05))  # anywhere in the next batch: reading, sending, writing
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        log.close()
        kills.append(_bronze_version(lake_root))
    assert kills == sorted(kills) and kills[-1] > 0
    finished = subprocess.run(
        [*command, "--until-caught-up", "--idle-seconds", "1"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    lake = DeltaLake(root_uri=str(lake_root))
    ends = end_offsets(stream)
    assert sum(ends.values()) == sent
    rows = assert_each_message_once(lake, ends)
    assert rows["transaction_id"].n_unique() == sent  # and every transaction once
    assert committed_offsets(lake, stream.kafka.transactions_topic, sorted(ends)) == ends
    # the dead-letter topic holds every contract-breaking message (again after a kill: at
    # least once), each identified by its source
    letters = [read_dead_letter(m) for m in stream.read_all(stream.kafka.dead_letter_topic)]
    sources = {letter["source"] for letter in letters}
    contract_rows = rows.filter(pl.col("amount").cast(pl.Float64, strict=False) <= 0)
    assert contract_rows.height > 0
    for row in contract_rows.iter_rows(named=True):
        assert (
            f"{row['_source_topic']}/{row['_source_partition']}/{row['_source_offset']}" in sources
        )


def test_a_registry_outage_stalls_the_ingestion_and_loses_nothing(
    kafka_broker: Any, tmp_path: Path
) -> None:
    settings = Settings()
    port = free_port()
    work = tmp_path / "registry"  # its schemas in a file database: they survive the restart
    registry = start_local_registry(work, settings.schema_registry_dir, port=port, persistent=True)
    try:
        stream = stream_world(kafka_broker, registry, "outage")
        report = produce_day(stream, tmp_path / "landing", DAY, rows=300)
    finally:
        registry.stop()
    lake = DeltaLake(root_uri=str(tmp_path / "lake"))
    ingest = ingestion(stream, lake)  # a new codec: it must ask the registry for the schema
    thread = threading.Thread(
        target=ingest.run, kwargs={"stop_when_caught_up": True, "idle_seconds": 0.5}
    )
    thread.start()
    time.sleep(5)
    # the registry is down: nothing is written, nothing is dead-lettered, the loop waits
    assert thread.is_alive() and ingest.stats.messages == 0 and not ingest.stats.dead_letters
    assert lake.version(RAW_TRANSACTIONS) is None
    back = start_local_registry(work, settings.schema_registry_dir, port=port, persistent=True)
    try:
        thread.join(90)
        assert not thread.is_alive()
    finally:
        back.stop()
    assert ingest.stats.messages == report.sent and not ingest.stats.dead_letters
    assert_each_message_once(lake, end_offsets(stream))
    assert stream.read_all(stream.kafka.dead_letter_topic, timeout=2) == []


def test_the_committer_drops_what_was_read_before_the_offsets_moved(
    stream: StreamWorld, tmp_path: Path
) -> None:
    produce_day(stream, tmp_path / "landing", DAY, rows=400)
    codec = transaction_codec(stream.registry)
    messages = sorted(
        (StreamMessage.from_kafka(m) for m in stream.read_all(stream.kafka.transactions_topic)),
        key=lambda m: (m.partition, m.offset),
    )
    first_partition = [m for m in messages if m.partition == messages[0].partition]
    half = len(first_partition) // 2
    early = read_messages(first_partition[:half], codec, datetime.now(UTC), EPOCH)
    late = read_messages(first_partition[half:], codec, datetime.now(UTC), EPOCH)
    lake = DeltaLake(root_uri=str(tmp_path / "lake"))
    BronzeWriter(lake).write(early)  # another writer got there first
    committer = DeltaCommitter(BronzeWriter(lake))
    try:
        assert committer.offer(Handed(early, time.perf_counter(), 0), timeout=5)
        assert committer.drain(30)
        assert committer.offer(Handed(late, time.perf_counter(), 0), timeout=5)
        assert committer.drain(30)
        refused, dropped = committer.results()
        assert refused.version is None and "already in" in (refused.refused or "")
        # read in the same generation, behind the refused batch: not written (no gap)
        assert dropped.version is None and dropped.refused == "read before the offsets moved"
        assert bronze(lake).height == half
        # read again after resuming from the table's offsets (a new generation): written
        assert committer.offer(Handed(late, time.perf_counter(), 1), timeout=5)
        assert committer.drain(30)
        (written,) = committer.results()
        assert written.version is not None
    finally:
        committer.stop()
    rows = bronze(lake)
    assert rows.height == len(first_partition) and rows["_source_offset"].n_unique() == rows.height
