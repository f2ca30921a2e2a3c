"""Every served prediction, appended to the ``served_predictions`` Delta table in micro-batches.

Rows collect in memory and are written as one Delta append (partitioned by the transaction's
``txn_date``) every ``flush_seconds`` or ``flush_rows`` rows, by a thread of its own, so the
request path only hands over a reference. What a kill can lose is the unflushed micro-batch:
every write is logged with its row count and Delta version, and a stop flushes what is left
(or says how many rows it could not write). A failed write keeps its rows for the next attempt,
up to ``max_pending_rows``; beyond that the oldest are dropped, counted and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mlops_assets.features.definition import FEATURE_COLUMNS
from mlops_assets.serve.scoring import Scored

log = logging.getLogger(__name__)

#: The columns of ``served_predictions`` (the model inputs as float64, as the model sees them).
LOG_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("txn_date", pa.date32()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("type", pa.string()),
        ("nameOrig", pa.string()),
        ("nameDest", pa.string()),
        *[(name, pa.float64()) for name in FEATURE_COLUMNS],
        ("fraud_score", pa.float64()),
        ("is_fraud_predicted", pa.bool_()),
        ("threshold", pa.float64()),
        ("model_name", pa.string()),
        ("model_alias", pa.string()),
        ("model_version", pa.int64()),
        ("endpoint", pa.string()),
        ("served_at", pa.timestamp("us", tz="UTC")),
        ("latency_ms", pa.float64()),
        ("shadow_model_version", pa.int64()),
        ("shadow_fraud_score", pa.float64()),
        ("shadow_is_fraud_predicted", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class ShadowScores:
    """The shadow model's verdict on one request's rows."""

    version: str
    scores: np.ndarray
    decisions: np.ndarray


@dataclass(frozen=True)
class ServedRecord:
    """One request as logged: the champion's result and, in shadow mode, the challenger's."""

    scored: Scored
    shadow: ShadowScores | None = None

    @property
    def rows(self) -> int:
        return len(self.scored.scores)


def log_table(records: Sequence[ServedRecord]) -> pa.Table:
    """The ``served_predictions`` rows of some served requests."""
    return pa.concat_tables([_record_table(record) for record in records])


def _record_table(record: ServedRecord) -> pa.Table:
    scored, shadow, n = record.scored, record.shadow, record.rows
    frame = scored.features
    model = scored.model
    columns: dict[str, pa.Array] = {
        "transaction_id": pa.array(frame["transaction_id"], pa.string()),
        "txn_date": pa.array(frame["txn_date"], pa.date32()),
        "timestamp": pa.array(frame["timestamp"]).cast(pa.timestamp("us", tz="UTC")),
        "type": pa.array(frame["type"], pa.string()),
        "nameOrig": pa.array(frame["nameOrig"], pa.string()),
        "nameDest": pa.array(frame["nameDest"], pa.string()),
    }
    for name in FEATURE_COLUMNS:
        columns[name] = pa.array(frame[name].to_numpy(dtype=np.float64))
    columns |= {
        "fraud_score": pa.array(scored.scores, pa.float64()),
        "is_fraud_predicted": pa.array(scored.decisions, pa.bool_()),
        "threshold": pa.repeat(pa.scalar(model.threshold, pa.float64()), n),
        "model_name": pa.repeat(pa.scalar(model.model.name), n),
        "model_alias": pa.repeat(pa.scalar(model.model.alias), n),
        "model_version": pa.repeat(pa.scalar(int(model.version), pa.int64()), n),
        "endpoint": pa.repeat(pa.scalar(scored.endpoint), n),
        "served_at": pa.repeat(pa.scalar(scored.served_at, pa.timestamp("us", tz="UTC")), n),
        "latency_ms": pa.repeat(pa.scalar(scored.latency_ms, pa.float64()), n),
    }
    if shadow is None:
        columns |= {
            "shadow_model_version": pa.nulls(n, pa.int64()),
            "shadow_fraud_score": pa.nulls(n, pa.float64()),
            "shadow_is_fraud_predicted": pa.nulls(n, pa.bool_()),
        }
    else:
        columns |= {
            "shadow_model_version": pa.repeat(pa.scalar(int(shadow.version), pa.int64()), n),
            "shadow_fraud_score": pa.array(shadow.scores, pa.float64()),
            "shadow_is_fraud_predicted": pa.array(shadow.decisions, pa.bool_()),
        }
    return pa.table(columns, schema=LOG_SCHEMA)


class PredictionLog:
    """Buffers served records and appends them with ``write`` (a table -> Delta version)."""

    def __init__(
        self,
        write: Callable[[pa.Table], int | None],
        flush_rows: int = 5000,
        flush_seconds: float = 5.0,
        max_pending_rows: int = 100_000,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        if flush_rows < 1 or flush_seconds <= 0 or max_pending_rows < flush_rows:
            raise ValueError(
                "prediction log needs flush_rows >= 1, flush_seconds > 0 and "
                f"max_pending_rows >= flush_rows (got {flush_rows}, {flush_seconds}, "
                f"{max_pending_rows})"
            )
        self._write = write
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_pending_rows = max_pending_rows
        self._on_written = on_written or (lambda _: None)
        self._on_dropped = on_dropped or (lambda _: None)
        self._pending: list[ServedRecord] = []
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._flush_lock = threading.Lock()  # one write at a time
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.written_rows = 0
        self.dropped_rows = 0
        self.last_version: int | None = None
        self.last_error: str | None = None

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def add(self, records: Sequence[ServedRecord]) -> None:
        """Queue records for the next micro-batch (never blocks on a write)."""
        with self._lock:
            self._pending.extend(records)
            self._pending_rows += sum(r.rows for r in records)
            if self._pending_rows >= self.flush_rows:
                self._wake.notify()

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write what is pending; says what could not be written."""
        if self._thread is not None:
            with self._lock:
                self._stopping = True
                self._wake.notify()
            self._thread.join()
            self._thread = None
        self.flush()
        if self._pending_rows:
            log.error(
                "prediction log: %d prediction(s) could not be written at shutdown and are "
                "lost (%s)",
                self._pending_rows,
                self.last_error,
            )

    def _run(self) -> None:
        deadline = time.monotonic() + self.flush_seconds
        while True:
            with self._lock:
                while (
                    not self._stopping
                    and self._pending_rows < self.flush_rows
                    and time.monotonic() < deadline
                ):
                    self._wake.wait(max(0.0, deadline - time.monotonic()))
                if self._stopping:
                    return
            self.flush()
            deadline = time.monotonic() + self.flush_seconds

    def flush(self) -> int:
        """Write everything pending as one Delta append; returns the rows written."""
        with self._flush_lock:
            with self._lock:
                records, rows = self._pending, self._pending_rows
                self._pending, self._pending_rows = [], 0
            if not records:
                return 0
            started = time.perf_counter()
            try:
                version = self._write(log_table(records))
            except Exception as error:
                self.last_error = f"{type(error).__name__}: {error}"
                self._requeue(records, rows)
                log.error(
                    "prediction log: writing %d prediction(s) failed, kept for the next "
                    "attempt (%d pending): %s",
                    rows,
                    self._pending_rows,
                    self.last_error,
                )
                return 0
            self.written_rows += rows
            self.last_version = version
            self.last_error = None
            self._on_written(rows)
            log.info(
                "prediction log: wrote %d prediction(s) in %.0f ms (Delta version %s)",
                rows,
                (time.perf_counter() - started) * 1000.0,
                version,
            )
            return rows

    def _requeue(self, records: list[ServedRecord], rows: int) -> None:
        with self._lock:
            self._pending = records + self._pending
            self._pending_rows += rows
            dropped = 0
            while self._pending_rows > self.max_pending_rows and self._pending:
                oldest = self._pending.pop(0)
                self._pending_rows -= oldest.rows
                dropped += oldest.rows
        if dropped:
            self.dropped_rows += dropped
            self._on_dropped(dropped)
            log.error(
                "prediction log: dropped the %d oldest unwritten prediction(s): more than "
                "%d were waiting",
                dropped,
                self.max_pending_rows,
            )
