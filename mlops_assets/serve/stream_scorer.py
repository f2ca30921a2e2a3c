"""The streaming scorer: every transaction on the topic scored by the champion as it arrives,
with the model service's in-process features, and its decision sent to the decisions topic.

Each message is read with the registry (as the bronze ingestion reads it) and checked against
the contract's one-row rules: a transaction that breaks them gets a ``rejected`` decision with
the rule, and is not scored (validation quarantines it too). The others wait in an event-time
aligner (``event_time.py``) until every partition has passed their second, then are scored in
one pass: window features over the rolling account history (the latest validated days, the
topic's last 24 hours replayed after a restart, and every transaction scored since), the model
the holder has at that moment, the model's threshold. Decisions go to the decisions topic
(Avro, keyed by transaction id), every scored row to ``served_predictions`` (endpoint
``stream``). A moved ``champion`` alias is picked up by the periodic refresh without a restart.

Delivery: the group's offsets are committed (every ``commit_seconds``) only for decisions the
brokers acknowledged, with the Kafka time of the last one, so a restart replays the history
from 24 hours before it and scores what was not decided; a crash can send a decision twice,
never lose one, and a repeated decision is identical (same model version and history).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from mlops_assets.features.definition import LOOKBACK_SECONDS
from mlops_assets.features.online_engine import INPUT_SCHEMA, compute_features_online
from mlops_assets.features.rolling_history import RollingHistory
from mlops_assets.serve.event_time import EventTimeAligner
from mlops_assets.serve.model_holder import LoadedModel, ModelHolder
from mlops_assets.serve.prediction_log import PredictionLog, ServedRecord
from mlops_assets.serve.scoring import ScoredPass, score_frame
from mlops_assets.serve.stream_metrics import ScorerMetrics
from mlops_assets.stream.codec import AvroCodec, UndecodableMessage, WriterSchema
from mlops_assets.stream.messages import StreamMessage
from mlops_assets.validate.one_row import first_violation

log = logging.getLogger(__name__)
FLAGGED, CLEARED, REJECTED = "flagged", "cleared", "rejected"
#: how far before the first message to decide the history is replayed (late messages margin)
REPLAY_MARGIN_SECONDS = 3600
_MICROS = 1_000_000


@dataclass(frozen=True)
class Pending:
    """A readable, contract-abiding transaction waiting for its score."""

    message: StreamMessage
    transaction_id: str
    record: dict[str, Any]
    received: float  # time.perf_counter() when consumed

    @property
    def seconds(self) -> int:
        return int(self.record["timestamp"] // _MICROS)


def streamed_transaction_id(record: dict[str, Any] | None, message: StreamMessage) -> str:
    """The producer's id, else ``<topic>:<partition>:<offset>`` (as validation names it)."""
    given = (record or {}).get("transaction_id")
    return given if given else f"{message.topic}:{message.partition}:{message.offset}"


