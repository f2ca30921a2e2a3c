"""Features of single transactions online, computed exactly as batch computes them.

Pure (no web framework). A request row is checked against the one-row rules of the data
contract, then the project's own feature SQL (``feature_sql`` through
``compute_features_duckdb``) runs over the request rows and the history rows of their accounts
from the 24 hours before them, so every window feature equals the batch one. The history is a
snapshot of the latest validated days, held in memory and refreshable.
"""

from __future__ import annotations

import math
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from mlops_assets.features.definition import INPUT_COLUMNS, LOOKBACK_SECONDS
from mlops_assets.features.duckdb_engine import compute_features_duckdb
from mlops_assets.paysim import PAYSIM_COLUMNS
from mlops_assets.validate.contract import TransactionContract

#: The fields of a request transaction (``transaction_id`` is optional).
REQUEST_FIELDS: tuple[str, ...] = (
    *(c for c in PAYSIM_COLUMNS if c not in ("isFraud", "isFlaggedFraud")),
    "timestamp",
)
_INTEGER_FIELDS = ("step",)
_NUMBER_FIELDS = ("amount", "oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest")
_TEXT_FIELDS = ("type", "nameOrig", "nameDest")
MAX_TRANSACTION_ID_LENGTH = 256

#: The validated columns the features read, with the types the lake stores them in.
HISTORY_SCHEMA = pa.schema(
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
assert set(HISTORY_SCHEMA.names) == set(INPUT_COLUMNS), "feature inputs changed"


class ContractViolation(ValueError):
    """A request value that the data contract would reject: which field and which rule."""

    def __init__(self, field: str, rule: str, value: Any = None) -> None:
        self.field = field
        self.rule = rule
        self.value = value
        super().__init__(f"{field}: {rule}")

    def detail(self) -> dict[str, Any]:
        return {"field": self.field, "rule": self.rule, "message": str(self)}


@dataclass(frozen=True)
class _Rule:
    name: str  # the contract's check text, e.g. "greater_than(0)"
    test: Callable[[Any], bool]


def _rule_from_check(check: Any) -> _Rule:
    stats = check.statistics
    if check.name == "greater_than":
        return _Rule(check.error, lambda v, m=stats["min_value"]: v > m)
    if check.name == "greater_than_or_equal_to":
        return _Rule(check.error, lambda v, m=stats["min_value"]: v >= m)
    if check.name == "isin":
        allowed = frozenset(stats["allowed_values"])
        return _Rule(check.error, lambda v, a=allowed: v in a)
    if check.name == "str_matches":
        pattern = re.compile(stats["pattern"])
        return _Rule(check.error, lambda v, p=pattern: p.match(v) is not None)
    raise NotImplementedError(f"contract check {check.name} has no one-row form in the service")


def _contract_rules() -> dict[str, list[_Rule]]:
    """The contract's column checks for the request fields, read from the contract itself."""
    columns = TransactionContract.to_schema().columns
    return {f: [_rule_from_check(c) for c in columns[f].checks] for f in REQUEST_FIELDS}


RULES = _contract_rules()


def _parse_timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ContractViolation("timestamp", "not a valid ISO-8601 timestamp (a string)")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ContractViolation(
            "timestamp", "not a valid Datetime(time_unit='us', time_zone='UTC')"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)  # as the contract reads naive text: UTC
    return parsed.astimezone(UTC)


def parse_transaction(payload: Any, position: int | None = None) -> dict[str, Any]:
    """A request transaction, typed and checked against the one-row rules of the contract.

    Raises ``ContractViolation`` naming the first field that breaks a rule (with its position
    in a batch, as ``transactions[3].amount``).
    """
    try:
        return _parse_transaction(payload)
    except ContractViolation as violation:
        if position is None:
            raise
        raise ContractViolation(
            f"transactions[{position}].{violation.field}", violation.rule
        ) from None


def _parse_transaction(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, Mapping):
        raise ContractViolation("body", "a transaction must be a JSON object")
    row: dict[str, Any] = {}
    for name in REQUEST_FIELDS:
        if name not in payload or payload[name] is None:
            raise ContractViolation(name, "required, not null")
        value = payload[name]
        if name in _INTEGER_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ContractViolation(name, "not a valid Int64")
            if isinstance(value, float) and not value.is_integer():
                raise ContractViolation(name, "not a valid Int64")
            value = int(value)
            if not -(2**63) <= value < 2**63:
                raise ContractViolation(name, "not a valid Int64")
        elif name in _NUMBER_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ContractViolation(name, "not a valid Float64")
            value = float(value)
            if not math.isfinite(value):
                raise ContractViolation(name, "not a finite Float64")
        elif name in _TEXT_FIELDS:
            if not isinstance(value, str):
                raise ContractViolation(name, "not a valid String")
        elif name == "timestamp":
            value = _parse_timestamp(value)
        for rule in RULES[name]:
            if not rule.test(value):
                raise ContractViolation(name, rule.name)
        row[name] = value
    transaction_id = payload.get("transaction_id")
    if transaction_id is not None:
        if not isinstance(transaction_id, str) or not transaction_id:
            raise ContractViolation("transaction_id", "a non-empty string")
        if len(transaction_id) > MAX_TRANSACTION_ID_LENGTH:
            raise ContractViolation(
                "transaction_id", f"at most {MAX_TRANSACTION_ID_LENGTH} characters"
            )
    row["transaction_id"] = transaction_id
    return row


@dataclass(frozen=True)
class HistorySnapshot:
    """The validated rows of some days, indexed by account."""

    table: pa.Table  # HISTORY_SCHEMA
    days: tuple[date, ...]
    delta_version: int | None
    loaded_at: datetime
    by_orig: dict[str, np.ndarray]
    by_dest: dict[str, np.ndarray]
    seconds: np.ndarray  # event seconds of every row

    @classmethod
    def build(
        cls, table: pa.Table, days: Sequence[date] = (), delta_version: int | None = None
    ) -> HistorySnapshot:
        table = table.select(HISTORY_SCHEMA.names).cast(HISTORY_SCHEMA).combine_chunks()
        frame = pl.from_arrow(table.select(["nameOrig", "nameDest"])).with_row_index("_i")
        assert isinstance(frame, pl.DataFrame)

        def index(column: str) -> dict[str, np.ndarray]:
            grouped = frame.group_by(column).agg(pl.col("_i"))
            return {
                key: np.asarray(rows, dtype=np.int64)
                for key, rows in zip(
                    grouped.get_column(column).to_list(),
                    grouped.get_column("_i").to_list(),
                    strict=True,
                )
            }

        micros = table.column("timestamp").cast(pa.int64()).to_numpy(zero_copy_only=False)
        return cls(
            table=table,
            days=tuple(days),
            delta_version=delta_version,
            loaded_at=datetime.now(UTC),
            by_orig=index("nameOrig"),
            by_dest=index("nameDest"),
            seconds=micros // 1_000_000,
        )

    @classmethod
    def empty(cls) -> HistorySnapshot:
        return cls.build(HISTORY_SCHEMA.empty_table())

    @property
    def rows(self) -> int:
        return self.table.num_rows


def load_history(lake: Any, days: int = 2) -> HistorySnapshot:
    """The validated transactions of the latest ``days`` days from the lake (only the columns
    the features read), at the table's current Delta version."""
    from mlops_assets.tables import VALIDATED_TRANSACTIONS

    version = lake.version(VALIDATED_TRANSACTIONS)
    if version is None:
        return HistorySnapshot.empty()
    latest = lake.days(VALIDATED_TRANSACTIONS)[-days:]
    table = lake.read(
        VALIDATED_TRANSACTIONS, days=latest, columns=list(INPUT_COLUMNS), version=version
    )
    return HistorySnapshot.build(table, latest, version)


class OnlineFeatures:
    """Computes request features over the current history snapshot (swappable at any time).

    Each calling thread gets its own DuckDB connection, kept open (opening one per request
    would cost more than the query).
    """

    def __init__(self, history: HistorySnapshot | None = None) -> None:
        self._history = history or HistorySnapshot.empty()
        self._local = threading.local()
        self._connections: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()

    @property
    def history(self) -> HistorySnapshot:
        return self._history

    def replace_history(self, history: HistorySnapshot) -> None:
        self._history = history  # one reference swap: a computation in flight keeps the old

    def compute(self, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
        """Feature rows (``transaction_features`` columns) for parsed request rows, in order."""
        return self.compute_groups([rows]).to_pandas()

    def compute_groups(self, groups: Sequence[Sequence[dict[str, Any]]]) -> pa.Table:
        """Features of several independent requests in one query (see ``features_for_groups``)."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = duckdb.connect(config={"threads": 1})
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return features_for_groups(groups, self._history, connection)

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()


def request_ids(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The request's transaction ids (generated where absent); ``ContractViolation`` when one
    repeats within the request."""
    ids = [row.get("transaction_id") or f"online:{uuid.uuid4().hex}" for row in rows]
    if len(set(ids)) != len(ids):
        raise ContractViolation("transaction_id", "unique within a request")
    return ids


def _request_table(rows: Sequence[dict[str, Any]], ids: list[str]) -> pa.Table:
    columns: dict[str, Any] = {
        name: [row[name] for row in rows] for name in HISTORY_SCHEMA.names if name in rows[0]
    }
    columns["transaction_id"] = ids
    columns["isFraud"] = [0] * len(rows)  # unknown online; the features do not read it
    columns["txn_date"] = [row["timestamp"].date() for row in rows]
    return pa.table({name: columns[name] for name in HISTORY_SCHEMA.names}, schema=HISTORY_SCHEMA)


def _history_indices(rows: Sequence[dict[str, Any]], history: HistorySnapshot) -> np.ndarray:
    """Positions of the history rows of the request's accounts within [first t - 24h, last t)."""
    times = [int(row["timestamp"].timestamp()) for row in rows]
    low, high = min(times) - LOOKBACK_SECONDS, max(times)
    candidates = [history.by_orig.get(row["nameOrig"]) for row in rows] + [
        history.by_dest.get(row["nameDest"]) for row in rows
    ]
    found = [c for c in candidates if c is not None]
    if not found:
        return np.empty(0, np.int64)
    indices = np.unique(np.concatenate(found))
    seconds = history.seconds[indices]
    return indices[(seconds >= low) & (seconds < high)]


_ISOLATED = ("transaction_id", "nameOrig", "nameDest")


def _isolate(table: pa.Table, groups: np.ndarray) -> pa.Table:
    """Prefix ids and account names with their request's number (``"3|C123"``), so that the
    windows (partitioned by account) of one request never see another request's rows."""
    prefixes = pa.array(groups).cast(pa.string())
    for name in _ISOLATED:
        index = table.column_names.index(name)
        joined = pc.binary_join_element_wise(prefixes, table.column(name), "|")
        table = table.set_column(index, name, joined)
    return table


def features_for_groups(
    groups: Sequence[Sequence[dict[str, Any]]],
    history: HistorySnapshot,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> pa.Table:
    """Features of independent requests (each a list of parsed rows), in one run of the batch
    feature SQL: one table (``transaction_features`` columns), the requests' rows one after
    the other in order.

    Each request's rows see the history rows of their accounts from the 24 hours before them
    and the request's own rows, exactly as batch scoring sees a day; requests never see each
    other (their ids and account names are prefixed apart, then restored). A transaction a
    request replays is its request row, not also a history row.
    """
    if not groups or not all(groups):
        raise ValueError("no transactions")
    rows = [row for group in groups for row in group]
    ids = [i for group in groups for i in request_ids(group)]
    request_groups = np.repeat(np.arange(len(groups)), [len(group) for group in groups])
    past_indices = [_history_indices(group, history) for group in groups]
    past_groups = np.repeat(np.arange(len(groups)), [len(i) for i in past_indices])
    request = _isolate(_request_table(rows, ids), request_groups)
    past = _isolate(
        history.table.take(pa.array(np.concatenate(past_indices), pa.int64())), past_groups
    )
    wanted = request.column("transaction_id")
    past = past.filter(pc.invert(pc.is_in(past.column("transaction_id"), wanted)))
    days = [row["timestamp"].date() for row in rows]
    features = compute_features_duckdb(
        pa.concat_tables([past, request]), min(days), max(days), threads=1, connection=connection
    )
    features = features.filter(pc.is_in(features.column("transaction_id"), wanted))
    if features.num_rows != len(rows):
        raise RuntimeError(f"feature query returned {features.num_rows} of {len(rows)} rows")
    position = {key: i for i, key in enumerate(wanted.to_pylist())}
    order = np.argsort([position[key] for key in features.column("transaction_id").to_pylist()])
    table = features.take(pa.array(order, pa.int64()))
    restored = {
        "transaction_id": ids,
        "nameOrig": [row["nameOrig"] for row in rows],
        "nameDest": [row["nameDest"] for row in rows],
    }
    for name, values in restored.items():
        table = table.set_column(table.column_names.index(name), name, pa.array(values))
    return table


__all__ = [
    "ContractViolation",
    "HistorySnapshot",
    "OnlineFeatures",
    "features_for_groups",
    "load_history",
    "parse_transaction",
    "request_ids",
]
