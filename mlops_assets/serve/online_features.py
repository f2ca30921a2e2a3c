"""Features of single transactions online, computed exactly as batch computes them.

Pure (no web framework). A request row is checked against the one-row rules of the data
contract, then the feature definition runs over it with the in-process runner
(``features/online_engine.py``): the request rows see the history rows of their accounts from
the 24 hours before them, so every window feature equals the batch one. The history is a
snapshot of the latest validated days, indexed by account, held in memory and refreshable.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mlops_assets.features.definition import INPUT_COLUMNS
from mlops_assets.features.online_engine import (
    INPUT_SCHEMA,
    IndexedHistory,
    compute_features_online,
)
from mlops_assets.paysim import PAYSIM_COLUMNS
from mlops_assets.validate.one_row import (
    ContractViolation,
    check_transaction_id,
    check_value,
)

#: The fields of a request transaction (``transaction_id`` is optional).
REQUEST_FIELDS: tuple[str, ...] = (
    *(c for c in PAYSIM_COLUMNS if c not in ("isFraud", "isFlaggedFraud")),
    "timestamp",
)
_INTEGER_FIELDS = ("step",)
_NUMBER_FIELDS = ("amount", "oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest")
_TEXT_FIELDS = ("type", "nameOrig", "nameDest")


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
        check_value(name, value)
        row[name] = value
    transaction_id = payload.get("transaction_id")
    check_transaction_id(transaction_id)
    row["transaction_id"] = transaction_id
    return row


@dataclass(frozen=True)
class HistorySnapshot:
    """The validated rows of some days, indexed by account."""

    index: IndexedHistory
    days: tuple[date, ...]
    delta_version: int | None
    loaded_at: datetime

    @classmethod
    def build(
        cls, table: pa.Table, days: Sequence[date] = (), delta_version: int | None = None
    ) -> HistorySnapshot:
        table = table.select(INPUT_SCHEMA.names).cast(INPUT_SCHEMA)
        return cls(
            index=IndexedHistory.build(table),
            days=tuple(days),
            delta_version=delta_version,
            loaded_at=datetime.now(UTC),
        )

    @classmethod
    def empty(cls) -> HistorySnapshot:
        return cls.build(INPUT_SCHEMA.empty_table())

    @property
    def rows(self) -> int:
        return self.index.rows


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
    """Computes request features over the current history snapshot (swappable at any time)."""

    def __init__(self, history: HistorySnapshot | None = None) -> None:
        self._history = history or HistorySnapshot.empty()

    @property
    def history(self) -> HistorySnapshot:
        return self._history

    def replace_history(self, history: HistorySnapshot) -> None:
        self._history = history  # one reference swap: a computation in flight keeps the old

    def compute(self, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
        """Feature rows (``transaction_features`` columns) for parsed request rows, in order."""
        return self.compute_groups([rows]).to_pandas()

    def compute_groups(self, groups: Sequence[Sequence[dict[str, Any]]]) -> pa.Table:
        """Features of several independent requests at once (see ``features_for_groups``)."""
        return features_for_groups(groups, self._history)


def request_ids(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The request's transaction ids (generated where absent); ``ContractViolation`` when one
    repeats within the request."""
    ids = [row.get("transaction_id") or f"online:{uuid.uuid4().hex}" for row in rows]
    if len(set(ids)) != len(ids):
        raise ContractViolation("transaction_id", "unique within a request")
    return ids


def _request_table(rows: Sequence[dict[str, Any]], ids: list[str]) -> pa.Table:
    columns: dict[str, Any] = {
        name: [row[name] for row in rows] for name in INPUT_SCHEMA.names if name in rows[0]
    }
    columns["transaction_id"] = ids
    columns["isFraud"] = [0] * len(rows)  # unknown online; the features do not read it
    columns["txn_date"] = [row["timestamp"].date() for row in rows]
    return pa.table({name: columns[name] for name in INPUT_SCHEMA.names}, schema=INPUT_SCHEMA)


def features_for_groups(
    groups: Sequence[Sequence[dict[str, Any]]], history: HistorySnapshot
) -> pa.Table:
    """Features of independent requests (each a list of parsed rows): one table
    (``transaction_features`` columns), the requests' rows one after the other in order.

    Each request's rows see the history rows of their accounts from the 24 hours before them
    and the request's own rows, exactly as batch scoring sees a day; requests never see each
    other. A transaction a request replays is its request row, not also a history row.
    """
    if not groups or not all(groups):
        raise ValueError("no transactions")
    rows = [row for group in groups for row in group]
    ids = [i for group in groups for i in request_ids(group)]
    request_groups = np.repeat(np.arange(len(groups)), [len(group) for group in groups])
    return compute_features_online(_request_table(rows, ids), history.index, request_groups)


__all__ = [
    "ContractViolation",
    "HistorySnapshot",
    "OnlineFeatures",
    "features_for_groups",
    "load_history",
    "parse_transaction",
    "request_ids",
]
