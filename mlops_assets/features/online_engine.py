"""Run the feature definition on a few transactions at a time, in process (the model service).

DuckDB runs the feature query in 3-6 ms however few its rows are (planning, optimizing and
setting up two window operators), which alone spends a request's latency budget. This runner
computes the same definition (``features/definition.py``) for a handful of rows in well under a
millisecond:

- every window aggregate of ``WINDOW_AGGREGATES`` with NumPy, over the rows of the window's
  account from an index of the history and over the request's other rows, exactly as the
  window declares it (``lookback_seconds`` before, up to one second before);
- then every expression of ``OUTPUT_EXPRESSIONS``, its window terms replaced by those values,
  as Polars SQL expressions.

Nothing here restates a feature: a new expression or window aggregate in the definition is
computed here as it is, and the parity tests (``test_features.py``) run every case through both
DuckDB and this runner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from mlops_assets.features.definition import (
    AGGREGATE_TERM,
    INPUT_COLUMNS,
    OUTPUT_EXPRESSIONS,
    WINDOW_AGGREGATES,
    WINDOWS,
)
from mlops_assets.features.duckdb_engine import compute_features_duckdb, event_seconds

_WINDOW_COLUMN = "__window_{}"

#: The validated columns the features read, with the types the lake stores them in.
INPUT_SCHEMA = pa.schema(
    [
        ("amount", pa.float64()),
        ("isFraud", pa.int8()),
        ("nameDest", pa.string()),
        ("nameOrig", pa.string()),
        ("newbalanceDest", pa.float64()),
        ("newbalanceOrig", pa.float64()),
        ("oldbalanceDest", pa.float64()),
        ("oldbalanceOrg", pa.float64()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("transaction_id", pa.string()),
        ("txn_date", pa.date32()),
        ("type", pa.string()),
    ]
)
assert set(INPUT_SCHEMA.names) == set(INPUT_COLUMNS), "feature inputs changed"


def _event_seconds(timestamps: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Whole UTC epoch seconds, exactly as the batch query gets them."""
    return np.asarray(event_seconds(timestamps).to_numpy(zero_copy_only=False), np.int64)


def _require_values(table: pa.Table, what: str) -> None:
    """The window aggregates add values up as the contract leaves them: never null."""
    for column in sorted({a.column for a in WINDOW_AGGREGATES if a.column} | {"timestamp"}):
        if table.column(column).null_count:
            raise ValueError(f"{what}: {column} has null values (the contract forbids them)")


@dataclass(frozen=True)
class IndexedHistory:
    """Validated rows indexed by each window's account column: only what the windows read
    (event seconds, the aggregated columns, transaction ids), not the rows themselves."""

    seconds: np.ndarray  # event seconds of every row
    transaction_ids: pa.StringArray  # read only for a window's few rows (replays)
    values: dict[str, np.ndarray]  # the columns the aggregates read, as float64
    accounts: dict[str, dict[str, np.ndarray]] = field(repr=False)  # column -> account -> rows

    @property
    def rows(self) -> int:
        return len(self.seconds)

    @classmethod
    def build(cls, table: pa.Table) -> IndexedHistory:
        _require_values(table, "history")
        table = table.combine_chunks()
        seconds = _event_seconds(table.column("timestamp"))
        frame = pl.from_arrow(
            table.select(sorted({window.partition_by for window in WINDOWS}))
        ).with_row_index("_row")
        assert isinstance(frame, pl.DataFrame)
        accounts: dict[str, dict[str, np.ndarray]] = {}
        for column in frame.columns[1:]:
            grouped = frame.group_by(column).agg(pl.col("_row"))
            accounts[column] = {
                key: np.asarray(rows, dtype=np.int64)
                for key, rows in zip(
                    grouped.get_column(column).to_list(),
                    grouped.get_column("_row").to_list(),
                    strict=True,
                )
            }
        return cls(
            seconds=seconds,
            transaction_ids=table.column("transaction_id").cast(pa.string()).combine_chunks(),
            values={
                column: _floats(table.column(column))
                for column in {a.column for a in WINDOW_AGGREGATES if a.column}
            },
            accounts=accounts,
        )

    def rows_of(self, column: str, account: str) -> np.ndarray:
        return self.accounts[column].get(account, _NO_ROWS)

    def ids_of(self, rows: np.ndarray) -> list[str]:
        """The transaction ids of some rows."""
        return self.transaction_ids.take(rows).to_pylist()


_NO_ROWS = np.empty(0, np.int64)


def _floats(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), np.float64)


@cache
def _expressions() -> tuple[pl.Expr, ...]:
    """The output expressions as Polars expressions, window terms read from their columns."""
    column_of = {a.sql: _WINDOW_COLUMN.format(i) for i, a in enumerate(WINDOW_AGGREGATES)}
    return tuple(
        pl.sql_expr(AGGREGATE_TERM.sub(lambda term: column_of[term.group(0)], sql)).alias(name)
        for name, sql in OUTPUT_EXPRESSIONS
    )


