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
from mlops_assets.serve.scoring import ScoredPass

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
    """One scoring pass as logged: the champion's results and, in shadow mode, the
    challenger's."""

    scored: ScoredPass
    shadow: ShadowScores | None = None

    def __post_init__(self) -> None:
        if self.scored.features is not None:
            object.__setattr__(self, "scored", self.scored.without_frame())

    @property
    def rows(self) -> int:
        return self.scored.rows


def log_table(records: Sequence[ServedRecord]) -> pa.Table:
    """The ``served_predictions`` rows of some scoring passes, built column by column over all
    of them at once (a flush holds hundreds of passes: per-pass conversions would hold the GIL
    long enough to stall the requests being served)."""
    passes = [record.scored for record in records]
    features = pa.concat_tables([p.table for p in passes]).combine_chunks()
    rows = [p.rows for p in passes]
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        name: features.column(name).cast(LOG_SCHEMA.field(name).type)
        for name in ("transaction_id", "txn_date", "timestamp", "type", "nameOrig", "nameDest")
    }
    for name in FEATURE_COLUMNS:
        columns[name] = features.column(name).cast(pa.float64())
    sizes = [size for p in passes for size in p.sizes]
    columns |= {
        "fraud_score": pa.array(np.concatenate([p.scores for p in passes]), pa.float64()),
        "is_fraud_predicted": pa.array(np.concatenate([p.decisions for p in passes]), pa.bool_()),
        "threshold": pa.array(np.concatenate([p.row_thresholds() for p in passes]), pa.float64()),
        "model_name": pa.array(np.repeat([p.model.model.name for p in passes], rows), pa.string()),
        "model_alias": pa.array(np.concatenate([p.row_aliases() for p in passes]), pa.string()),
        "model_version": pa.array(np.concatenate([p.row_versions() for p in passes]), pa.int64()),
        "endpoint": pa.array(
            np.repeat([e for p in passes for e in p.endpoints], sizes), pa.string()
        ),
        "served_at": pa.array(
            np.repeat(
                np.array([p.served_at.replace(tzinfo=None) for p in passes], "datetime64[us]"), rows
            ),
            pa.timestamp("us"),
        ).cast(pa.timestamp("us", tz="UTC")),
        "latency_ms": pa.array(
            np.repeat([lat for p in passes for lat in p.latencies_ms], sizes), pa.float64()
        ),
    }
    shadowed = np.repeat([record.shadow is not None for record in records], rows)
    versions = np.repeat(
        [int(record.shadow.version) if record.shadow else 0 for record in records], rows
    )
    scores = np.concatenate(
        [r.shadow.scores if r.shadow else np.zeros(r.rows) for r in records]
    ).astype(np.float64)
    decisions = np.concatenate(
        [r.shadow.decisions if r.shadow else np.zeros(r.rows, bool) for r in records]
    )
    missing = ~shadowed
    columns |= {
        "shadow_model_version": pa.array(versions, pa.int64(), mask=missing),
        "shadow_fraud_score": pa.array(scores, pa.float64(), mask=missing),
        "shadow_is_fraud_predicted": pa.array(decisions, pa.bool_(), mask=missing),
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
        self._failures = 0
        self._writing_rows = 0

    @property
    def pending_rows(self) -> int:
        """Rows not written yet (waiting, or in the write under way)."""
        return self._pending_rows + self._writing_rows

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
            # after failed writes, wait longer (up to 12 intervals) before the next attempt
            deadline = time.monotonic() + self.flush_seconds * min(2**self._failures, 12)

    def flush(self) -> int:
        """Write everything pending as one Delta append; returns the rows written."""
        with self._flush_lock:
            with self._lock:
                records, rows = self._pending, self._pending_rows
                self._pending, self._pending_rows = [], 0
                self._writing_rows = rows
            if not records:
                return 0
            started = time.perf_counter()
            try:
                table = log_table(records)
                built = time.perf_counter()
                version = self._write(table)
            except Exception as error:
                self._failures += 1
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
            with self._lock:
                self._writing_rows = 0
            self.written_rows += rows
            self._failures = 0
            self.last_version = version
            self.last_error = None
            self._on_written(rows)
            log.info(
                "prediction log: wrote %d prediction(s) in %.0f ms (table built in %.0f ms, "
                "Delta version %s)",
                rows,
                (time.perf_counter() - started) * 1000.0,
                (built - started) * 1000.0,
                version,
            )
            return rows

    def _requeue(self, records: list[ServedRecord], rows: int) -> None:
        with self._lock:
            self._writing_rows = 0
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
