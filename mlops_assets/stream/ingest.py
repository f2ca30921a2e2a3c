"""The bronze ingestion: a long-running consumer that writes the transactions topic into
``raw_transactions`` in micro-batches, exactly once, and dead-letters what it cannot use.

The loop: collect messages until ``batch_rows`` arrived or ``batch_seconds`` passed since the
first, read them into bronze rows (``bronze_rows.py``), send the batch's dead letters and wait
for the brokers to have them, then hand the batch to the Delta committer (``committer.py``),
which commits rows and next offsets in one Delta commit (``bronze_writer.py``) while the next
batch is read; Kafka's own group offsets are committed afterwards, for lag tools only.
On (re)assignment each partition resumes at the offset the table records, so a crash at any
point loses nothing and writes nothing twice, and a redelivered message is skipped.

A registry or lake that cannot be reached stalls the loop (retried with back-off, the
partitions paused, the batch held), never drops or dead-letters good messages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from mlops_assets.stream.bronze_rows import read_messages
from mlops_assets.stream.bronze_writer import BronzeWriter, OffsetsMoved
from mlops_assets.stream.codec import AvroCodec
from mlops_assets.stream.committer import Committed, DeltaCommitter, Handed
from mlops_assets.stream.dead_letters import DeadLetterProducer
from mlops_assets.stream.metrics import IngestMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class IngestStats:
    """What the ingestion did since it started."""

    batches: int = 0
    messages: int = 0
    redelivered: int = 0  # messages skipped because the table already holds them
    dead_letters: dict[str, int] = field(default_factory=dict)
    last_version: int | None = None
    next_offsets: dict[int, int] = field(default_factory=dict)


class BronzeIngestion:
    """Consumes ``topic`` in consumer group ``group`` into the bronze table."""

    def __init__(
        self,
        consumer_factory: Callable[..., Any],
        codec: AvroCodec,
        writer: BronzeWriter,
        dead_letters: DeadLetterProducer,
        topic: str,
        first_day: date,
        batch_rows: int = 50_000,
        batch_seconds: float = 1.0,
        metrics: IngestMetrics | None = None,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self.consumer_factory = consumer_factory
        self.codec = codec
        self.writer = writer
        self.dead_letters = dead_letters
        self.topic = topic
        self.first_day = first_day
        self.batch_rows = batch_rows
        self.batch_seconds = batch_seconds
        self.metrics = metrics
        self.max_backoff_seconds = max_backoff_seconds
        self.stats = IngestStats()
        self._pending: list[Any] = []  # confluent-kafka messages, read as they are
        self._next: dict[int, int] = {}  # partition -> next offset the table expects
        self._consumer: Any = None
        self._committer: DeltaCommitter | None = None
        self._generation = 0  # a new one after every resume from the table's offsets
        self._stop = threading.Event()

    # --- life cycle -----------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to write what it holds and end (safe from a signal handler)."""
        self._stop.set()

    def run(self, stop_when_caught_up: bool = False, idle_seconds: float = 2.0) -> IngestStats:
        """Consume until ``stop()`` (or, with ``stop_when_caught_up``, until every assigned
        partition is read to its end, committed, and nothing arrived for ``idle_seconds``)."""
        consumer = self.consumer_factory()
        self._consumer = consumer
        self._committer = DeltaCommitter(
            self.writer,
            self.max_backoff_seconds,
            on_failure=lambda: self.metrics.failures.labels("the").inc() if self.metrics else None,
        )
        consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._lost
        )
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                messages = self._collect(consumer)
                if messages:
                    self._hand_over(consumer, messages)
                    idle_since = time.monotonic()
                self._apply(consumer)
                if (
                    not messages
                    and stop_when_caught_up
                    and time.monotonic() - idle_since >= idle_seconds
                    and not self._committer.busy
                    and self.caught_up(consumer)
                ):
                    break
            if self._pending:
                self._hand_over(consumer, self._take_pending())
            self._committer.drain(60.0)
            self._apply(consumer)
        finally:
            self._committer.stop()
            self._apply(consumer)
            self._committer = None
            self._consumer = None
            consumer.close()
        return self.stats

    # --- rebalancing ----------------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import OFFSET_BEGINNING

        committed = self.writer.committed(self.topic, [tp.partition for tp in partitions])
        resumed = []
        for tp in partitions:
            offset = committed.get(tp.partition)
            if offset is not None:
                _low, high = consumer.get_watermark_offsets(tp, timeout=10)
                if high >= 0 and offset > high:
                    raise RuntimeError(
                        f"{self.topic}/{tp.partition}: {self.writer.table.path} holds messages "
                        f"up to offset {offset - 1}, but the partition ends at {high}: was the "
                        "topic deleted and created again? Refusing to guess where to resume; "
                        "move the table's data aside or use a new topic name."
                    )
            tp.offset = offset if offset is not None else OFFSET_BEGINNING
            self._next[tp.partition] = offset or 0
            resumed.append(f"{tp.partition}@{offset if offset is not None else 'beginning'}")
        consumer.assign(partitions)
        log.info(
            "assigned %s partition(s) %s (resuming where %s ends)",
            self.topic,
            ", ".join(resumed) or "-",
            self.writer.table.path,
        )

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        if self._pending:  # write what was read of them before another consumer takes over
            self._hand_over(consumer, self._take_pending())
        if self._committer is not None:
            self._committer.drain(60.0)
            self._apply(consumer)
        for tp in partitions:
            self._next.pop(tp.partition, None)
        log.info("revoked %s partition(s) %s", self.topic, [tp.partition for tp in partitions])

    def _lost(self, _consumer: Any, partitions: list[Any]) -> None:
        lost = {tp.partition for tp in partitions}
        dropped = [m for m in self._pending if m.partition() in lost]
        self._pending = [m for m in self._pending if m.partition() not in lost]
        for partition in lost:
            self._next.pop(partition, None)
        log.warning(
            "lost %s partition(s) %s: %d unwritten message(s) left for their new owner",
            self.topic,
            sorted(lost),
            len(dropped),
        )

    # --- the loop -------------------------------------------------------------------------
    def _take_pending(self) -> list[Any]:
        pending, self._pending = self._pending, []
        return pending

    def _collect(self, consumer: Any) -> list[Any]:
        """Messages for one batch (``[]`` after a quiet poll)."""
        deadline: float | None = None
        while len(self._pending) < self.batch_rows and not self._stop.is_set():
            timeout = 0.2 if deadline is None else deadline - time.monotonic()
            if timeout <= 0:
                break
            wanted = min(10_000, self.batch_rows - len(self._pending))
            self._take(consumer.consume(num_messages=wanted, timeout=timeout))
            if not self._pending:
                return []
            if deadline is None:
                deadline = time.monotonic() + self.batch_seconds
        return self._take_pending()

    def _take(self, messages: list[Any]) -> None:
        """Keep consumed messages for the next batch (errors logged, redeliveries skipped)."""
        for message in messages:
            if message.error() is not None:
                self._kafka_error(message.error())
                continue
            if message.offset() < self._next.get(message.partition(), 0):
                self.stats.redelivered += 1  # already in the table, or handed over: nothing
                continue
            self._pending.append(message)

    def _kafka_error(self, error: Any) -> None:
        if error.fatal():
            raise RuntimeError(f"fatal Kafka consumer error: {error}")
        log.warning("Kafka consumer: %s", error)

    def _hand_over(self, consumer: Any, messages: list[Any]) -> None:
        """Read a batch, send its dead letters, and hand it to the committer."""
        started = time.perf_counter()
        batch = self._retry(
            consumer,
            lambda: read_messages(messages, self.codec, datetime.now(UTC), self.first_day),
            "reading the batch (schema registry)",
        )
        if batch is None:
            return
        if batch.dead_letters:
            sent = self._retry(
                consumer,
                lambda: self.dead_letters.send(batch.dead_letters) or True,
                f"sending {len(batch.dead_letters)} dead letter(s)",
            )
            if sent is None:
                return
        for (_topic, partition), (_first, last, _count) in batch.offsets.items():
            self._next[partition] = last + 1  # handed over: a redelivery is skipped
        handed = Handed(batch, started, self._generation)
        assert self._committer is not None
        paused: list[Any] = []
        try:
            while not self._committer.offer(handed, timeout=0.05):
                # the committer has a batch waiting already: read the next one meanwhile, and
                # once it is full, fetch nothing more but keep the group membership
                self._apply(consumer)
                if handed.generation != self._generation:
                    return  # the offsets moved meanwhile: this batch is read again
                room = self.batch_rows - len(self._pending)
                if room > 0 and not paused:
                    self._take(consumer.consume(num_messages=min(room, 1_000), timeout=0.05))
                else:
                    if not paused:
                        paused = consumer.assignment()
                        consumer.pause(paused)
                    message = consumer.poll(0.05)
                    if message is not None:
                        self._take([message])
        finally:
            if paused:  # librdkafka fetches again from the last message delivered
                consumer.resume(paused)

    def _apply(self, consumer: Any) -> None:
        """Take the committer's results: count, log and commit Kafka offsets of what is in
        the table; resume from the table's offsets after a refused batch."""
        if self._committer is None:
            return
        for result in self._committer.results():
            if result.version is not None:
                self._committed(consumer, result)
            elif result.handed.generation == self._generation:
                log.warning("%s; re-reading from the committed offsets", result.refused)
                self._generation += 1
                self._pending = []
                self._reseek(consumer, drain=False)

    def _committed(self, consumer: Any, result: Committed) -> None:
        from confluent_kafka import TopicPartition

        batch, version = result.batch, result.version
        assert version is not None
        offsets = []
        for (topic, partition), (_first, last, _count) in batch.offsets.items():
            self.stats.next_offsets[partition] = last + 1
            offsets.append(TopicPartition(topic, partition, last + 1))
        try:  # for lag tools only: the table holds the offsets that count
            consumer.commit(offsets=offsets, asynchronous=True)
        except Exception as error:
            log.debug("committing Kafka offsets failed (harmless): %s", error)
        self.stats.batches += 1
        self.stats.messages += batch.messages
        self.stats.last_version = version
        for kind, count in batch.dead_letters_by_kind.items():
            self.stats.dead_letters[kind] = self.stats.dead_letters.get(kind, 0) + count
        if self.metrics is not None:
            self.metrics.written(batch, version, result.seconds)
            self.metrics.observe_lag(consumer, offsets)
        ranges = ", ".join(
            f"{p}:{first}-{last}" for (_t, p), (first, last, _c) in sorted(batch.offsets.items())
        )
        log.info(
            "%s v%d: %d message(s) of %s (%s), %d dead letter(s), in %.0f ms; by day %s",
            self.writer.table.path,
            version,
            batch.messages,
            self.topic,
            ranges,
            len(batch.dead_letters),
            result.seconds * 1000.0,
            batch.rows_by_day,
        )

    def _reseek(self, consumer: Any, drain: bool = True) -> None:
        """Resume every assigned partition from the offset the table records (after what was
        handed over is committed, unless ``drain`` is False)."""
        from confluent_kafka import TopicPartition

        if drain and self._committer is not None:
            self._committer.drain(60.0)
            self._apply(consumer)
        assignment = consumer.assignment()
        committed = self.writer.committed(self.topic, [tp.partition for tp in assignment])
        for tp in assignment:
            offset = committed.get(tp.partition)
            if offset is not None:
                self._next[tp.partition] = offset
                consumer.seek(TopicPartition(self.topic, tp.partition, offset))

    def _retry(self, consumer: Any, operation: Callable[[], T], what: str) -> T | None:
        """Run ``operation`` until it works, backing off (partitions paused, group membership
        kept); None when asked to stop meanwhile (the batch is then read again next time)."""
        backoff = 0.5
        paused: list[Any] = []
        try:
            while True:
                try:
                    return operation()
                except OffsetsMoved:
                    raise
                except Exception as error:
                    if self.metrics is not None:
                        self.metrics.failures.labels(what.split(" ")[0]).inc()
                    log.error("%s failed, retrying in %.1fs: %s", what, backoff, error)
                    if not paused:
                        paused = consumer.assignment()
                        consumer.pause(paused)
                    waited = 0.0
                    while waited < backoff:
                        if self._stop.is_set():
                            log.error("stopping with an unwritten batch: it is read again later")
                            self._pending = []
                            return None
                        consumer.poll(0.1)  # keeps the group membership (max.poll.interval)
                        waited += 0.1
                    backoff = min(backoff * 2, self.max_backoff_seconds)
        finally:
            if paused:
                consumer.resume(paused)
                self._reseek(consumer)

    def caught_up(self, consumer: Any) -> bool:
        """Every assigned partition is read up to its end (nothing pending)."""
        assignment = consumer.assignment()
        if not assignment or self._pending:
            return False
        for tp in assignment:
            _low, high = consumer.get_watermark_offsets(tp, timeout=5)
            if self._next.get(tp.partition, 0) < high:
                return False
        return True