@cache
def batch_schema() -> pa.Schema:
    """The schema the batch query gives (what DuckDB returns for the same input)."""
    return compute_features_duckdb(INPUT_SCHEMA.empty_table(), date(1970, 1, 1)).schema


def prepare() -> None:
    """Compile the expressions and learn the batch schema now (the first request would pay
    for both otherwise: about 15 ms, most of it opening DuckDB once)."""
    _expressions()
    batch_schema()


class History(Protocol):
    """What the runner reads of a history: ``IndexedHistory`` (a snapshot) or
    ``RollingHistory`` (``rolling_history.py``, appended to as a stream goes)."""

    values: dict[str, np.ndarray]

    @property
    def seconds(self) -> np.ndarray: ...

    def rows_of(self, column: str, account: str) -> np.ndarray: ...

    def ids_of(self, rows: np.ndarray) -> list[str]: ...


def compute_features_online(
    rows: pa.Table, history: History, groups: Sequence[int] | np.ndarray | None = None
) -> pa.Table:
    """Feature rows (``transaction_features`` columns) for ``rows``, in their order.

    ``rows`` holds the validated columns the features read. Each row's windows see the
    ``history`` rows of its accounts and the rows of its own group (by default all ``rows`` are
    one group); a history row with the transaction id of a row in the group is that row
    replayed, and counted once. ``history`` must hold the day before the earliest row.
    """
    count = rows.num_rows
    if count == 0:
        raise ValueError("no transactions")
    group_of = np.zeros(count, np.int64) if groups is None else np.asarray(groups, np.int64)
    if group_of.shape != (count,):
        raise ValueError(f"{len(group_of)} group numbers for {count} rows")
    _require_values(rows, "transactions")
    seconds = _event_seconds(rows.column("timestamp"))
    ids = rows.column("transaction_id").to_pylist()
    ids_of_group: dict[int, set[str]] = {}
    for group, transaction_id in zip(group_of.tolist(), ids, strict=True):
        ids_of_group.setdefault(group, set()).add(transaction_id)
    values = {column: _floats(rows.column(column)) for column in history.values}
    window_values = _window_values(rows, seconds, group_of, ids_of_group, values, history)
    # one Arrow table in, one select out: a few rows cost the same fixed price as one
    columns = rows.append_column("event_seconds", pa.array(seconds, pa.int64()))
    for i, (aggregate, column) in enumerate(zip(WINDOW_AGGREGATES, window_values, strict=True)):
        kind = pa.int64() if aggregate.column is None else pa.float64()
        columns = columns.append_column(_WINDOW_COLUMN.format(i), pa.array(column, kind))
    frame = pl.from_arrow(columns)
    assert isinstance(frame, pl.DataFrame)
    return frame.select(_expressions()).to_arrow().cast(batch_schema())


def _window_values(
    rows: pa.Table,
    seconds: np.ndarray,
    group_of: np.ndarray,
    ids_of_group: dict[int, set[str]],
    values: dict[str, np.ndarray],
    history: History,
) -> list[list[float | int | None]]:
    """Each window aggregate's value for each row (None where SQL gives NULL: SUM or AVG of no
    rows)."""
    results: list[list[float | int | None]] = [[] for _ in WINDOW_AGGREGATES]
    for window in WINDOWS:
        accounts = rows.column(window.partition_by).to_pylist()
        positions = [i for i, a in enumerate(WINDOW_AGGREGATES) if a.window == window]
        rows_of_account: dict[tuple[int, str], list[int]] = {}
        for row, account in enumerate(accounts):
            rows_of_account.setdefault((int(group_of[row]), account), []).append(row)
        for row, account in enumerate(accounts):
            low, high = seconds[row] - window.lookback_seconds, seconds[row] - 1
            past = history.rows_of(window.partition_by, account)
            if len(past):
                past_seconds = history.seconds[past]
                past = past[(past_seconds >= low) & (past_seconds <= high)]
                if len(past):
                    group_ids = ids_of_group[int(group_of[row])]
                    past_ids = history.ids_of(past)
                    if not group_ids.isdisjoint(past_ids):  # the request replays history rows
                        past = past[[i not in group_ids for i in past_ids]]
            own = [
                other
                for other in rows_of_account[(int(group_of[row]), account)]
                if low <= seconds[other] <= high
            ]
            for position in positions:
                aggregate = WINDOW_AGGREGATES[position]
                number = len(past) + len(own)
                if aggregate.column is None:
                    results[position].append(number)
                    continue
                if number == 0:
                    results[position].append(None)
                    continue
                total = float(history.values[aggregate.column][past].sum()) + float(
                    values[aggregate.column][own].sum()
                )
                results[position].append(total if aggregate.function == "SUM" else total / number)
    return results


__all__ = [
    "INPUT_SCHEMA",
    "History",
    "IndexedHistory",
    "batch_schema",
    "compute_features_online",
    "prepare",
]
