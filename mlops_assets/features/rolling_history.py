"""An account history that grows as a stream goes: what the streaming scorer computes window
features over (the in-process runner, ``online_engine.py``), the same way the model service
uses a snapshot of validated days.

It starts from a table of validated rows (the latest days from the lake, and the topic's last
24 hours replayed after a restart) and takes every scored transaction after its pass, so each
transaction sees the ones before it, as batch scoring sees a day. Rows older than the longest
window (plus a margin for late messages) are dropped now and then. A transaction appended
again (a redelivered message, a streamed row also in the validated snapshot) is kept once.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlops_assets.features.definition import WINDOW_AGGREGATES, WINDOWS
from mlops_assets.features.duckdb_engine import event_seconds

_GROWTH = 2


def _floats(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), np.float64)


class RollingHistory:
    """Validated rows indexed by each window's account column, appendable and prunable."""

    def __init__(self, capacity: int = 1024) -> None:
        self._partition_columns = sorted({window.partition_by for window in WINDOWS})
        self._value_columns = sorted({a.column for a in WINDOW_AGGREGATES if a.column})
        self._size = 0
        self._seconds = np.empty(capacity, np.int64)
        self._values = {c: np.empty(capacity, np.float64) for c in self._value_columns}
        self._ids: list[str] = []
        self._known: set[str] = set()
        self._accounts: dict[str, dict[str, list[int]]] = {c: {} for c in self._partition_columns}

    @property
    def rows(self) -> int:
        return self._size

    @property
    def seconds(self) -> np.ndarray:
        return self._seconds[: self._size]

    @property
    def values(self) -> dict[str, np.ndarray]:
        return {c: array[: self._size] for c, array in self._values.items()}

    def rows_of(self, column: str, account: str) -> np.ndarray:
        return np.asarray(self._accounts[column].get(account, ()), np.int64)

    def ids_of(self, rows: np.ndarray) -> list[str]:
        return [self._ids[i] for i in rows.tolist()]

    def __contains__(self, transaction_id: str) -> bool:
        return transaction_id in self._known

    @property
    def newest_seconds(self) -> int | None:
        return int(self._seconds[: self._size].max()) if self._size else None

    def append(self, table: pa.Table) -> int:
        """Add validated rows (the columns the features read); returns how many were new."""
        if table.num_rows == 0:
            return 0
        ids = table.column("transaction_id").to_pylist()
        fresh = [i for i, transaction_id in enumerate(ids) if transaction_id not in self._known]
        if not fresh:
            return 0
        if len(fresh) < len(ids):
            table = table.take(pa.array(fresh, pa.int64()))
            ids = [ids[i] for i in fresh]
        for column in ("timestamp", *self._value_columns):
            if table.column(column).null_count:
                raise ValueError(f"history rows: {column} has null values")
        count = table.num_rows
        self._reserve(self._size + count)
        start, end = self._size, self._size + count
        self._seconds[start:end] = np.asarray(
            event_seconds(table.column("timestamp")).to_numpy(zero_copy_only=False), np.int64
        )
        for column in self._value_columns:
            self._values[column][start:end] = _floats(table.column(column))
        for column in self._partition_columns:
            accounts = self._accounts[column]
            for position, account in enumerate(table.column(column).to_pylist(), start):
                rows = accounts.get(account)
                if rows is None:
                    accounts[account] = [position]
                else:
                    rows.append(position)
        self._ids.extend(ids)
        self._known.update(ids)
        self._size = end
        return count

    def _reserve(self, size: int) -> None:
        if size <= len(self._seconds):
            return
        capacity = max(size, len(self._seconds) * _GROWTH)
        self._seconds = np.resize(self._seconds, capacity)
        for column, array in self._values.items():
            self._values[column] = np.resize(array, capacity)

    def prune(self, before_seconds: int) -> int:
        """Drop the rows older than ``before_seconds``; returns how many were dropped."""
        keep = np.flatnonzero(self.seconds >= before_seconds)
        dropped = self._size - len(keep)
        if dropped == 0:
            return 0
        remap = np.full(self._size, -1, np.int64)
        remap[keep] = np.arange(len(keep))
        self._seconds = self._seconds[keep].copy()
        self._values = {c: a[keep].copy() for c, a in self.values.items()}
        old_ids = self._ids
        self._ids = [old_ids[i] for i in keep.tolist()]
        self._known = set(self._ids)
        for column, accounts in self._accounts.items():
            kept: dict[str, list[int]] = {}
            for account, rows in accounts.items():
                moved = [int(remap[r]) for r in rows if remap[r] >= 0]
                if moved:
                    kept[account] = moved
            self._accounts[column] = kept
        self._size = len(keep)
        return dropped