def input_table(pending: list[Pending]) -> pa.Table:
    """The rows the features read, in the validated table's types."""
    records = [p.record for p in pending]
    micros = pa.array([r["timestamp"] for r in records], pa.int64())
    columns: dict[str, Any] = {
        name: pa.array([r[name] for r in records], INPUT_SCHEMA.field(name).type)
        for name in INPUT_SCHEMA.names
        if name not in ("timestamp", "transaction_id", "txn_date", "isFraud")
    }
    columns["isFraud"] = pa.array([r["isFraud"] for r in records], pa.int8())
    columns["timestamp"] = micros.cast(pa.timestamp("us", tz="UTC"))
    columns["transaction_id"] = pa.array([p.transaction_id for p in pending], pa.string())
    columns["txn_date"] = pa.array(
        [date(1970, 1, 1) + timedelta(days=m // (86_400 * _MICROS)) for m in micros.to_pylist()],
        pa.date32(),
    )
    return pa.table({name: columns[name] for name in INPUT_SCHEMA.names}, schema=INPUT_SCHEMA)


class StreamScorer:
    """Consumes the transactions topic in its own group and decides every transaction."""

    def __init__(
        self,
        consumer_factory: Any,
        codec: AvroCodec,
        decisions: WriterSchema,
        decision_codec: AvroCodec,
        producer: Any,
        holder: ModelHolder,
        topic: str,
        decisions_topic: str,
        first_day: date,
        history: RollingHistory | None = None,
        prediction_log: PredictionLog | None = None,
        metrics: ScorerMetrics | None = None,
        max_wait_seconds: float = 5.0,
        commit_seconds: float = 1.0,
        max_pass_rows: int = 5_000,
        max_held_per_partition: int = 20_000,
    ) -> None:
        self.consumer_factory = consumer_factory
        self.codec = codec
        self.encode_decision = decision_codec.encoder(decisions)
        self.producer = producer
        self.holder = holder
        self.topic = topic
        self.decisions_topic = decisions_topic
        self.first_day = first_day
        self.history = history or RollingHistory()
        self.prediction_log = prediction_log
        self.metrics = metrics or ScorerMetrics()
        self.aligner = EventTimeAligner(max_wait_seconds)
        self.commit_seconds = commit_seconds
        self.max_pass_rows = max_pass_rows
        self.max_held_per_partition = max_held_per_partition
        self._paused: set[int] = set()
        self.decided = 0
        self.rejected = 0
        self.replayed = 0
        self._resume_at: dict[int, int] = {}  # partition -> first offset to decide (not replay)
        self._last_time: dict[int, int] = {}  # partition -> Kafka time (ms) of the last decided
        self._failures: list[str] = []
        self._stop = threading.Event()
        self._pruned_at = 0

    def stop(self) -> None:
        self._stop.set()

    # --- the loop -------------------------------------------------------------------------
    def run(self, stop_when_caught_up: bool = False, idle_seconds: float = 2.0) -> None:
        """Score until ``stop()`` (or, with ``stop_when_caught_up``, until every partition is
        read to its end, nothing is held and nothing arrived for ``idle_seconds``)."""
        while self.holder.current is None and not self._stop.is_set():
            outcome = self.holder.reload()
            if self.holder.current is None:
                log.error("no model to score with yet (%s); trying again in 5 s", outcome.error)
                self._stop.wait(5.0)
        # what is loaded now lives as long as the scorer: out of the garbage collector's
        # sight, a full collection no longer walks the libraries, model and history
        gc.freeze()
        consumer = self.consumer_factory()
        consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._lost
        )
        committed_at = time.monotonic()
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                polled = time.perf_counter()
                messages = self._poll(consumer, 0.02 if self.aligner.held else 0.2)
                polled = time.perf_counter() - polled
                if messages:
                    idle_since = time.monotonic()
                self._read(messages)
                at_end = self._at_end(consumer)
                self.aligner.polled({m.partition() for m in messages}, at_end, polled)
                released = self.aligner.release(at_end)
                self._backpressure(consumer)
                for start in range(0, len(released), self.max_pass_rows):
                    self._score(released[start : start + self.max_pass_rows])
                self.producer.poll(0)
                if time.monotonic() - committed_at >= self.commit_seconds:
                    self._commit(consumer)
                    committed_at = time.monotonic()
                self.metrics.held.set(self.aligner.held)
                if (
                    stop_when_caught_up
                    and not messages
                    and not self.aligner.held
                    and time.monotonic() - idle_since >= idle_seconds
                    and consumer.assignment()
                    and len(at_end) == len(consumer.assignment())
                ):
                    break
            self._score(self.aligner.release_all())
            self._commit(consumer, wait=True)
            log.info("scored %d transaction(s): %s", self.decided, self.metrics.summary())
        finally:
            consumer.close()
            gc.unfreeze()  # a scorer run inside another process (the demo, tests) hands back

    @staticmethod
    def _poll(consumer: Any, timeout: float) -> list[Any]:
        """The first message as soon as there is one (waiting up to ``timeout``), then every
        message already fetched: no wait at a low rate, whole passes under a backlog
        (``consume`` alone waits for a full batch or its timeout)."""
        first = consumer.poll(timeout)
        if first is None:
            return []
        return [first, *consumer.consume(num_messages=1_000, timeout=0)]

    def _read(self, messages: list[Any]) -> None:
        replayed: list[Pending] = []
        now = time.perf_counter()
        for raw in messages:
            if raw.error() is not None:
                if raw.error().fatal():
                    raise RuntimeError(f"fatal Kafka consumer error: {raw.error()}")
                log.warning("Kafka consumer: %s", raw.error())
                continue
            message = StreamMessage.from_kafka(raw)
            try:
                _writer, record = self.codec.decode(message.value)
            except UndecodableMessage as error:
                self.aligner.seen(message.partition, message.offset, None)
                if message.offset >= self._resume_at.get(message.partition, 0):
                    self._reject(message, None, f"message: {error}")
                continue
            pending = Pending(message, streamed_transaction_id(record, message), record, now)
            replay = message.offset < self._resume_at.get(message.partition, 0)
            violation = first_violation(record)
            day = date(1970, 1, 1) + timedelta(seconds=pending.seconds)
            if violation is None and day < self.first_day:
                violation = f"timestamp: its day {day} is before the first partition"
            if violation is not None:
                self.aligner.seen(message.partition, message.offset, pending.seconds)
                if not replay:
                    self._reject(message, pending, str(violation))
                continue
            if replay:
                self.aligner.seen(message.partition, message.offset, pending.seconds)
                replayed.append(pending)
            else:
                self.aligner.hold(message.partition, message.offset, pending.seconds, pending)
        if replayed:
            self.replayed += self.history.append(input_table(replayed))

    def _backpressure(self, consumer: Any) -> None:
        """Pause a partition that holds ``max_held_per_partition`` transactions waiting for the
        others (a backlog read one partition after another), resume it from where it was once
        half of them are decided: memory stays bounded and the others get fetched."""
        from confluent_kafka import TopicPartition

        for partition, held in self.aligner.held_by_partition().items():
            if partition not in self._paused and held >= self.max_held_per_partition:
                consumer.pause([TopicPartition(self.topic, partition)])
                self._paused.add(partition)
            elif partition in self._paused and held <= self.max_held_per_partition // 2:
                tp = TopicPartition(self.topic, partition)
                consumer.resume([tp])
                consumer.seek(
                    TopicPartition(self.topic, partition, self.aligner.next_offsets()[partition])
                )
                self._paused.discard(partition)

    def _at_end(self, consumer: Any) -> set[int]:
        """The partitions read up to their end (as of the last fetch)."""
        from confluent_kafka import TopicPartition

        at_end = set()
        for partition, seen in self.aligner.next_offsets().items():
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), cached=True
            )
            if high >= 0 and seen >= high:
                at_end.add(partition)
        return at_end

    # --- scoring and deciding -------------------------------------------------------------
    def _score(self, pending: list[Pending]) -> None:
        if not pending:
            return
        model = self.holder.current
        assert model is not None
        began = time.perf_counter()
        table = input_table(pending)
        features_table = compute_features_online(table, self.history)
        features = features_table.to_pandas()
        scores, decisions = score_frame(model, features)
        scored_at = datetime.now(UTC)
        finished = time.perf_counter()
        self.history.append(table)
        for item, score, flagged in zip(pending, scores.tolist(), decisions.tolist(), strict=True):
            self._send(
                item.message, item, FLAGGED if flagged else CLEARED, score, model, None, scored_at
            )
        self.decided += len(pending)
        self.metrics.scored(pending, decisions, model, finished)
        self.metrics.pass_seconds.observe(time.perf_counter() - began)
        self.metrics.history_rows.set(self.history.rows)
        if self.prediction_log is not None:
            self.prediction_log.add(
                [
                    ServedRecord(
                        ScoredPass(
                            model=model,
                            table=features_table,
                            features=features,
                            transaction_ids=features["transaction_id"].to_numpy(),
                            scores=scores,
                            decisions=decisions,
                            endpoints=["stream"] * len(pending),
                            sizes=[1] * len(pending),
                            latencies_ms=[(finished - p.received) * 1000.0 for p in pending],
                            served_at=scored_at,
                        )
                    )
                ]
            )
        self._prune(min(p.seconds for p in pending))

    def _reject(self, message: StreamMessage, pending: Pending | None, reason: str) -> None:
        self._send(message, pending, REJECTED, None, None, reason, datetime.now(UTC))
        self.rejected += 1
        self.metrics.decisions.labels(REJECTED).inc()

    def _send(
        self,
        message: StreamMessage,
        pending: Pending | None,
        decision: str,
        score: float | None,
        model: LoadedModel | None,
        reason: str | None,
        scored_at: datetime,
    ) -> None:
        record = pending.record if pending else None
        transaction_id = (
            pending.transaction_id if pending else streamed_transaction_id(None, message)
        )
        value = self.encode_decision(
            {
                "transaction_id": transaction_id,
                "decision": decision,
                "fraud_score": score,
                "threshold": model.threshold if model else None,
                "model_name": model.model.name if model else None,
                "model_version": int(model.version) if model else None,
                "reason": reason,
                "nameOrig": record.get("nameOrig") if record else None,
                "transaction_timestamp": record.get("timestamp") if record else None,
                "source_partition": message.partition,
                "source_offset": message.offset,
                "scored_at": int(scored_at.timestamp() * _MICROS),
            }
        )
        while True:
            try:
                self.producer.produce(
                    self.decisions_topic,
                    value=value,
                    key=transaction_id.encode(),
                    on_delivery=self._delivered,
                )
                break
            except BufferError:
                self.producer.poll(0.05)
        if message.timestamp_ms is not None:
            self._last_time[message.partition] = message.timestamp_ms

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            self._failures.append(str(error))

    def _prune(self, scored_from: int) -> None:
        """Drop the history no window of what is still to score reaches: older than a day
        (and the late-message margin) before the earliest transaction of the pass just scored
        or still held; never by the history's newest row, which a snapshot or a replay can put
        far ahead of the scoring."""
        watermark = min(scored_from, self.aligner.oldest_held_seconds() or scored_from)
        if watermark - self._pruned_at < REPLAY_MARGIN_SECONDS:
            return
        self._pruned_at = watermark
        cutoff = watermark - LOOKBACK_SECONDS - REPLAY_MARGIN_SECONDS
        # rebuilding the index costs a pause: only once most of it is out of every window
        # (about once a day of event time in steady state)
        if np.count_nonzero(self.history.seconds < cutoff) * 2 > self.history.rows:
            started = time.perf_counter()
            dropped = self.history.prune(cutoff)
            log.info(
                "history: dropped %d row(s) older than a day before the scoring, %d kept, "
                "in %.0f ms",
                dropped,
                self.history.rows,
                (time.perf_counter() - started) * 1000.0,
            )

    # --- offsets --------------------------------------------------------------------------
    def _commit(self, consumer: Any, wait: bool = False) -> None:
        """Commit the offsets of every decision the brokers have (never one they do not);
        ``wait`` for the commit itself (before partitions are handed over, at the end)."""
        from confluent_kafka import TopicPartition

        remaining = self.producer.flush(30)
        if remaining or self._failures:
            failures, self._failures = self._failures, []
            raise RuntimeError(
                f"{remaining + len(failures)} decision(s) to {self.decisions_topic} were not "
                f"acknowledged ({'; '.join(failures[:3]) or 'flush timed out'}): not "
                "committing; they are decided again after a restart"
            )
        offsets = [
            TopicPartition(
                self.topic,
                partition,
                max(offset, self._resume_at.get(partition, 0)),  # a replay is not a decision
                str(self._last_time.get(partition, "")),
            )
            for partition, offset in self.aligner.committable().items()
            if max(offset, self._resume_at.get(partition, 0)) > 0
        ]
        if offsets:
            try:  # asynchronous while running: a failed commit is covered by the next one
                consumer.commit(offsets=offsets, asynchronous=not wait)
            except Exception as error:  # a rebalance under way: the next round commits
                log.warning("committing the scorer's offsets failed: %s", error)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        committed = consumer.committed(partitions, timeout=10)
        replays = []
        for tp, done in zip(partitions, committed, strict=True):
            if done.offset is None or done.offset < 0:
                tp.offset = OFFSET_BEGINNING
                self._resume_at[tp.partition] = 0
                self.aligner.assign(tp.partition, 0)
                continue
            last_ms = int(done.metadata) if done.metadata else int(time.time() * 1000)
            since = last_ms - (LOOKBACK_SECONDS + REPLAY_MARGIN_SECONDS) * 1000
            start = consumer.offsets_for_times(
                [TopicPartition(self.topic, tp.partition, since)], timeout=10
            )[0].offset
            start = done.offset if start < 0 else min(start, done.offset)
            tp.offset = start
            self._resume_at[tp.partition] = done.offset
            self._last_time[tp.partition] = last_ms
            self.aligner.assign(tp.partition, start)
            replays.append(f"{tp.partition}: replaying {start}-{done.offset - 1}")
        consumer.assign(partitions)
        log.info(
            "scoring %s partition(s) %s%s",
            self.topic,
            [tp.partition for tp in partitions],
            f" ({'; '.join(replays)} into the history)" if replays else "",
        )

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self._score(self.aligner.release_all())
        self._commit(consumer, wait=True)
        for tp in partitions:
            self.aligner.revoke(tp.partition)

    def _lost(self, _consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            dropped = self.aligner.revoke(tp.partition)
            log.warning(
                "lost partition %s: %d held transaction(s) left to its new owner",
                tp.partition,
                len(dropped),
            )


def load_history_table(lake: Any, days: int) -> pa.Table:
    """The validated rows of the latest ``days`` days (the columns the features read)."""
    from mlops_assets.tables import VALIDATED_TRANSACTIONS

    if lake.version(VALIDATED_TRANSACTIONS) is None:
        return INPUT_SCHEMA.empty_table()
    latest = lake.days(VALIDATED_TRANSACTIONS)[-days:]
    table = lake.read(VALIDATED_TRANSACTIONS, days=latest, columns=list(INPUT_SCHEMA.names))
    return table.select(INPUT_SCHEMA.names).cast(INPUT_SCHEMA)
